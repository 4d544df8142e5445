"""The live keeper's two sets, kept by the same scripts that change positions and statuses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from contracts import topics
from infra.livestate import LiveState

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


async def test_a_fix_dated_ahead_counts_as_now_and_a_stored_future_time_does_not_pin(
    live: LiveState, redis: aioredis.Redis
) -> None:
    """A fix dated a year ahead used to freeze its responder: every real fix after it was
    'older' and ignored, so they were recommended from a stale place."""
    await live.apply_rosters([("V-9", ROSTER)])
    now_ms = int(time.time() * 1000)
    year = 365 * 86400 * 1000
    assert await live.apply_position("V-9", 106.50, 29.60, now_ms + year, None) == 1
    stored = int((await redis.hget(topics.responder_key("V-9"), "at_ms")).decode())
    assert stored <= int(time.time() * 1000)  # taken as of now, not a year ahead
    await asyncio.sleep(0.01)
    assert await live.apply_position("V-9", 106.51, 29.61, int(time.time() * 1000), None) == 1  # a real move
    # a far-future time already stored (written before this rule) is no reason to ignore a fix
    await redis.hset(topics.responder_key("V-9"), "at_ms", str(now_ms + year))
    assert await live.apply_positions([("V-9", 106.52, 29.62, int(time.time() * 1000), None)]) == [1]
    assert (await live.responder("V-9"))["lon"] == "106.52"
    # ordinary order still holds: an older fix changes nothing
    assert await live.apply_position("V-9", 106.60, 29.70, now_ms - 60_000, None) == 0


async def test_every_script_names_its_keys_in_one_cluster_slot(
    live: LiveState, redis: aioredis.Redis
) -> None:
    """Redis Cluster runs a script on the node of its KEYS' slot: every key each script is given,
    and every live-state key a script finds inside (a GEOSEARCH's responders, a grid left behind),
    must hash to one slot. Each script call is recorded, then its keys checked."""
    calls: list[tuple[str, list[str]]] = []
    for name in ("_position", "_roster", "_status", "_take_moved", "_nearest", "_candidates"):
        script = getattr(live, name)

        def recording(script: object = script, name: str = name, **kw: object) -> object:
            calls.append((name, [str(k) for k in kw.get("keys") or []]))
            return script(**kw)  # type: ignore[operator]

        setattr(live, name, recording)
    await live.apply_roster("G-1", {**ROSTER, "kind": "grid_worker", "grid_id": "G001"})
    await live.apply_roster("G-1", {**ROSTER, "kind": "grid_worker", "grid_id": "G002"})  # leaves G001
    await live.apply_position("G-1", 106.51, 29.61, int(time.time() * 1000), None)
    await live.set_status("G-1", "busy")
    await live.set_status("G-1", "available")
    await live.take_moved()
    assert await live.nearest("grid_worker", 106.51, 29.61, 3000, 5)
    found = await live.candidates(["grid_worker"], 106.51, 29.61, 3000, 5, "G002", ["name"])
    assert [n.responder_id for n, _ in found.nearest["grid_worker"]] == ["G-1"]
    assert [w for w, _ in found.grid_workers] == ["G-1"]
    assert await live.grid_workers("G001") == [] and await live.grid_workers("G002") == ["G-1"]
    assert {name for name, _ in calls} == {
        "_position",
        "_roster",
        "_status",
        "_take_moved",
        "_nearest",
        "_candidates",
    }
    slots = {key_slot(k.encode()) for _, keys in calls for k in keys}
    found_inside = [topics.responder_key("G-1"), topics.grid_workers_key("G001")]
    assert slots | {key_slot(k.encode()) for k in found_inside} == {key_slot(topics.LIVE_SLOT.encode())}
    # and nothing else lives in Redis outside the slot but the cameras (read by key, no script)
    for key in await redis.keys("*"):
        assert key_slot(key) == key_slot(topics.LIVE_SLOT.encode()) or key.startswith(b"camera:"), key
