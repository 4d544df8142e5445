"""PostgreSQL persistence for incidents (asyncpg). The system of record.

Writes are idempotent: an input event id is recorded in `processed_events` in the same
transaction as its effects, so a replay finds it and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from contracts.incidents import EnrichedIncident
from contracts.states import CLOSED_INCIDENTS_SQL, IncidentState
from dispatcher.core.lifecycle import Event, Incident
from dispatcher.core.merge import Sighting

log = logging.getLogger(__name__)


async def current(conn: asyncpg.Connection, incident_id: str) -> Incident | None:
    row = await conn.fetchrow(
        "SELECT incident_id, status, version, updated_at FROM incidents WHERE incident_id = $1 FOR UPDATE",
        incident_id,
    )
    if row is None:
        return None
    return Incident(row["incident_id"], IncidentState(row["status"]), row["version"], row["updated_at"])


async def mark_processed(conn: asyncpg.Connection, event_id: str, incident_id: str) -> bool:
    """True the first time an input event id is seen (inside the caller's transaction)."""
    done = await conn.fetchval(
        """INSERT INTO processed_events (event_id, incident_id) VALUES ($1, $2)
           ON CONFLICT (event_id) DO NOTHING RETURNING true""",
        event_id,
        incident_id,
    )
    return bool(done)


async def insert_incident(conn: asyncpg.Connection, rec: EnrichedIncident, state: Incident) -> None:
    record = rec.model_dump(mode="json")
    await conn.execute(
        """INSERT INTO incidents (incident_id, status, source, category, severity, title, description,
                address, lon, lat, grid_id, community_id, out_of_area, occurred_at, due_at,
                recommended, record, version, created_at, updated_at)
           VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$19)""",
        rec.incident_id,
        state.state.value,
        rec.source,
        rec.category,
        rec.severity,
        rec.title,
        rec.description,
        rec.location.address,
        rec.location.lon,
        rec.location.lat,
        rec.location.grid_id,
        rec.location.community_id,
        rec.location.out_of_area,
        rec.occurred_at,
        rec.due_at,
        {"nearest": record["nearest"], "own_grid_worker": record["own_grid_worker"]},
        record,
        state.version,
        state.updated_at,
    )
    await conn.execute(
        """INSERT INTO incident_reports (incident_id, tracking_no)
           SELECT $1, tracking_no FROM reports WHERE tracking_no = $2
           ON CONFLICT DO NOTHING""",
        rec.incident_id,
        rec.tracking_no,
    )
    await conn.execute(
        """UPDATE reports SET incident_id = $1, filed_at = now(),
                  refused_at = NULL, refused_stage = NULL, refused_reason = NULL
            WHERE tracking_no = $2 AND incident_id IS NULL""",
        rec.incident_id,
        rec.tracking_no,
    )


async def append_events(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    await conn.executemany(
        """INSERT INTO incident_events (event_id, incident_id, version, type, actor, at, public, data)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        [
            (
                e.event_id,
                e.incident_id,
                e.version,
                e.type,
                e.actor,
                e.at,
                e.public,
                {"state": e.state.value, "reason": e.reason, **e.data},
            )
            for e in events
        ],
    )


# --- what filing and merging read and lock ------------------------------------------------------
async def lock_place(conn: asyncpg.Connection, lock_class: int, cells: Sequence[int]) -> None:
    """Take the transaction-scoped advisory locks of `cells` (of `lock_class`), in ascending order
    (never a wait cycle), in one statement."""
    await conn.execute(
        """SELECT count(pg_advisory_xact_lock($1, c))
             FROM (SELECT c FROM unnest($2::int[]) AS c ORDER BY c) AS ordered""",
        lock_class,
        list(cells),
    )


async def open_sightings_near(
    conn: asyncpg.Connection,
    box: tuple[float, float, float, float],
    besides: str,
    since: datetime,
    until: datetime,
) -> list[Sighting]:
    """The open incidents inside `box` (x0, y0, x1, y1) that occurred between `since` and `until`,
    other than `besides` (on incidents_open_place_idx)."""
    x0, y0, x1, y1 = box
    rows = await conn.fetch(
        f"""SELECT incident_id, source, category, lon, lat, occurred_at, status FROM incidents
             WHERE point(lon, lat) <@ box(point($1, $2), point($3, $4)) AND incident_id <> $5
               AND occurred_at BETWEEN $6 AND $7 AND status NOT IN {CLOSED_INCIDENTS_SQL}""",
        x0,
        y0,
        x1,
        y1,
        besides,
        since,
        until,
    )
    fields = ("incident_id", "source", "category", "lon", "lat", "occurred_at", "status")
    return [Sighting(*(r[k] for k in fields)) for r in rows]


async def place_of(conn: asyncpg.Connection, incident_id: str) -> tuple[float, float]:
    row = await conn.fetchrow("SELECT lon, lat FROM incidents WHERE incident_id = $1", incident_id)
    assert row is not None, incident_id
    return row["lon"], row["lat"]


async def merged_into(conn: asyncpg.Connection, incident_id: object) -> str | None:
    """Where `incident_id` was merged, if anywhere (None too for no such incident)."""
    query = "SELECT merged_into FROM incidents WHERE incident_id = $1"
    into: str | None = await conn.fetchval(query, incident_id)
    return into


async def detach_reports(conn: asyncpg.Connection, incident_id: str, split_off: object) -> None:
    """A split: the split-off incident's own reports leave `incident_id`."""
    await conn.execute(
        """DELETE FROM incident_reports WHERE incident_id = $1
              AND tracking_no IN (SELECT tracking_no FROM reports WHERE incident_id = $2)""",
        incident_id,
        split_off,
    )


async def adopt_reports(conn: asyncpg.Connection, incident_id: str, merged: object) -> None:
    """An absorbed merge: every report of the merged incident belongs to `incident_id` too."""
    await conn.execute(
        """INSERT INTO incident_reports (incident_id, tracking_no)
           SELECT $1, tracking_no FROM incident_reports WHERE incident_id = $2
           ON CONFLICT DO NOTHING""",
        incident_id,
        merged,
    )
