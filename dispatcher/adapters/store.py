"""PostgreSQL persistence for incidents (asyncpg). The system of record.

Writes are idempotent: an input event id is recorded in `processed_events` in the same
transaction as its effects, so a replay finds it and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from contracts.incidents import EnrichedIncident
from contracts.states import IncidentState
from dispatcher.core.lifecycle import Event, Incident

log = logging.getLogger(__name__)


def _loads(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


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


