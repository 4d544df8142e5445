"""The demo city: deterministic, plausible counts, and grids that tile the street exactly."""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from itertools import pairwise

import pytest

from contracts.geo import point_in_polygon
from devtools.city import CONTRACT_CAMERA_ID, City, CityGrid, generate_city

CONTRACT_POINTS = [(106.5321, 29.6312), (106.5302, 29.6290), (106.53, 29.63)]


@pytest.fixture(scope="module")
def city() -> City:
    return generate_city()


def _brute_force(city: City, lon: float, lat: float) -> list[str]:
    """Every grid containing the point, testing all of them (bbox first only to save time)."""
    hits = []
    for g in city.grids:
        x0, y0, x1, y1 = g.bbox
        if x0 <= lon <= x1 and y0 <= lat <= y1 and point_in_polygon(lon, lat, [g.ring]):
            hits.append(g.grid_id)
    return hits


def _signed_area(ring: tuple[tuple[float, float], ...]) -> float:
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in pairwise(ring)) / 2


def test_same_seed_same_city_and_fast() -> None:
    started = time.perf_counter()
    a = generate_city(2026)
    elapsed = time.perf_counter() - started
    assert a == generate_city(2026)
    assert a != generate_city(7)
    assert elapsed < 1.0, f"generation took {elapsed:.2f}s"


def test_counts(city: City) -> None:
    kinds = Counter(r.kind for r in city.responders)
    assert 10 <= len(city.communities) <= 15
    assert 250 <= len(city.grids) <= 350
    assert 500 <= len(city.cameras) <= 700
    assert 150 <= kinds["police"] <= 250
    assert kinds["grid_worker"] == len(city.grids)
    assert 2500 <= kinds["volunteer"] <= 3500
    off = sum(not r.on_duty for r in city.responders) / len(city.responders)
    assert 0.02 <= off <= 0.08
    for kind in ("police", "grid_worker", "volunteer"):
        assert any(not r.on_duty for r in city.responders if r.kind == kind)


def test_ids_unique_and_well_formed(city: City) -> None:
    for ids, pattern in (
        ([c.community_id for c in city.communities], r"C\d{2}"),
        ([g.grid_id for g in city.grids], r"G\d{3}"),
        ([c.camera_id for c in city.cameras], r"\d{20}"),
        ([r.responder_id for r in city.responders], r"(P-\d{4}|G-\d{4}|V-\d{5})"),
    ):
        assert len(set(ids)) == len(ids)
        assert all(re.fullmatch(pattern, i) for i in ids), pattern
    assert CONTRACT_CAMERA_ID in {c.camera_id for c in city.cameras}
    assert "P-0007" in {r.responder_id for r in city.responders}
    assert len({g.name for g in city.grids}) == len(city.grids)


def test_orgs_and_skills(city: City) -> None:
    police_orgs = {r.org for r in city.responders if r.kind == "police"}
    teams = {r.org for r in city.responders if r.kind == "volunteer"}
    assert 2 <= len(police_orgs) <= 8 and all(o.endswith("派出所") for o in police_orgs)
    assert 25 <= len(teams) <= 35 and all(t.endswith("志愿服务队") for t in teams)
    assert all(r.skills and len(set(r.skills)) == len(r.skills) for r in city.responders)
    assert all("," not in s for r in city.responders for s in r.skills)  # Redis stores them comma-joined


def test_grids_are_convex_counter_clockwise_and_cover_the_bbox(city: City) -> None:
    for g in city.grids:
        ring = g.ring
        assert len(ring) == 5 and ring[0] == ring[-1]
        for a, b, c in zip(ring[:4], ring[1:5], [*ring[2:5], ring[1]], strict=True):
            cross = (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0])
            assert cross > 0, f"{g.grid_id} is not convex and counter-clockwise at {b}"
    x0, y0, x1, y1 = city.bbox
    assert sum(_signed_area(g.ring) for g in city.grids) == pytest.approx((x1 - x0) * (y1 - y0), rel=1e-9)


def test_grids_tile_without_gaps_or_overlaps(city: City) -> None:
    index = city.grid_index()
    rng = random.Random(1)
    x0, y0, x1, y1 = city.bbox
    for _ in range(3000):
        lon = rng.uniform(x0 + 1e-6, x1 - 1e-6)
        lat = rng.uniform(y0 + 1e-6, y1 - 1e-6)
        hits = _brute_force(city, lon, lat)
        assert len(hits) == 1, (lon, lat, hits)
        found = index.locate(lon, lat)
        assert found is not None and found.grid_id == hits[0]


def test_communities_are_contiguous_blocks(city: City) -> None:
    members: dict[str, list[CityGrid]] = {}
    for g in city.grids:
        members.setdefault(g.community_id, []).append(g)
    assert set(members) == {c.community_id for c in city.communities}
    for grids in members.values():
        # Grids of one community share corners with at least one other grid of it.
        corners = [set(g.ring) for g in grids]
        assert all(
            any(i != j and corners[i] & corners[j] for j in range(len(grids))) for i in range(len(grids))
        )


def test_contract_points_inside_and_outside_points_nowhere(city: City) -> None:
    index = city.grid_index()
    for lon, lat in CONTRACT_POINTS:
        grid = index.locate(lon, lat)
        assert grid is not None
        assert grid.community_name == "清晖社区"
    x0, y0, x1, y1 = city.bbox
    mid_lon, mid_lat = (x0 + x1) / 2, (y0 + y1) / 2
    for lon, lat in [
        (x0 - 1e-4, mid_lat),
        (x1 + 1e-4, mid_lat),
        (mid_lon, y0 - 1e-4),
        (mid_lon, y1 + 1e-4),
        (106.40, 29.63),
        (0.0, 0.0),
    ]:
        assert index.locate(lon, lat) is None
        assert _brute_force(city, lon, lat) == []


def test_everything_is_placed_inside_the_city(city: City) -> None:
    index = city.grid_index()
    names = city.community_names()
    grids = {g.grid_id: g for g in city.grids}
    for cam in city.cameras:
        assert index.locate(cam.lon, cam.lat) is not None, cam
    for r in city.responders:
        located = index.locate(r.lon, r.lat)
        assert located is not None, r
        if r.kind == "grid_worker":
            assert r.grid_id in grids
            assert located.grid_id == r.grid_id
            assert r.org == names[grids[r.grid_id].community_id]
        else:
            assert r.grid_id is None
        if r.kind == "volunteer":
            # Each team works in its own community.
            assert r.org.startswith(located.community_name.removesuffix("社区")), (r, located)


def test_registry_fields_follow_the_contract(city: City) -> None:
    r = next(r for r in city.responders if r.kind == "grid_worker")
    fields = r.registry_fields()
    assert set(fields) == {"name", "kind", "org", "skills", "on_duty", "grid_id"}
    assert isinstance(fields["skills"], list) and fields["grid_id"] == r.grid_id
