"""Keeps Redis live state recoverable: Redis here keeps nothing across a restart.

PostgreSQL is the system of record for the roster, the cameras and who is busy (active tasks);
only positions live in Redis alone, so they are copied to PostgreSQL every few seconds. An
epoch key marks a populated live state: when it is missing (Redis came back empty), the keeper
rebuilds roster, cameras, last positions and busy statuses from PostgreSQL. Fixes that arrive
meanwhile win over the copy (newer `at_ms`), so the rebuild never moves anyone backwards.
Busy statuses are also brought back in line with the tasks every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

import asyncpg
from redis.asyncio import Redis

from infra.faults import TRANSIENT
from streams.livestate import LiveState

log = logging.getLogger(__name__)
CHECK_S = 1.0
_FIELDS = ("lon", "lat", "at_ms", "accuracy_m")


class StatusSync(Protocol):
    async def sync_live_statuses(self) -> int: ...


class LiveKeeper:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, statuses: StatusSync, snapshot_s: float) -> None:
        self._pool = pool
        self._redis = redis
        self._live = LiveState(redis)
        self._statuses = statuses
        self._snapshot_s = snapshot_s
        self._copied: dict[str, int] = {}  # responder id -> at_ms last copied to PostgreSQL

    async def run(self, stopping: asyncio.Event) -> None:
        last_copy = 0.0
        while not stopping.is_set():
            try:
                if not await self._live.populated():
                    await self.rebuild()
                elif time.monotonic() - last_copy >= self._snapshot_s:
                    await self.copy_positions()
                    # Busy/available follow the tasks in PostgreSQL: a status change lost with
                    # Redis (or between a commit and its live-state update) is repaired here.
                    repaired = await self._statuses.sync_live_statuses()
                    if repaired:
                        log.warning("live statuses repaired from the tasks: %d responders", repaired)
                    last_copy = time.monotonic()
            except TRANSIENT as exc:
                log.warning("live keeper: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), CHECK_S)

    async def rebuild(self) -> dict[str, int]:
        """Live state from PostgreSQL: roster, last positions, cameras, then busy statuses."""
        started = time.perf_counter()
        responders = await self._pool.fetch(
            "SELECT responder_id, name, kind, org, skills, on_duty, grid_id FROM responders"
        )
        positions = await self._pool.fetch("SELECT * FROM responder_positions")
        cameras = await self._pool.fetch("SELECT camera_id, name, lon, lat FROM cameras")
        todo = iter(responders)
        fixes = iter(positions)
        cams = iter(cameras)

        async def worker() -> None:  # workers share the iterators: each item is taken once
            for r in todo:
                await self._live.apply_roster(r["responder_id"], dict(r))
            for p in fixes:
                await self._live.apply_position(
                    p["responder_id"], p["lon"], p["lat"], p["at_ms"], p["accuracy_m"]
                )
            for c in cams:
                await self._live.put_camera(c["camera_id"], c["name"], c["lon"], c["lat"])

        await asyncio.gather(*(worker() for _ in range(8)))
        busy = await self._statuses.sync_live_statuses()
        await self._live.mark_populated()
        counts = {
            "responders": len(responders),
            "positions": len(positions),
            "cameras": len(cameras),
            "busy": busy,
        }
        log.warning(
            "live state was empty (Redis restarted?): rebuilt from PostgreSQL in %.2fs: %s",
            time.perf_counter() - started,
            counts,
        )
        return counts

    async def copy_positions(self) -> int:
        """Copy positions that changed since the last copy; returns how many."""
        ids = [r["responder_id"] for r in await self._pool.fetch("SELECT responder_id FROM responders")]
        rows = []
        for rid, (lon, lat, at_ms, acc) in zip(ids, await self._live.responders(ids, _FIELDS), strict=True):
            if lon is None or lat is None or at_ms is None:
                continue
            at = int(float(at_ms))
            if self._copied.get(rid) == at:
                continue
            rows.append((rid, float(lon), float(lat), at, float(acc) if acc not in (None, "") else None))
        if rows:
            await self._pool.executemany(
                """INSERT INTO responder_positions (responder_id, lon, lat, at_ms, accuracy_m)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (responder_id) DO UPDATE
                      SET lon = excluded.lon, lat = excluded.lat, at_ms = excluded.at_ms,
                          accuracy_m = excluded.accuracy_m
                    WHERE responder_positions.at_ms < excluded.at_ms""",
                rows,
            )
            self._copied.update((r[0], r[3]) for r in rows)
        return len(rows)


__all__ = ["LiveKeeper"]
