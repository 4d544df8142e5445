"""Live state survives a Redis that comes back empty: rebuilt from PostgreSQL (real servers)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
import redis.asyncio as aioredis

from contracts import topics
from devtools.city import generate_city
from devtools.seed import seed_postgres, seed_redis
from dispatcher.adapters.livekeeper import LiveKeeper, sync_statuses
from dispatcher.core.plan import load_plans
from dispatcher.service import IncidentService
from infra.livestate import LiveState
from tests.dispatcher.test_service import enriched


@pytest.fixture
async def r(redis: aioredis.Redis) -> AsyncIterator[aioredis.Redis]:
    await redis.flushdb()
    yield redis
    await redis.flushdb()


@pytest.fixture
async def keeper(pg: asyncpg.Pool, r: aioredis.Redis) -> LiveKeeper:
    city = generate_city()
    await seed_postgres(pg, city)
    await seed_redis(r, city)
    return LiveKeeper(pg, r, snapshot_s=0.1)


async def _active_task(pg: asyncpg.Pool, responder_id: str) -> str:
    """An accepted task for `responder_id` on a fresh incident (`pg` as the services make it);
    returns the task id."""
    tag = uuid.uuid4().hex[:8]
    rec = enriched(f"K-{tag}")
    await IncidentService(pg, load_plans()).file(rec)
    now = datetime.now(UTC)
    await pg.execute(
        """INSERT INTO tasks (task_id, incident_id, responder_id, responder_name, responder_kind, kind,
               state, version, org, offered_at, updated_at)
           VALUES ($1, $2, $3, '测试', 'police', 'response', 'accepted', 2, '派出所', $4, $4)""",
        f"T-{tag}",
        rec.incident_id,
        responder_id,
        now,
    )
    return f"T-{tag}"


async def test_a_lost_redis_is_rebuilt_with_last_positions_and_busy_statuses(
    keeper: LiveKeeper, pg: asyncpg.Pool, r: aioredis.Redis
) -> None:
    live = LiveState(r)
    moved_at = int(time.time() * 1000)
    assert await live.apply_position("P-0007", 106.5432, 29.6321, moved_at, 8.0) == 1
    assert await keeper.copy_positions() >= 1
    assert await keeper.copy_positions() == 0  # unchanged since: nothing written
    row = await pg.fetchrow("SELECT * FROM responder_positions WHERE responder_id = 'P-0007'")
    assert row is not None and (row["lon"], row["lat"], row["at_ms"]) == (106.5432, 29.6321, moved_at)
    await live.set_status("P-0008", "busy")  # not backed by a task: must come back available

    await r.flushdb()  # what a Redis restart does here (it keeps nothing on disk)
    assert not await live.populated()
    stopping = asyncio.Event()
    task = asyncio.create_task(keeper.run(stopping))
    try:
        for _ in range(100):
            if await live.populated():
                break
            await asyncio.sleep(0.05)
    finally:
        stopping.set()
        await task
    assert await live.populated()
    p7 = await live.responder("P-0007")
    assert (float(p7["lon"]), float(p7["lat"]), int(p7["at_ms"])) == (106.5432, 29.6321, moved_at)
    assert p7["status"] == "available" and p7["kind"] == "police"
    assert (await live.responder("P-0008"))["status"] == "available"
    near = await live.nearest("police", 106.5432, 29.6321, 50, 1)
    assert [n.responder_id for n in near] == ["P-0007"]
    assert await live.camera("50010800001320000001") is not None
    # The rebuild's own fixes came from PostgreSQL: none is a move to copy back.
    assert not await r.exists(topics.LIVE_MOVED_KEY)
    assert await keeper.copy_positions() == 0

    # A fix newer than the copy wins over it in a later rebuild.
    await live.apply_position("P-0007", 106.55, 29.64, moved_at + 1000, None)
    await keeper.rebuild()
    assert float((await live.responder("P-0007"))["lon"]) == 106.55


async def test_a_check_copies_only_who_moved_and_resumes_a_copy_cut_short(
    keeper: LiveKeeper, pg: asyncpg.Pool, r: aioredis.Redis
) -> None:
    live = LiveState(r)
    assert await keeper.copy_positions() == len(generate_city().responders)  # the seed's fixes
    at = int(time.time() * 1000)
    for i, rid in enumerate(("V-00001", "V-00002")):
        assert await live.apply_position(rid, 106.52 + i / 1000, 29.62, at, 5.0) == 1
    assert await r.smembers(topics.LIVE_MOVED_KEY) == {b"V-00001", b"V-00002"}
    done = await keeper.check()
    assert (done.copied, done.repaired) == (2, 0)
    stored = await pg.fetch(
        "SELECT responder_id, at_ms FROM responder_positions WHERE responder_id IN ('V-00001', 'V-00002')"
    )
    assert {(s["responder_id"], s["at_ms"]) for s in stored} == {("V-00001", at), ("V-00002", at)}
    assert (await keeper.check()).copied == 0

    # A copy cut short (the set was taken aside, never marked copied) is taken up again, and a
    # fix applied meanwhile waits for the next check.
    await live.apply_position("V-00003", 106.53, 29.63, at, None)
    assert await live.take_moved()
    await live.apply_position("V-00004", 106.54, 29.63, at, None)
    assert await keeper.copy_positions() == 1  # V-00003
    assert await keeper.copy_positions() == 1  # V-00004
    assert await keeper.copy_positions() == 0


async def test_statuses_follow_the_active_tasks_without_reading_the_roster(
    keeper: LiveKeeper, pool: asyncpg.Pool, r: aioredis.Redis
) -> None:
    live = LiveState(r)
    await live.set_status("P-0011", "busy")  # no task: a crash left it busy
    task = await _active_task(pool, "P-0012")  # a task whose busy status was lost
    try:
        assert "P-0011" in await live.busy()
        assert (await keeper.check()).repaired >= 2  # (other tests' tasks may repair more)
        busy = await live.busy()
        assert "P-0012" in busy and "P-0011" not in busy
        assert (await live.responder("P-0011"))["status"] == "available"
        assert (await live.responder("P-0012"))["status"] == "busy"
        assert (await keeper.check()).repaired == 0
    finally:
        await pool.execute("UPDATE tasks SET state = 'done' WHERE task_id = $1", task)


async def test_a_starting_dispatcher_checks_every_status_a_page_at_a_time(
    keeper: LiveKeeper, pg: asyncpg.Pool, pool: asyncpg.Pool, r: aioredis.Redis
) -> None:
    live = LiveState(r)
    # Live state written before the busy set existed: statuses in the hashes only.
    await r.hset(topics.responder_key("G-0003"), "status", "busy")  # no task
    await r.hset(topics.responder_key("G-0004"), "status", "busy")  # and a task
    task = await _active_task(pool, "G-0004")
    try:
        assert await sync_statuses(pg, live, chunk=7) >= 1
        assert (await live.responder("G-0003"))["status"] == "available"
        assert (await live.responder("G-0004"))["status"] == "busy"
        assert "G-0004" in await live.busy()  # filed, so the periodic check sees it
        assert await sync_statuses(pg, live, chunk=7) == 0
    finally:
        await pg.execute("UPDATE tasks SET state = 'done' WHERE task_id = $1", task)
