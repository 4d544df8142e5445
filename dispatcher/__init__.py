"""The dispatcher: the one writer of every incident, its tasks, clocks and timers.

`core` is the domain, pure (no I/O; the import contracts hold it to that): the incident and task
lifecycles, the case that joins them (`case.decide`), response plans, recommendation, clocks,
merging and the 三率. `adapters` carry it out against the world: PostgreSQL (`store`,
`casestore`, `report`), the transactional outbox (`outbox`), Redis live state (`live`,
`livekeeper`). `service` is the service layer that loads a case, decides and saves; `main` is
the process's composition root (Kafka in, events out). `plans.yaml` is data operators edit.
"""
