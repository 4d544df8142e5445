"""三率 from the system of record: read the facts out of PostgreSQL, count them with
`dispatcher.core.rates` (pure). Response is measured against the plan's dispatch + accept limits,
a task's acceptance against the plan's accept timeout (both from the plans in force now)."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from dispatcher.core.clock import Step
from dispatcher.core.plan import PlanBook
from dispatcher.core.rates import FeedbackFact, GroupBy, IncidentFact, RateRow, TaskFact, compute_rates


async def rate_facts(
    conn: asyncpg.Connection | asyncpg.Pool, plans: PlanBook, since: datetime, until: datetime
) -> tuple[list[IncidentFact], list[TaskFact], list[FeedbackFact]]:
    rows = await conn.fetch(
        """SELECT incident_id, grid_id, community_id, category, severity, created_at, first_accepted_at,
                  closed_at, due_at, status
             FROM incidents WHERE created_at >= $1 AND created_at < $2""",
        since,
        until,
    )
    incidents, accept_limit = [], {}
    for r in rows:
        plan = plans.plan_for(r["category"], r["severity"])
        accept_limit[r["incident_id"]] = timedelta(seconds=plan.accept_timeout_s)
        incidents.append(
            IncidentFact(
                incident_id=r["incident_id"],
                grid_id=r["grid_id"],
                community_id=r["community_id"],
                filed_at=r["created_at"],
                first_accepted_at=r["first_accepted_at"],
                response_limit=timedelta(seconds=plan.limit_s(Step.DISPATCH) + plan.limit_s(Step.ACCEPT)),
                closed_at=r["closed_at"],
                due_at=r["due_at"] or r["created_at"],
                cancelled=r["status"] == "cancelled",
                merged=r["status"] == "merged",
            )
        )
    ids = list(accept_limit)
    tasks = [
        TaskFact(
            t["task_id"],
            t["incident_id"],
            t["responder_id"],
            t["org"],
            t["offered_at"],
            t["accepted_at"],
            t["responder_kind"],
            accept_limit[t["incident_id"]],
        )
        for t in await conn.fetch(
            "SELECT * FROM tasks WHERE incident_id = ANY($1::text[]) AND kind = 'response'", ids
        )
    ]
    feedback = [
        FeedbackFact(f["incident_id"], f["grid_id"], f["community_id"], f["at"], f["satisfied"])
        for f in await conn.fetch(
            """SELECT f.incident_id, i.grid_id, i.community_id, f.at, f.satisfied
                 FROM feedback f JOIN incidents i USING (incident_id)
                WHERE f.incident_id = ANY($1::text[])""",
            ids,
        )
    ]
    return incidents, tasks, feedback


async def rates(
    conn: asyncpg.Connection | asyncpg.Pool,
    plans: PlanBook,
    by: GroupBy,
    since: datetime,
    until: datetime,
    now: datetime,
) -> list[RateRow]:
    incidents, tasks, feedback = await rate_facts(conn, plans, since, until)
    return compute_rates(incidents, tasks, feedback, by=by, now=now)
