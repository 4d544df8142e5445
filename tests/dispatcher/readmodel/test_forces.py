"""The dispatcher's view of who is near, read from live state in the real Redis in one call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from contracts.kinds import eta_seconds
from dispatcher.readmodel.forces import (
    BUSY,
    NOT_LOCATED,
    OFF_DUTY,
    UNKNOWN,
    available_near,
    candidates_near,
    named_responders,
    own_grid_workers,
)
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


async def test_named_responders_are_found_however_far_or_told_why_not(live: LiveState) -> None:
    """Flat dispatch: any responder the operator names, with distance and ETA computed now, or the
    reason they cannot go."""
    await live.apply_roster("P-9", {"kind": "police", "name": "民警远", "org": "远所", "on_duty": True})
    await live.apply_positions([("P-9", HERE[0] + 0.05, HERE[1], 1000, None)])  # about 4.8 km east
    await live.apply_roster("V-8", {"kind": "volunteer", "name": "休", "org": "队", "on_duty": False})
    await live.apply_roster("V-7", {"kind": "volunteer", "name": "无位置", "org": "队", "on_duty": True})
    await live.set_status("V-1", "busy")
    ready, why = await named_responders(
        live, *HERE, "GRID-A", ["P-9", "G-1", "V-8", "V-7", "V-1", "X-0", "P-9"]
    )
    assert [c.responder_id for c in ready] == ["P-9", "G-1"]  # each once, in the order named
    far = ready[0]
    assert 4_700 < far.distance_m < 4_900 and far.eta_s == eta_seconds("police", far.distance_m)
    assert (far.name, far.org, far.own_grid) == ("民警远", "远所", False) and ready[1].own_grid
    assert why == {"V-8": OFF_DUTY, "V-7": NOT_LOCATED, "V-1": BUSY, "X-0": UNKNOWN}
