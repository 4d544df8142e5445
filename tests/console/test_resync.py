"""A console's board catches up from PostgreSQL when incident events are lost (real server)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from console.board import Board
from console.resync import resync_once
from dispatcher.plan import load_plans
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
