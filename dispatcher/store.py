"""PostgreSQL persistence for incidents (asyncpg). The system of record.

Writes are idempotent: an input event id is recorded in `processed_events` in the same
transaction as its effects, so a replay finds it and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from dispatcher.lifecycle import OPEN_STATES, STATE_LABELS, Event, Incident, IncidentState
from infra.faults import DATABASE_UNAVAILABLE
from streams import topics
from streams.records import EnrichedIncident

log = logging.getLogger(__name__)


def _loads(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 30.0


async def init_connection(conn: asyncpg.Connection) -> None:
    """jsonb columns travel as Python objects."""
    await conn.set_type_codec(
        "jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
    )


async def create_pool(dsn: str, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        # A server that is restarting must fail a connection or a query fast (it is retried),
        # never hold a consumer for asyncpg's default 60 s connect wait or forever on a query.
        timeout=CONNECT_TIMEOUT_S,
        command_timeout=COMMAND_TIMEOUT_S,
    )
    assert pool is not None
    return pool


def incident_view(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """The incident as consoles and the read API show it (personal data still present:
    the console layer masks it)."""
    record = _loads(row["record"])
    state = IncidentState(row["status"])
    return {
        "incident_id": row["incident_id"],
        "status": state.value,
        "status_label": STATE_LABELS[state],
        "version": row["version"],
        "source": row["source"],
        "category": row["category"],
        "category_label": record.get("category_label", row["category"]),
        "severity": row["severity"],
        "title": row["title"],
        "description": row["description"],
        "occurred_at": row["occurred_at"].isoformat(),
        "due_at": row["due_at"].isoformat() if row["due_at"] else None,
        "location": record.get("location", {}),
        "out_of_area": row["out_of_area"],
        "recommended": {
            "nearest": record.get("nearest", {}),
            "own_grid_worker": record.get("own_grid_worker"),
            "enriched_at": record.get("enriched_at"),
        },
        "camera": {
            "confidence": record.get("camera_confidence"),
            "snapshot_url": record.get("snapshot_url"),
            "stream_url": record.get("stream_url"),
        }
        if row["source"] == "camera"
        else None,
        "caller_phone": record.get("caller_phone"),
        "caller_name": record.get("caller_name"),
        "reporter_id": record.get("reporter_id"),
        "photo_urls": record.get("photo_urls", []),
        "tracking_no": record.get("tracking_no"),
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "intake_ns": record.get("intake_ns"),
        "round": row.get("round", 0) if isinstance(row, dict) else row["round"],
        "merged_into": row.get("merged_into") if isinstance(row, dict) else row["merged_into"],
    }


def event_view(event: Event | asyncpg.Record) -> dict[str, Any]:
    if isinstance(event, Event):
        return {
            "event_id": event.event_id,
            "incident_id": event.incident_id,
            "version": event.version,
            "type": event.type,
            "actor": event.actor,
            "at": event.at.isoformat(),
            "state": event.state.value,
            "public": event.public,
            "reason": event.reason,
        }
    data = dict(_loads(event["data"]))
    state, reason = data.pop("state", None), data.pop("reason", None)
    return {
        "event_id": event["event_id"],
        "incident_id": event["incident_id"],
        "version": event["version"],
        "type": event["type"],
        "actor": event["actor"],
        "at": event["at"].isoformat(),
        "state": state,
        "public": event["public"],
        "reason": reason,
        "data": data,
    }


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


def tracking_no_of(topic: str, key: bytes | None) -> str | None:
    """The report a record on a report or incident topic carries, from its key: the tracking
    number on `reports.raw`, the incident id (`INC-` + tracking number) after it."""
    if key is None:
        return None
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return None
    if topic == topics.REPORTS_RAW:
        return text
    if topic in (topics.INCIDENTS_LOCATED, topics.INCIDENTS_ENRICHED) and text.startswith("INC-"):
        return text[4:]
    return None


async def refuse_report(
    conn: asyncpg.Connection | asyncpg.Pool, tracking_no: str, stage: str, reason: str
) -> bool:
    """A stage refused this report for good (it was dead-lettered): it is stuck, not late, and
    the reconciler stops re-publishing it. False if there is no such report, or it was filed."""
    status = await conn.execute(
        """UPDATE reports SET refused_at = now(), refused_stage = $2, refused_reason = left($3, 500)
            WHERE tracking_no = $1 AND incident_id IS NULL""",
        tracking_no,
        stage,
        reason,
    )
    return str(status) != "UPDATE 0"


async def refuse_report_of(
    pool: asyncpg.Pool | None, topic: str, key: bytes | None, stage: str, reason: str
) -> str | None:
    """`refuse_report` for the report a refused record carries (by its topic and key), if any.
    Returns what the dead letter says is stuck, or None. A database that is away leaves the
    mark undone (logged): the report is re-published later, refused again and marked then."""
    tracking_no = tracking_no_of(topic, key)
    if tracking_no is None or pool is None:
        return None
    try:
        marked = await refuse_report(pool, tracking_no, stage, reason)
    except DATABASE_UNAVAILABLE as exc:
        log.warning("could not mark report %s refused: %r", tracking_no, exc)
        return None
    return f"report {tracking_no}: refused for good, not re-published" if marked else None


def as_utc_iso(value: datetime) -> str:
    return value.isoformat()
