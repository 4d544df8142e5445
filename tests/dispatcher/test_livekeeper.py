"""Live state survives a Redis that comes back empty: rebuilt from PostgreSQL (real servers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from dispatcher.livekeeper import LiveKeeper
from dispatcher.plan import load_plans
from dispatcher.service import IncidentService
from infra.city import generate_city
from infra.seed import seed_postgres, seed_redis
from streams.livestate import LiveState


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
    service = IncidentService(pg, load_plans(None), LiveState(r))
    return LiveKeeper(pg, r, service, snapshot_s=0.1)


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

    # A fix newer than the copy wins over it in a later rebuild.
    await live.apply_position("P-0007", 106.55, 29.64, moved_at + 1000, None)
    await keeper.rebuild()
    assert float((await live.responder("P-0007"))["lon"]) == 106.55
