"""The incidents as their readers query them: one incident, the open ones, a page of them, an
incident's timeline, tasks, running clocks and linked reports, a report by tracking number.

Read-only: the dispatcher's adapters write these tables; the console, the read API and the
dispatcher's own event messages read them here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import asyncpg

from contracts.states import OPEN_STATES
from dispatcher.core.clock import STEP_LABELS
from dispatcher.readmodel.views import incident_view, task_view


async def events_of(
    conn: asyncpg.Connection | asyncpg.Pool, incident_id: str, after: int = 0, command_id: str | None = None
) -> list[asyncpg.Record]:
    """The incident's timeline, or the part after version `after` (on its (incident_id, version)
    index), or only the events of one command (event ids `<command_id>#n`)."""
    if command_id is None:
        return list(
            await conn.fetch(
                "SELECT * FROM incident_events WHERE incident_id = $1 AND version > $2 ORDER BY version",
                incident_id,
                after,
            )
        )
    return list(
        await conn.fetch(
            """SELECT * FROM incident_events
                WHERE incident_id = $1 AND version > $2 AND starts_with(event_id, $3)
                ORDER BY version""",
            incident_id,
            after,
            f"{command_id}#",
        )
    )


async def incident_row(conn: asyncpg.Connection | asyncpg.Pool, incident_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM incidents WHERE incident_id = $1", incident_id)


async def open_incident_rows(
    conn: asyncpg.Connection | asyncpg.Pool, limit: int = 5000
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """SELECT * FROM incidents WHERE status = ANY($1::text[])
               ORDER BY severity, occurred_at LIMIT $2""",
            [s.value for s in OPEN_STATES],
            limit,
        )
    )


async def incident_rows(
    conn: asyncpg.Connection | asyncpg.Pool, statuses: Sequence[str] | None, limit: int, offset: int
) -> list[asyncpg.Record]:
    if statuses is None:
        return list(
            await conn.fetch(
                "SELECT * FROM incidents ORDER BY occurred_at DESC LIMIT $1 OFFSET $2", limit, offset
            )
        )
    return list(
        await conn.fetch(
            """SELECT * FROM incidents WHERE status = ANY($1::text[])
               ORDER BY severity, occurred_at LIMIT $2 OFFSET $3""",
            list(statuses),
            limit,
            offset,
        )
    )


async def linked_reports(conn: asyncpg.Connection | asyncpg.Pool, incident_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """SELECT r.tracking_no, r.source, r.source_id, r.received_at, r.payload
                 FROM incident_reports ir JOIN reports r USING (tracking_no)
                WHERE ir.incident_id = $1 ORDER BY r.received_at""",
            incident_id,
        )
    )


async def report_by_tracking_no(
    conn: asyncpg.Connection | asyncpg.Pool, tracking_no: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT tracking_no, source, received_at, incident_id, payload, refused_at, refused_stage,
                  refused_reason
             FROM reports WHERE tracking_no = $1""",
        tracking_no,
    )


async def task_rows(conn: asyncpg.Connection | asyncpg.Pool, incident_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT * FROM tasks WHERE incident_id = $1 ORDER BY offered_at, task_id", incident_id
        )
    )


async def running_clocks(conn: asyncpg.Connection | asyncpg.Pool, incident_id: str) -> list[dict[str, Any]]:
    """The incident's running step clocks, for countdowns on screens."""
    rows = await conn.fetch(
        """SELECT clock_id, step, task_id, started_at, limit_s, warning_ratio FROM clocks
            WHERE incident_id = $1 AND stopped_at IS NULL ORDER BY started_at""",
        incident_id,
    )
    out = []
    for r in rows:
        limit = timedelta(seconds=r["limit_s"])
        out.append(
            {
                "clock_id": r["clock_id"],
                "step": r["step"],
                "step_label": STEP_LABELS.get(r["step"], r["step"]),
                "task_id": r["task_id"],
                "started_at": r["started_at"].isoformat(),
                "warn_at": (r["started_at"] + limit * r["warning_ratio"]).isoformat(),
                "due_at": (r["started_at"] + limit).isoformat(),
            }
        )
    return out


async def full_view(conn: asyncpg.Connection | asyncpg.Pool, row: asyncpg.Record) -> dict[str, Any]:
    """The incident as consoles show it: with its tasks and running clocks."""
    view = incident_view(row)
    view["tasks"] = [task_view(t) for t in await task_rows(conn, row["incident_id"])]
    view["clocks"] = await running_clocks(conn, row["incident_id"])
    return view


async def rated_since_closed(
    conn: asyncpg.Connection | asyncpg.Pool, incident_id: str, tracking_no: str
) -> bool:
    """Whether this report's resident rated the incident since it was last closed."""
    given = await conn.fetchval(
        """SELECT 1 FROM feedback WHERE incident_id = $1 AND tracking_no = $2
             AND at >= (SELECT max(at) FROM incident_events
                         WHERE incident_id = $1 AND type = 'incident.close')""",
        incident_id,
        tracking_no,
    )
    return bool(given)


async def incident_rows_held_by(
    conn: asyncpg.Connection | asyncpg.Pool,
    responder_id: str,
    statuses: Sequence[str] | None,
    held: Iterable[str],
    limit: int,
    offset: int,
) -> list[asyncpg.Record]:
    """The incidents (of `statuses`, None: any) where the responder holds a task in a `held` state,
    most severe and oldest first."""
    return list(
        await conn.fetch(
            """SELECT i.* FROM incidents i
                WHERE ($2::text[] IS NULL OR i.status = ANY($2::text[]))
                  AND EXISTS (SELECT 1 FROM tasks t WHERE t.incident_id = i.incident_id
                                 AND t.responder_id = $1 AND t.state = ANY($3::text[]))
                ORDER BY i.severity, i.occurred_at LIMIT $4 OFFSET $5""",
            responder_id,
            statuses,
            list(held),
            limit,
            offset,
        )
    )


async def held_tasks(
    conn: asyncpg.Connection | asyncpg.Pool, responder_id: str, incident_id: str, held: Iterable[str]
) -> list[dict[str, Any]]:
    """The responder's own tasks on this incident in a `held` state (not declined, expired or
    withdrawn), as views."""
    states = set(held)
    views = (task_view(r) for r in await task_rows(conn, incident_id))
    return [t for t in views if t["responder_id"] == responder_id and t["state"] in states]
