"""A console's board catches up from PostgreSQL when incident events are lost (real server)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from console.board import Board
from console.resync import resync_once
from dispatcher.core.plan import load_plans
from dispatcher.service import IncidentService
from tests.dispatcher.test_service import enriched


async def test_an_incident_whose_events_were_lost_reaches_the_board(pool: asyncpg.Pool) -> None:
    pg = pool
    service = IncidentService(pg, load_plans(None))
    rec = enriched(f"RS{uuid.uuid4().hex[:10]}")
    await service.file(rec)  # filed, but its events never reach this console (lost by the broker)
    board = Board()
    fed: list[dict[str, Any]] = []

    def publish(message: dict[str, Any]) -> None:
        fed.append(message)
        board.apply(message)

    assert await resync_once(pg, board.version_of, publish) >= 1
    mine = [m for m in fed if m["incident_id"] == rec.incident_id]
    assert len(mine) == 1 and mine[0]["type"] == "incident.synced"
    assert board.incident(rec.incident_id) is not None  # open, on the board, masked like any view
    version = board.version_of(rec.incident_id)
    assert version == await pg.fetchval(
        "SELECT version FROM incidents WHERE incident_id = $1", rec.incident_id
    )
    fed.clear()
    await resync_once(pg, board.version_of, publish)
    assert [m for m in fed if m["incident_id"] == rec.incident_id] == []  # up to date: nothing


async def test_a_change_still_on_its_way_is_left_to_the_fast_path(pool: asyncpg.Pool) -> None:
    """Syncing a change before its events arrive would make the board drop them (same version),
    so a change younger than `settle_s` is not fed; once older, a lost one still is."""
    service = IncidentService(pool, load_plans(None))
    rec = enriched(f"RS{uuid.uuid4().hex[:10]}")
    await service.file(rec)
    board = Board()
    fed: list[dict[str, Any]] = []

    def publish(message: dict[str, Any]) -> None:
        fed.append(message)
        board.apply(message)

    await resync_once(pool, board.version_of, publish, settle_s=60)
    assert [m for m in fed if m["incident_id"] == rec.incident_id] == []
    await pool.execute(
        "UPDATE incidents SET updated_at = updated_at - interval '61 seconds' WHERE incident_id = $1",
        rec.incident_id,
    )
    await resync_once(pool, board.version_of, publish, settle_s=60)
    assert [m["type"] for m in fed if m["incident_id"] == rec.incident_id] == ["incident.synced"]
