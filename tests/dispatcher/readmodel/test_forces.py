"""The dispatcher's view of who is near, read from live state in the real Redis in one call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from dispatcher.readmodel.forces import available_near, candidates_near, own_grid_workers
from infra.livestate import LiveState

HERE = (106.53, 29.63)


@pytest.fixture
async def live(redis: aioredis.Redis) -> AsyncIterator[LiveState]:
    await redis.flushdb()
    state = LiveState(redis)
    roster = [
        ("P-1", "police", "民警甲", None, ["first_aid"]),
        ("V-1", "volunteer", "志愿者甲", None, []),
        ("G-1", "grid_worker", "网格员甲", "GRID-A", ["mediation", "patrol"]),
        ("G-2", "grid_worker", "网格员乙", "GRID-A", []),
        ("G-9", "grid_worker", "网格员丙", "GRID-B", []),
    ]
    await state.apply_rosters(
        [
            (
                rid,
                {"kind": kind, "name": name, "org": "队", "grid_id": grid, "skills": skills, "on_duty": True},
            )
            for rid, kind, name, grid, skills in roster
        ]
    )
    offsets = {"P-1": 0.001, "V-1": 0.003, "G-1": 0.002, "G-2": 0.004, "G-9": 0.0005}
    await state.apply_positions([(rid, HERE[0] + d, HERE[1], 1000, None) for rid, d in offsets.items()])
    yield state
    await redis.flushdb()


async def test_one_call_finds_the_nearest_of_each_kind_and_the_grids_own_workers(live: LiveState) -> None:
    await live.set_status("G-2", "busy")
    near, own = await candidates_near(live, *HERE, "GRID-A", 2000, 5)
    # by kind, nearest first within each
    assert [(c.kind, c.responder_id) for c in near] == [
        ("police", "P-1"),
        ("grid_worker", "G-9"),
        ("grid_worker", "G-1"),
        ("volunteer", "V-1"),
    ]
    by_id = {c.responder_id: c for c in near}
    assert by_id["G-1"].own_grid and not by_id["G-9"].own_grid  # G-9 works another grid
    assert by_id["G-1"].skills == frozenset({"mediation", "patrol"}) and by_id["V-1"].skills == frozenset()
    assert by_id["P-1"].name == "民警甲" and 90 < by_id["P-1"].distance_m < 110
    assert "G-2" not in by_id  # busy: not available
    # the grid's own workers whatever their status (the service checks who is busy elsewhere)
    assert [c.responder_id for c in own] == ["G-1", "G-2"] and all(c.own_grid for c in own)
    assert [c.responder_id for c in await own_grid_workers(live, *HERE, "GRID-A")] == ["G-1"]
    assert await own_grid_workers(live, *HERE, None) == []
    assert sorted(c.responder_id for c in await available_near(live, *HERE, "GRID-A", 2000, 1)) == [
        "G-9",
        "P-1",
        "V-1",
    ]


async def test_off_duty_and_unlocated_grid_workers_are_not_their_grids_own(live: LiveState) -> None:
    await live.apply_roster(
        "G-2", {"kind": "grid_worker", "name": "网格员乙", "grid_id": "GRID-A", "on_duty": False}
    )
    await live.apply_roster(
        "G-3", {"kind": "grid_worker", "name": "网格员丁", "grid_id": "GRID-A", "on_duty": True}
    )
    _, own = await candidates_near(live, *HERE, "GRID-A", 2000, 5)
    assert [c.responder_id for c in own] == ["G-1"]
