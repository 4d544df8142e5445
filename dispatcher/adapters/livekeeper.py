"""Keeps Redis live state recoverable: Redis here keeps nothing across a restart.

PostgreSQL is the system of record for the roster, the cameras and who is busy (active tasks);
only positions live in Redis alone, so they are copied to PostgreSQL every few seconds. An
epoch key marks a populated live state: when it is missing (Redis came back empty), the keeper
rebuilds roster, cameras, last positions and busy statuses from PostgreSQL. Fixes that arrive
meanwhile win over the copy (newer `at_ms`), so the rebuild never moves anyone backwards.
Busy statuses are also brought back in line with the tasks every few seconds.

The periodic work follows what changed, not the roster: live state keeps the set of responders
that moved since the last copy and the set of busy responders (streams/livestate.py), so a
check reads the moved ones' positions and compares the busy set with the active tasks. At
100,000 responders, reading every one of them twice every ten seconds kept the dispatcher ~90 %
busy (BENCHMARKS.md, memory). Whole-roster work (a rebuild, the check of every status when a
dispatcher starts) goes a page of `CHUNK` responders at a time: one PostgreSQL query, one Redis
pipeline, so memory stays a page whatever the roster's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Final

import asyncpg
from redis.asyncio import Redis

from contracts.states import ACTIVE_TASKS_SQL
from infra.faults import TRANSIENT
from infra.livestate import LiveState

log = logging.getLogger(__name__)
CHECK_S = 1.0
CHUNK: Final = 2_000  # responders per page (one query, one Redis pipeline)
_POSITION_FIELDS = ("lon", "lat", "at_ms", "accuracy_m")

# Both predicates are the partial unique index's (tasks_one_active_per_responder): it is used.
_ACTIVE = f"SELECT DISTINCT responder_id FROM tasks WHERE state IN {ACTIVE_TASKS_SQL}"
_ACTIVE_AMONG = f"""SELECT responder_id FROM tasks WHERE responder_id = ANY($1::text[])
                     AND state IN {ACTIVE_TASKS_SQL}"""
_ROSTER_PAGE = """SELECT responder_id FROM responders WHERE responder_id > $1
                   ORDER BY responder_id LIMIT $2"""
# The key bound is repeated in the join: without it, each page's merge join walks the positions
# from the first (at 100,000 responders, 2.7 million rows read over a rebuild).
_REBUILD_PAGE = """SELECT r.responder_id, r.name, r.kind, r.org, r.skills, r.on_duty, r.grid_id,
                          p.lon, p.lat, p.at_ms, p.accuracy_m
                     FROM responders r LEFT JOIN responder_positions p
                       ON p.responder_id = r.responder_id AND p.responder_id > $1
                    WHERE r.responder_id > $1 ORDER BY r.responder_id LIMIT $2"""
_UPSERT_POSITIONS = """
INSERT INTO responder_positions (responder_id, lon, lat, at_ms, accuracy_m)
SELECT * FROM unnest($1::text[], $2::float8[], $3::float8[], $4::int8[], $5::float8[])
ON CONFLICT (responder_id) DO UPDATE
   SET lon = excluded.lon, lat = excluded.lat, at_ms = excluded.at_ms, accuracy_m = excluded.accuracy_m
 WHERE responder_positions.at_ms < excluded.at_ms"""


@dataclass(frozen=True, slots=True)
class Check:
    """What one periodic check did."""

    copied: int  # positions written to PostgreSQL
    repaired: int  # live statuses brought in line with the tasks


def _float(value: str | None) -> float | None:
    return None if value is None or value == "" else float(value)


async def _set_busy_where_available(live: LiveState, ids: list[str]) -> int:
    """Mark busy those of `ids` whose live status says available (unknown ones are left)."""
    changed = 0
    for rid, (status,) in zip(ids, await live.responders(ids, ("status",)), strict=True):
        if status == "available":
            changed += int(await live.set_status(rid, "busy"))
    return changed


async def sync_statuses(pool: asyncpg.Pool, live: LiveState, chunk: int = CHUNK) -> int:
    """Every responder's live status in line with the tasks, a page at a time (a dispatcher
    starting: whatever happened before it); busy responders missing from the busy set (live
    state written before the set existed) are filed in it. Returns the statuses changed.

    A page's statuses are read before its active tasks: the dispatcher marks a responder busy
    after committing the task, so a task committed in between is seen, never undone here."""
    filed = await live.busy()
    after, changed = "", 0
    while True:
        ids = [r["responder_id"] for r in await pool.fetch(_ROSTER_PAGE, after, chunk)]
        if not ids:
            return changed
        statuses = await live.responders(ids, ("status",))
        active = {r["responder_id"] for r in await pool.fetch(_ACTIVE_AMONG, ids)}
        for rid, (status,) in zip(ids, statuses, strict=True):
            want = "busy" if rid in active else "available"
            if status in ("busy", "available") and status != want:
                await live.set_status(rid, want)
                changed += 1
            elif status == "busy" and rid not in filed:
                await live.set_status(rid, "busy")
        after = ids[-1]


class LiveKeeper:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, snapshot_s: float, chunk: int = CHUNK) -> None:
        self._pool = pool
        self._live = LiveState(redis)
        self._snapshot_s = snapshot_s
        self._chunk = chunk

    async def run(self, stopping: asyncio.Event) -> None:
        last_check = 0.0
        while not stopping.is_set():
            try:
                if not await self._live.populated():
                    await self.rebuild()
                elif time.monotonic() - last_check >= self._snapshot_s:
                    done = await self.check()
                    if done.repaired:
                        log.warning("live statuses repaired from the tasks: %d responders", done.repaired)
                    last_check = time.monotonic()
            except TRANSIENT as exc:
                log.warning("live keeper: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), CHECK_S)

    async def check(self) -> Check:
        """The periodic work: copy the positions that moved, repair statuses."""
        return Check(await self.copy_positions(), await self.repair_statuses())

    async def copy_positions(self) -> int:
        """Positions that moved since the last copy, to PostgreSQL (where newer); returns how
        many were sent. The moved set is dropped only once all of it is written: a copy cut
        short (PostgreSQL away) is taken up again by the next check."""
        if not await self._live.take_moved():
            return 0
        written = 0
        async for ids in self._live.moved_to_copy(self._chunk):
            rows = await self._live.responders(ids, _POSITION_FIELDS)
            fixes = [
                (rid, float(lon), float(lat), int(float(at_ms)), _float(accuracy))
                for rid, (lon, lat, at_ms, accuracy) in zip(ids, rows, strict=True)
                if lon is not None and lat is not None and at_ms is not None
            ]
            if fixes:
                await self._pool.execute(_UPSERT_POSITIONS, *(list(c) for c in zip(*fixes, strict=True)))
                written += len(fixes)
        await self._live.copied_moved()
        return written

    async def repair_statuses(self) -> int:
        """Busy/available follow the active tasks in PostgreSQL (a status change lost with
        Redis, or between a commit and its live-state update): the busy set against the active
        tasks, both a few hundred at most. The busy set is read first (see `sync_statuses`)."""
        busy = await self._live.busy()
        active = {r["responder_id"] for r in await self._pool.fetch(_ACTIVE)}
        repaired = 0
        for rid in sorted(busy - active):
            repaired += int(await self._live.set_status(rid, "available"))
        return repaired + await _set_busy_where_available(self._live, sorted(active - busy))

    async def rebuild(self) -> dict[str, int]:
        """Live state from PostgreSQL: roster and last positions a page at a time (one pipeline
        each), cameras, then busy statuses for the responders with an active task."""
        started = time.perf_counter()
        after, responders, positions = "", 0, 0
        while True:
            page = await self._pool.fetch(_REBUILD_PAGE, after, self._chunk)
            if not page:
                break
            after = page[-1]["responder_id"]
            await self._live.apply_rosters([(r["responder_id"], dict(r)) for r in page])
            fixes = [
                (r["responder_id"], r["lon"], r["lat"], r["at_ms"], r["accuracy_m"])
                for r in page
                if r["at_ms"] is not None
            ]
            await self._live.apply_positions(fixes, moved=False)  # PostgreSQL has them
            responders += len(page)
            positions += len(fixes)
        cameras = await self._pool.fetch("SELECT camera_id, name, lon, lat FROM cameras")
        for c in cameras:
            await self._live.put_camera(c["camera_id"], c["name"], c["lon"], c["lat"])
        busy = await self.repair_statuses()
        await self._live.mark_populated()
        counts = {"responders": responders, "positions": positions, "cameras": len(cameras), "busy": busy}
        log.warning(
            "live state was empty (Redis restarted?): rebuilt from PostgreSQL in %.2fs: %s",
            time.perf_counter() - started,
            counts,
        )
        return counts


__all__ = ["CHUNK", "Check", "LiveKeeper", "sync_statuses"]
