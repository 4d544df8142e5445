"""Anti-entropy for a console server's board: PostgreSQL is the truth, Kafka the fast path.

Incident events can be lost on the way (a broker that comes back empty, a dispatcher killed
between commit and publish). Every few seconds the server compares the versions of recently
changed incidents with its board and feeds any newer one in as an `incident.synced` event,
so every connected page catches up within seconds without reloading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from contracts import events
from dispatcher.readmodel import incidents
from infra.faults import DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)
LOOK_BACK_S = 120.0  # a change lost within this window is caught (the check runs far more often)


def synced_message(view: dict[str, Any]) -> dict[str, Any]:
    return events.incident_synced(view, datetime.now(UTC))


async def resync_once(
    pool: asyncpg.Pool,
    version_of: Callable[[str], int],
    publish: Callable[[dict[str, Any]], object],
    look_back_s: float = LOOK_BACK_S,
    settle_s: float = 0.0,
) -> int:
    """Feed every incident changed in the last `look_back_s`, and not in the last `settle_s`,
    whose version is newer than the board's; returns how many were behind.

    `settle_s` leaves a fresh change to the fast path: a change just committed is usually still
    on its way through Kafka, and syncing it first made the board drop the real events when
    they came (same version: old news), so pages saw `incident.synced` where an escalation or
    an offer should have shown."""
    rows = await pool.fetch(
        """SELECT incident_id, version FROM incidents
            WHERE updated_at > now() - make_interval(secs => $1)
              AND updated_at <= now() - make_interval(secs => $2)""",
        look_back_s,
        settle_s,
    )
    behind = [r["incident_id"] for r in rows if int(r["version"]) > version_of(r["incident_id"])]
    for incident_id in behind:
        row = await pool.fetchrow("SELECT * FROM incidents WHERE incident_id = $1", incident_id)
        if row is not None:
            publish(synced_message(await incidents.full_view(pool, row)))
    return len(behind)


async def resync_board(
    pool: asyncpg.Pool,
    version_of: Callable[[str], int],
    publish: Callable[[dict[str, Any]], object],
    every_s: float,
    stopping: asyncio.Event,
) -> None:
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), every_s)
        if stopping.is_set():
            return
        try:
            n = await resync_once(pool, version_of, publish, max(LOOK_BACK_S, 3 * every_s), every_s)
            if n:
                log.warning("board was behind on %d incidents (events lost?): caught up", n)
        except DATABASE_UNAVAILABLE as exc:
            log.warning("board resync: %r", exc)


__all__ = ["resync_board", "resync_once", "synced_message"]
