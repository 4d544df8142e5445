"""The live keeper's two sets, kept by the same scripts that change positions and statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from streams import topics
from streams.livestate import LiveState

ROSTER = {"name": "测试", "kind": "volunteer", "org": "队", "skills": ["patrol"], "on_duty": True}


@pytest.fixture
async def live(redis: aioredis.Redis) -> AsyncIterator[LiveState]:
    await redis.flushdb()
    yield LiveState(redis)
    await redis.flushdb()


async def test_applied_fixes_are_marked_moved_until_copied(live: LiveState, redis: aioredis.Redis) -> None:
    assert not await live.take_moved()  # nobody moved
    await live.apply_rosters([("V-1", ROSTER), ("V-2", ROSTER)])
    assert (await live.responder("V-2"))["kind"] == "volunteer"
    assert await live.apply_positions(
        [("V-1", 106.51, 29.61, 1000, None), ("V-2", 106.52, 29.62, 1000, 3.0)]
    ) == [
        1,
        1,
    ]
    assert await live.apply_position("V-1", 106.5, 29.6, 999, None) == 0  # older: not a move
    assert await live.take_moved()
    await live.apply_position("V-2", 106.53, 29.63, 2000, None)  # after the set was taken aside
    taken = [rid for ids in [ids async for ids in live.moved_to_copy(chunk=1)] for rid in ids]
    assert sorted(taken) == ["V-1", "V-2"]
    assert await live.take_moved()  # not marked copied yet: the same set again
    await live.copied_moved()
    assert await live.take_moved()  # V-2's later fix
    assert [ids async for ids in live.moved_to_copy(chunk=10)] == [["V-2"]]
    await live.copied_moved()
    assert not await live.take_moved()
    assert not await redis.exists(topics.LIVE_MOVED_KEY, topics.LIVE_COPYING_KEY)
    # Fixes restored from PostgreSQL (a rebuild) are not moves to copy back.
    assert await live.apply_positions([("V-1", 106.54, 29.64, 3000, None)], moved=False) == [1]
    assert not await live.take_moved()


async def test_the_busy_set_follows_set_status(live: LiveState) -> None:
    await live.apply_rosters([("P-1", {**ROSTER, "kind": "police"})])
    assert await live.set_status("P-1", "busy")
    assert await live.busy() == {"P-1"}
    assert await live.set_status("P-1", "available")
    assert await live.busy() == set()
    assert not await live.set_status("P-unknown", "busy")  # no roster entry: nothing filed
    assert await live.busy() == set()
