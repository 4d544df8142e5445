"""Enrichment: ranking candidates (pure), the grid's own worker (pure), and live state in Redis."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from contracts import topics
from contracts.geo import haversine_m
from contracts.incidents import IncidentRecord, Location
from contracts.kinds import KINDS, eta_seconds
from infra.livestate import LiveState, Nearby
from streams.enrich import Enricher, own_worker, rank

Row = list[str | None]


def row(
    name: str | None = "张三",
    org: str | None = "清晖社区",
    grid_id: str | None = None,
    kind: str | None = "grid_worker",
    on_duty: str | None = "1",
    status: str | None = "available",
    lon: str | None = "106.53",
    lat: str | None = "29.63",
) -> Row:
    return [name, org, grid_id, kind, on_duty, status, lon, lat]


# --- rank -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_rank_eta_by_kind_and_alignment(kind: str) -> None:
    nearby = [Nearby("R-1", 120.04, 106.53, 29.63), Nearby("R-2", 987.66, 106.54, 29.63)]
    roster = [row(name="王警官", org="清晖派出所"), row(name="李四", org="志愿队")]
    out = rank(kind, nearby, roster, None)
    assert [(r.responder_id, r.name, r.org, r.kind) for r in out] == [
        ("R-1", "王警官", "清晖派出所", kind),
        ("R-2", "李四", "志愿队", kind),
    ]
    assert [r.distance_m for r in out] == [120.0, 987.7]
    assert [r.eta_s for r in out] == [eta_seconds(kind, 120.04), eta_seconds(kind, 987.66)]
    assert not any(r.own_grid for r in out)


def test_rank_eta_order_across_kinds() -> None:
    near = [Nearby("R", 1500.0, 0, 0)]
    etas = {k: rank(k, near, [row()], None)[0].eta_s for k in KINDS}
    assert etas["police"] < etas["grid_worker"] < etas["volunteer"]


def test_rank_marks_the_grids_own_worker() -> None:
    nearby = [Nearby("G-1", 10, 0, 0), Nearby("G-2", 20, 0, 0), Nearby("G-3", 30, 0, 0)]
    roster = [row(grid_id="G001"), row(grid_id="G002"), row(grid_id=None)]
    assert [r.own_grid for r in rank("grid_worker", nearby, roster, "G001")] == [True, False, False]
    assert [r.own_grid for r in rank("grid_worker", nearby, roster, None)] == [False, False, False]
    # An empty grid id never matches an empty roster grid.
    assert not rank("grid_worker", [Nearby("G-4", 1, 0, 0)], [row(grid_id="")], "")[0].own_grid


def test_rank_fills_missing_roster_fields() -> None:
    (r,) = rank("volunteer", [Nearby("V-00001", 5, 0, 0)], [row(name=None, org=None)], "G001")
    assert (r.name, r.org) == ("V-00001", "")


def test_rank_refuses_misaligned_rows() -> None:
    with pytest.raises(ValueError):
        rank("police", [Nearby("P-1", 5, 0, 0)], [], None)
    assert rank("police", [], [], "G001") == []


def test_rank_own_grid_only_for_grid_workers() -> None:
    roster = [row(kind="police", grid_id="G001")]
    assert not rank("police", [Nearby("P-1", 5, 0, 0)], roster, "G001")[0].own_grid
    roster = [row(kind="volunteer", grid_id="G001")]
    assert not rank("volunteer", [Nearby("V-1", 5, 0, 0)], roster, "G001")[0].own_grid


# --- own_worker -------------------------------------------------------------------------------


def test_own_worker_skips_off_duty_busy_and_unlocated() -> None:
    rows = [
        ("G-1", row(on_duty="0")),
        ("G-2", row(status="busy")),
        ("G-3", row(status="off_duty")),
        ("G-4", row(lon=None)),
        ("G-5", row(lat=None)),
        ("G-6", row(on_duty=None, status=None, lon=None, lat=None)),  # roster vanished
        ("G-7", row(name="赵网格", org="清晖社区", lon="106.535", lat="29.63")),
        ("G-8", row(lon="106.53", lat="29.63")),
    ]
    r = own_worker(106.53, 29.63, "G001", rows)
    assert r is not None
    distance = haversine_m(106.53, 29.63, 106.535, 29.63)
    assert (r.responder_id, r.name, r.org, r.kind, r.own_grid) == (
        "G-7",
        "赵网格",
        "清晖社区",
        "grid_worker",
        True,
    )
    assert r.distance_m == round(distance, 1)
    assert r.eta_s == eta_seconds("grid_worker", distance)


def test_own_worker_none_when_nobody_qualifies() -> None:
    assert own_worker(106.53, 29.63, "G001", []) is None
    assert own_worker(106.53, 29.63, "G001", [("G-1", row(on_duty="0")), ("G-2", row(status="busy"))]) is None


def test_own_worker_fills_missing_fields() -> None:
    r = own_worker(106.53, 29.63, "G001", [("G-9", row(name=None, org=None, kind=None))])
    assert r is not None and (r.name, r.org, r.kind, r.distance_m, r.eta_s) == (
        "G-9",
        "",
        "grid_worker",
        0.0,
        0,
    )


# --- LiveState against Redis (db 15) -----------------------------------------------------------


@pytest.fixture
async def live(redis: aioredis.Redis) -> AsyncIterator[LiveState]:
    await redis.flushdb()
    yield LiveState(redis)
    await redis.flushdb()


def roster(
    kind: str, *, on_duty: bool = True, grid_id: str | None = None, name: str = "某人"
) -> dict[str, Any]:
    return {"name": name, "kind": kind, "org": f"{kind}-org", "skills": ["first_aid"], "on_duty": on_duty,
            "grid_id": grid_id}  # fmt: skip


async def members(redis: aioredis.Redis, kind: str) -> set[str]:
    return {
        m.decode() if isinstance(m, bytes) else str(m)
        for m in await redis.zrange(topics.available_key(kind), 0, -1)
    }


async def test_unknown_responder_position_returns_minus_one(live: LiveState, redis: aioredis.Redis) -> None:
    assert await live.apply_position("P-404", 106.53, 29.63, 1000, 5.0) == -1
    assert await live.responder("P-404") == {}
    assert await members(redis, "police") == set()


async def test_older_or_equal_position_is_ignored(live: LiveState) -> None:
    await live.apply_roster("P-1", roster("police", name="王警官"))
    assert await live.apply_position("P-1", 106.53, 29.63, 2000, 8.0) == 1
    assert await live.apply_position("P-1", 106.60, 29.70, 1000, 8.0) == 0  # older
    assert await live.apply_position("P-1", 106.60, 29.70, 2000, 8.0) == 0  # replay of the same time
    stored = await live.responder("P-1")
    assert (stored["lon"], stored["lat"], stored["at_ms"], stored["accuracy_m"]) == (
        "106.53",
        "29.63",
        "2000",
        "8.0",
    )
    assert (stored["name"], stored["kind"], stored["on_duty"], stored["status"]) == (
        "王警官",
        "police",
        "1",
        "available",
    )
    assert stored["skills"] == "first_aid"
    (pos,) = (await live.available_positions("police")).values()
    assert pos == pytest.approx((106.53, 29.63), abs=1e-5)
    assert await live.apply_position("P-1", 106.54, 29.64, 3000, None) == 1
    assert (await live.responder("P-1"))["accuracy_m"] == ""
    assert (await live.available_positions("police"))["P-1"] == pytest.approx((106.54, 29.64), abs=1e-5)


async def test_a_batch_of_positions_answers_like_one_call_each(live: LiveState) -> None:
    await live.apply_roster("P-1", roster("police"))
    await live.apply_roster("P-2", roster("police"))
    got = await live.apply_positions(
        [
            ("P-1", 106.53, 29.63, 2000, 8.0),
            ("P-404", 106.53, 29.63, 2000, None),  # unknown
            ("P-1", 106.60, 29.70, 1000, None),  # older than the first, in the same batch
            ("P-2", 106.54, 29.64, 3000, None),
        ]
    )
    assert got == [1, -1, 0, 1]
    assert await live.apply_positions([]) == []
    positions = await live.available_positions("police")
    assert positions["P-1"] == pytest.approx((106.53, 29.63), abs=1e-5)
    assert positions["P-2"] == pytest.approx((106.54, 29.64), abs=1e-5)


async def test_off_duty_leaves_and_rejoins_the_geo_set(live: LiveState, redis: aioredis.Redis) -> None:
    await live.apply_roster("P-1", roster("police"))
    assert await members(redis, "police") == set()  # no position yet
    await live.apply_position("P-1", 106.53, 29.63, 1000, None)
    assert await members(redis, "police") == {"P-1"}
    await live.apply_roster("P-1", roster("police", on_duty=False))
    assert await members(redis, "police") == set()
    assert await live.apply_position("P-1", 106.531, 29.631, 2000, None) == 1  # tracked, not offered
    assert await members(redis, "police") == set()
    await live.apply_roster("P-1", roster("police", on_duty=True))
    assert await members(redis, "police") == {"P-1"}
    assert (await live.available_positions("police"))["P-1"] == pytest.approx((106.531, 29.631), abs=1e-5)


async def test_busy_responder_leaves_the_geo_set_on_its_next_fix(
    live: LiveState, redis: aioredis.Redis
) -> None:
    await live.apply_roster("V-1", roster("volunteer"))
    await live.apply_position("V-1", 106.53, 29.63, 1000, None)
    assert await members(redis, "volunteer") == {"V-1"}
    await redis.hset(topics.responder_key("V-1"), "status", "busy")
    await live.apply_position("V-1", 106.53, 29.63, 2000, None)
    assert await members(redis, "volunteer") == set()
    await live.apply_roster("V-1", roster("volunteer"))  # the roster keeps the status it finds
    assert (await live.responder("V-1"))["status"] == "busy"
    assert await members(redis, "volunteer") == set()


async def test_kind_change_moves_between_geo_sets(live: LiveState, redis: aioredis.Redis) -> None:
    await live.apply_roster("R-1", roster("police"))
    await live.apply_position("R-1", 106.53, 29.63, 1000, None)
    await live.apply_roster("R-1", roster("volunteer"))
    assert (await members(redis, "police"), await members(redis, "volunteer")) == (set(), {"R-1"})
    await live.apply_roster("R-1", roster("grid_worker", grid_id="G001"))
    assert [await members(redis, k) for k in KINDS] == [set(), {"R-1"}, set()]
    assert await live.grid_workers("G001") == ["R-1"]
    await live.apply_roster("R-1", roster("police", grid_id="G001"))  # no longer a grid worker
    assert await live.grid_workers("G001") == []
    assert [await members(redis, k) for k in KINDS] == [{"R-1"}, set(), set()]


async def test_grid_worker_sets_follow_grid_changes(live: LiveState) -> None:
    await live.apply_roster("G-1", roster("grid_worker", grid_id="G001"))
    await live.apply_roster("G-2", roster("grid_worker", grid_id="G001"))
    await live.apply_roster("V-1", roster("volunteer", grid_id="G001"))  # volunteers are not grid workers
    assert await live.grid_workers("G001") == ["G-1", "G-2"]
    await live.apply_roster("G-1", roster("grid_worker", grid_id="G002"))
    assert (await live.grid_workers("G001"), await live.grid_workers("G002")) == (["G-2"], ["G-1"])
    await live.apply_roster("G-2", roster("grid_worker", grid_id=None))
    assert await live.grid_workers("G001") == []
    assert (await live.responder("G-2"))["grid_id"] == ""
    await live.apply_roster("G-1", roster("grid_worker", grid_id="G002", on_duty=False))
    assert await live.grid_workers("G002") == ["G-1"]  # responsibility stays; availability is separate


async def test_cameras(live: LiveState) -> None:
    assert await live.camera("CAM-1") is None
    await live.put_camera("CAM-1", "东门", 106.53, 29.63)
    assert await live.camera("CAM-1") == ("东门", 106.53, 29.63)


# --- Enricher.enrich against Redis, checked by brute force ----------------------------------------

CENTRE = (106.5300, 29.6300)


def incident(lon: float, lat: float, grid_id: str | None) -> IncidentRecord:
    now = datetime(2026, 11, 22, 1, 30, tzinfo=UTC)
    return IncidentRecord(
        incident_id="INC-TRK-1",
        tracking_no="TRK-1",
        source="app",
        source_id="SSP-1",
        category="garbage_overflow",
        category_label="垃圾满溢",
        severity=4,
        title="垃圾满溢·第1网格",
        occurred_at=now,
        received_at=now,
        due_at=now,
        location=Location(lon=lon, lat=lat, grid_id=grid_id, out_of_area=grid_id is None),
    )


async def populate(live: LiveState, redis: aioredis.Redis, seed: int) -> dict[str, dict[str, Any]]:
    """A handful of responders of each kind, some off duty, busy or unlocated; returns the truth."""
    rng = random.Random(seed)
    truth: dict[str, dict[str, Any]] = {}
    for kind, prefix, count in (("police", "P", 7), ("grid_worker", "G", 7), ("volunteer", "V", 9)):
        for n in range(count):
            rid = f"{prefix}-{n:03d}"
            grid_id = f"G{n:03d}" if kind == "grid_worker" else None
            on_duty = rng.random() > 0.2
            await live.apply_roster(rid, roster(kind, on_duty=on_duty, grid_id=grid_id, name=f"{kind}{n}"))
            fact: dict[str, Any] = {
                "kind": kind,
                "on_duty": on_duty,
                "status": "available",
                "grid_id": grid_id,
            }
            if rng.random() < 0.1:
                fact["pos"] = None  # never reported a position
            else:
                lon = CENTRE[0] + rng.uniform(-0.03, 0.03)
                lat = CENTRE[1] + rng.uniform(-0.03, 0.03)
                await live.apply_position(rid, lon, lat, 1000 + n, 5.0)
                fact["pos"] = (lon, lat)
                if rng.random() < 0.15:
                    await redis.hset(topics.responder_key(rid), "status", "busy")
                    await live.apply_position(rid, lon, lat, 2000 + n, 5.0)
                    fact["status"] = "busy"
            truth[rid] = fact
    return truth


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_enrich_matches_brute_force(live: LiveState, redis: aioredis.Redis, seed: int) -> None:
    truth = await populate(live, redis, seed)
    lon, lat = CENTRE[0] + 0.002, CENTRE[1] - 0.001
    per_kind = 3
    enriched = await Enricher(live, per_kind=per_kind, radius_m=20_000).enrich(incident(lon, lat, "G001"))

    for kind in KINDS:
        eligible = sorted(
            (haversine_m(lon, lat, *f["pos"]), rid)
            for rid, f in truth.items()
            if f["kind"] == kind and f["on_duty"] and f["status"] == "available" and f["pos"] is not None
        )[:per_kind]
        got = enriched.nearest[kind]
        assert [r.responder_id for r in got] == [rid for _, rid in eligible], kind
        for r, (distance, _) in zip(got, eligible, strict=True):
            assert r.distance_m == pytest.approx(distance, abs=1.0)  # Redis stores a 52-bit geohash
            assert abs(r.eta_s - eta_seconds(kind, distance)) <= 1
            assert r.kind == kind and r.name.startswith(kind)
            assert r.own_grid == (kind == "grid_worker" and truth[r.responder_id]["grid_id"] == "G001")

    own = truth["G-001"]
    if own["on_duty"] and own["status"] == "available" and own["pos"] is not None:
        assert enriched.own_grid_worker is not None
        assert enriched.own_grid_worker.responder_id == "G-001" and enriched.own_grid_worker.own_grid
        assert enriched.own_grid_worker.distance_m == pytest.approx(
            haversine_m(lon, lat, *own["pos"]), abs=0.1
        )
    else:
        assert enriched.own_grid_worker is None
    assert enriched.enrichment_id == "INC-TRK-1:enriched"
    assert enriched.incident_id == "INC-TRK-1" and enriched.category == "garbage_overflow"


async def test_enrich_radius_count_and_out_of_area(live: LiveState, redis: aioredis.Redis) -> None:
    for n, metres in enumerate((100, 400, 900, 5000)):
        rid = f"P-{n}"
        await live.apply_roster(rid, roster("police"))
        await live.apply_position(rid, CENTRE[0], CENTRE[1] + metres / 111_226, 1000, None)
    enricher = Enricher(live, per_kind=2, radius_m=1000)
    enriched = await enricher.enrich(incident(*CENTRE, grid_id=None))
    assert [r.responder_id for r in enriched.nearest["police"]] == ["P-0", "P-1"]
    assert enriched.nearest["grid_worker"] == [] == enriched.nearest["volunteer"]
    assert enriched.own_grid_worker is None  # out of area: no grid, no own worker
    wide = await Enricher(live, per_kind=10, radius_m=1000).enrich(incident(*CENTRE, grid_id=None))
    assert [r.responder_id for r in wide.nearest["police"]] == ["P-0", "P-1", "P-2"]  # 5 km is outside


async def test_redis_and_haversine_agree(live: LiveState, redis: aioredis.Redis) -> None:
    """Same Earth radius as Redis's GEO commands, so recommended distances match our own figures."""
    await redis.geoadd("geo-check", [106.53, 29.63, "a", 106.57, 29.66, "b"])
    redis_m = await redis.geodist("geo-check", "a", "b", unit="m")
    assert redis_m is not None
    assert redis_m == pytest.approx(haversine_m(106.53, 29.63, 106.57, 29.66), abs=1.0)


async def test_enrich_own_grid_worker_follows_duty(live: LiveState) -> None:
    await live.apply_roster("G-7", roster("grid_worker", grid_id="G001", name="网格员七"))
    await live.apply_roster("G-8", roster("grid_worker", grid_id="G002"))
    await live.apply_position("G-7", 106.535, 29.63, 1000, None)
    await live.apply_position("G-8", 106.5301, 29.63, 1000, None)  # nearer, but another grid's
    enricher = Enricher(live, per_kind=5, radius_m=5000)
    enriched = await enricher.enrich(incident(*CENTRE, grid_id="G001"))
    own = enriched.own_grid_worker
    assert own is not None and (own.responder_id, own.name, own.own_grid) == ("G-7", "网格员七", True)
    assert [(r.responder_id, r.own_grid) for r in enriched.nearest["grid_worker"]] == [
        ("G-8", False),
        ("G-7", True),
    ]
    await live.apply_roster("G-7", roster("grid_worker", grid_id="G001", on_duty=False))
    enriched = await enricher.enrich(incident(*CENTRE, grid_id="G001"))
    assert enriched.own_grid_worker is None
    assert [r.responder_id for r in enriched.nearest["grid_worker"]] == ["G-8"]
