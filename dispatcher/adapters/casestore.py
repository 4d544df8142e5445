"""PostgreSQL persistence of cases: load one under a row lock, save a decision's outcome.

The incident row is locked (FOR UPDATE) for the whole decision, so even two dispatchers that
briefly share a partition during a rebalance apply one command at a time per incident. The
unique index on active tasks makes "one active task per responder" hold across incidents.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from contracts.incidents import EnrichedIncident
from contracts.states import ACTIVE_TASKS_SQL, IncidentState, TaskKind, TaskState
from dispatcher.adapters.store import append_events
from dispatcher.core.case import (
    CancelTimers,
    Case,
    Effect,
    Escalate,
    OfferTask,
    Outcome,
    RecordFeedback,
    SaveTask,
    ScheduleTimers,
    StartClock,
    StopClock,
    TaskInfo,
)
from dispatcher.core.clock import Clock
from dispatcher.core.lifecycle import Incident
from dispatcher.core.task import Task


def new_case(rec: EnrichedIncident, incident: Incident) -> Case:
    """The case of an incident just inserted (`store.insert_incident`), as `load_case` would
    read it back: no tasks, no clocks, round 0. Filing builds it instead of reading three
    tables it has just written (the dispatcher's hot path, BENCHMARKS.md)."""
    return Case(
        incident=incident,
        version=incident.version,
        category=rec.category,
        severity=rec.severity,
        source=rec.source,
        grid_id=rec.location.grid_id,
    )


async def load_case(conn: asyncpg.Connection, incident_id: str) -> Case | None:
    row = await conn.fetchrow("SELECT * FROM incidents WHERE incident_id = $1 FOR UPDATE", incident_id)
    if row is None:
        return None
    tasks = await conn.fetch(
        "SELECT * FROM tasks WHERE incident_id = $1 ORDER BY offered_at, task_id", incident_id
    )
    clocks = await conn.fetch(
        "SELECT * FROM clocks WHERE incident_id = $1 AND stopped_at IS NULL ORDER BY started_at", incident_id
    )
    return Case(
        incident=Incident(
            row["incident_id"], IncidentState(row["status"]), row["version"], row["updated_at"]
        ),
        version=row["version"],
        category=row["category"],
        severity=row["severity"],
        source=row["source"],
        grid_id=row["grid_id"],
        round=row["round"],
        tasks=tuple(
            TaskInfo(
                Task(
                    t["task_id"],
                    t["incident_id"],
                    t["responder_id"],
                    TaskKind(t["kind"]),
                    TaskState(t["state"]),
                    t["version"],
                    t["updated_at"],
                ),
                t["responder_kind"],
                t["org"],
                t["round"],
            )
            for t in tasks
        ),
        clocks=tuple(
            Clock(
                c["clock_id"],
                c["incident_id"],
                c["step"],
                c["task_id"],
                c["started_at"],
                timedelta(seconds=c["limit_s"]),
                c["warning_ratio"],
            )
            for c in clocks
        ),
        merged_into=row["merged_into"],
    )


_MILESTONES = {
    "incident.dispatch": "dispatched_at",
    "incident.accepted": "first_accepted_at",
    "incident.resolve": "resolved_at",
    "incident.close": "closed_at",
}


async def save_outcome(conn: asyncpg.Connection, outcome: Outcome) -> list[Effect]:
    """Write the decision; returns the effects to carry out after commit (Redis, Kafka)."""
    case = outcome.case
    if not outcome.events:
        return await save_effects(conn, case, outcome.effects, case.incident.updated_at, None)
    last = outcome.events[-1].at
    sets = ["status = $2", "version = $3", "round = $4", "merged_into = $5", "updated_at = $6"]
    args: list[Any] = [
        case.incident.incident_id,
        case.incident.state.value,
        case.version,
        case.round,
        case.merged_into,
        last,
    ]
    for event in outcome.events:
        if event.type == "incident.reopen" and "closed_at = NULL" not in sets:
            sets.append("closed_at = NULL")  # a reopened case is no longer closed
        column = _MILESTONES.get(event.type)
        if column is not None:
            # first time only, except closing, which a reopened incident does again
            expr = f"{column} = $6" if column == "closed_at" else f"{column} = COALESCE({column}, $6)"
            if expr not in sets:
                sets.append(expr)
    await conn.execute(f"UPDATE incidents SET {', '.join(sets)} WHERE incident_id = $1", *args)
    await append_events(conn, outcome.events)
    return await save_effects(conn, case, outcome.effects, last, outcome.events[-1].event_id)


async def save_effects(
    conn: asyncpg.Connection, case: Case, effects: Sequence[Effect], last: datetime, last_event_id: str | None
) -> list[Effect]:
    """The effects that live in PostgreSQL; returns the rest (Redis, Kafka) for after commit."""
    later: list[Effect] = []
    for effect in effects:
        if isinstance(effect, OfferTask):
            t, p = effect.info.task, effect.pick
            await conn.execute(
                """INSERT INTO tasks (task_id, incident_id, responder_id, responder_name,
                       responder_kind, kind,
                       state, version, org, round, reasons, distance_m, eta_s, offered_at, updated_at)
                   VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$14)""",
                t.task_id,
                t.incident_id,
                t.responder_id,
                p.name,
                p.kind,
                t.kind.value,
                t.state.value,
                t.version,
                p.org,
                effect.info.round,
                list(p.reasons),
                p.distance_m,
                p.eta_s,
                t.updated_at,
            )
        elif isinstance(effect, SaveTask):
            t = effect.info.task
            await conn.execute(
                """UPDATE tasks SET state = $2, version = $3, updated_at = $4,
                       note = COALESCE($5, note),
                       photo_urls = CASE WHEN cardinality($6::text[]) > 0 THEN $6 ELSE photo_urls END,
                       accepted_at = CASE WHEN $2 = 'accepted' THEN $4 ELSE accepted_at END,
                       finished_at = CASE WHEN $2 IN ('done', 'declined', 'expired', 'cancelled')
                                          THEN $4 ELSE finished_at END
                   WHERE task_id = $1""",
                t.task_id,
                t.state.value,
                t.version,
                t.updated_at,
                effect.note,
                list(effect.photo_urls),
            )
        elif isinstance(effect, ScheduleTimers):
            await conn.executemany(
                """INSERT INTO timers (timer_id, incident_id, clock_id, task_id, kind, fire_at)
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (timer_id) DO NOTHING""",
                [
                    (tm.timer_id, tm.incident_id, tm.clock_id, tm.task_id, tm.kind.value, tm.fire_at)
                    for tm in effect.timers
                ],
            )
        elif isinstance(effect, CancelTimers):
            await conn.execute(
                """UPDATE timers SET cancelled_at = now()
                    WHERE clock_id = ANY($1::text[]) AND fired_at IS NULL AND cancelled_at IS NULL""",
                list(effect.clock_ids),
            )
        elif isinstance(effect, StartClock):
            c = effect.clock
            await conn.execute(
                """INSERT INTO clocks (clock_id, incident_id, task_id, step, started_at, limit_s,
                       warning_ratio)
                   VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (clock_id) DO NOTHING""",
                c.clock_id,
                c.incident_id,
                c.task_id,
                c.step,
                c.started_at,
                c.limit.total_seconds(),
                c.warning_ratio,
            )
        elif isinstance(effect, StopClock):
            await conn.execute(
                "UPDATE clocks SET stopped_at = $2 WHERE clock_id = $1 AND stopped_at IS NULL",
                effect.clock_id,
                last,
            )
        elif isinstance(effect, Escalate):
            e = effect.escalation
            await conn.execute(
                """INSERT INTO escalations (escalation_id, incident_id, clock_id, level, message, at)
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (escalation_id) DO NOTHING""",
                e.escalation_id,
                e.incident_id,
                e.clock_id,
                e.level.value,
                e.message,
                last,
            )
        elif isinstance(effect, RecordFeedback):
            await conn.execute(
                """INSERT INTO feedback (feedback_id, incident_id, tracking_no, satisfied, fixed, rating,
                       comment, at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (feedback_id) DO NOTHING""",
                last_event_id,
                case.incident.incident_id,
                effect.tracking_no,
                effect.satisfied,
                effect.fixed,
                effect.rating,
                effect.comment,
                last,
            )
        else:
            later.append(effect)
    return later




async def active_tasks_of(conn: asyncpg.Connection, responder_ids: Sequence[str]) -> dict[str, set[str]]:
    """For each of these responders with an active task in the system of record, the incidents of
    those tasks (live state may lag a crash); one query, on the active tasks' partial index."""
    rows = await conn.fetch(
        f"""SELECT responder_id, incident_id FROM tasks WHERE responder_id = ANY($1::text[])
             AND state IN {ACTIVE_TASKS_SQL}""",
        list(responder_ids),
    )
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r["responder_id"], set()).add(r["incident_id"])
    return out
