"""Merging duplicates across channels: each rule, the ranking, the bounding box, and properties."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from contracts.categories import CATEGORIES
from contracts.geo import EARTH_RADIUS_M, haversine_m
from contracts.states import IncidentState
from dispatcher.core.merge import (
    FAMILY_LABELS,
    NOT_OPEN,
    WHOLE_WORLD_CELL,
    Match,
    Sighting,
    bbox_for,
    family_of,
    find_duplicate,
    is_open,
    merge_cells,
)

T0 = datetime(2026, 11, 22, 1, 30, tzinfo=UTC)
LON, LAT = 106.5321, 29.6312
M_PER_DEG_LAT = EARTH_RADIUS_M * math.pi / 180
MIN = timedelta(minutes=1)


def north(metres: float) -> float:
    """Latitude `metres` north of LAT."""
    return LAT + metres / M_PER_DEG_LAT


def sighting(
    incident_id: str = "INC-NEW",
    *,
    source: str = "camera",
    category: str = "smoke_fire",
    metres_north: float = 0.0,
    minutes: float = 0.0,
    status: str = "new",
) -> Sighting:
    return Sighting(
        incident_id, source, category, LON, north(metres_north), T0 + timedelta(minutes=minutes), status
    )


NEW = sighting("INC-NEW", source="hotline", category="gas_leak")  # a caller smells gas: family "fire"


# --- the rules, one by one -----------------------------------------------------------------


def test_cross_channel_same_family_nearby_merges() -> None:
    camera = sighting("INC-CAM", source="camera", category="smoke_fire", metres_north=120, minutes=-8)
    m = find_duplicate(NEW, [camera])
    assert m is not None
    assert m.incident_id == "INC-CAM"
    assert m.distance_m == pytest.approx(120, abs=0.01)
    assert m.minutes_apart == pytest.approx(8)
    assert m.reason == "同类事件（火情），相距120米，时间相差8分钟"


def test_different_family_never_merges() -> None:
    fight = sighting("INC-FIGHT", category="fight", metres_north=10)
    assert find_duplicate(NEW, [fight]) is None


def test_family_other_never_merges() -> None:
    a = sighting("INC-A", category="other")
    b = sighting("INC-B", category="other", metres_north=5, minutes=1)
    assert find_duplicate(a, [b]) is None
    assert find_duplicate(b, [a]) is None


def test_unknown_category_never_merges() -> None:
    odd = sighting("INC-ODD", category="ufo_landing")
    assert family_of("ufo_landing") is None
    assert find_duplicate(odd, [sighting("INC-X", category="ufo_landing")]) is None
    assert find_duplicate(sighting("INC-Y"), [odd]) is None


def test_radius_is_inclusive_and_bounded() -> None:
    inside = sighting("INC-IN", metres_north=299.9)
    outside = sighting("INC-OUT", metres_north=300.5)
    assert find_duplicate(NEW, [outside]) is None
    m = find_duplicate(NEW, [inside, outside])
    assert m is not None and m.incident_id == "INC-IN"
    assert find_duplicate(NEW, [outside], radius_m=500) is not None
    assert find_duplicate(NEW, [inside], radius_m=100) is None


@pytest.mark.parametrize("sign", [1, -1], ids=["later", "earlier"])
def test_time_window_is_symmetric(sign: int) -> None:
    at_edge = sighting("INC-EDGE", minutes=sign * 60)
    beyond = sighting("INC-BEYOND", minutes=sign * 61)
    m = find_duplicate(NEW, [at_edge])
    assert m is not None and m.minutes_apart == pytest.approx(60)
    assert find_duplicate(NEW, [beyond]) is None
    assert find_duplicate(NEW, [beyond], window=timedelta(minutes=90)) is not None
    # Either of the two may be the newcomer.
    assert find_duplicate(replace(at_edge, status="new"), [NEW]) is not None


@pytest.mark.parametrize("state", list(IncidentState))
def test_only_open_incidents_absorb_reports(state: IncidentState) -> None:
    old = sighting("INC-OLD", metres_north=50, minutes=-5, status=state.value)
    m = find_duplicate(NEW, [old])
    closed = state in (IncidentState.CLOSED, IncidentState.CANCELLED, IncidentState.MERGED)
    assert (m is None) == closed
    assert is_open(state.value) == (not closed) == is_open(state)
    assert NOT_OPEN == {"closed", "cancelled", "merged"}


def test_never_merges_with_itself() -> None:
    assert find_duplicate(NEW, [NEW]) is None
    twin = replace(NEW, source="app")  # same incident id, seen again (a replay)
    assert find_duplicate(NEW, [twin]) is None


def test_nothing_to_compare() -> None:
    assert find_duplicate(NEW, []) is None


# --- ranking ---------------------------------------------------------------------------------


def test_closest_in_combined_score_wins() -> None:
    near_but_old = sighting("INC-A", metres_north=30, minutes=-50)  # 0.1 + 0.833
    farther_but_fresh = sighting("INC-B", metres_north=150, minutes=-3)  # 0.5 + 0.05
    m = find_duplicate(NEW, [near_but_old, farther_but_fresh])
    assert m is not None and m.incident_id == "INC-B"
    assert m.score == pytest.approx(0.5 + 0.05, abs=1e-3)
    # A longer window makes time count for less, which changes the answer.
    m3 = find_duplicate(NEW, [near_but_old, farther_but_fresh], window=timedelta(days=3))
    assert m3 is not None and m3.incident_id == "INC-A"


def test_ties_go_to_earliest_then_smallest_id() -> None:
    # Same place; 10 minutes before and 10 minutes after the newcomer: equal scores.
    before = sighting("INC-Z", metres_north=0, minutes=-10)
    after = sighting("INC-A", metres_north=0, minutes=10)
    for order in ([before, after], [after, before]):
        m = find_duplicate(NEW, order)
        assert m is not None and m.incident_id == "INC-Z"
    twin_a = sighting("INC-A", metres_north=0, minutes=-10)
    twin_b = sighting("INC-B", metres_north=0, minutes=-10)
    for order in ([twin_a, twin_b], [twin_b, twin_a]):
        m = find_duplicate(NEW, order)
        assert m is not None and m.incident_id == "INC-A"


def test_reason_wording_for_very_close_reports() -> None:
    m = find_duplicate(NEW, [sighting("INC-SAME", minutes=0.2)])
    assert m is not None and m.reason == "同类事件（火情），相距0米，时间相差不到1分钟"


def test_every_family_has_a_chinese_label() -> None:
    assert {c.family for c in CATEGORIES.values()} <= set(FAMILY_LABELS)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="radius"):
        find_duplicate(NEW, [], radius_m=0)
    with pytest.raises(ValueError, match="window"):
        find_duplicate(NEW, [], window=timedelta(0))


# --- bounding box ------------------------------------------------------------------------


def test_bbox_around_chongqing() -> None:
    min_lon, min_lat, max_lon, max_lat = bbox_for(LON, LAT, 300)
    assert min_lon < LON < max_lon and min_lat < LAT < max_lat
    # About 300 m each way: 0.0027 degrees of latitude, a little more of longitude at 29.6°N.
    assert (max_lat - LAT) * M_PER_DEG_LAT == pytest.approx(300, rel=1e-6)
    assert haversine_m(LON, LAT, max_lon, LAT) == pytest.approx(300, rel=1e-3)
    assert haversine_m(LON, LAT, max_lon, LAT) >= 300  # the box reaches the circle's widest point


def test_bbox_near_pole_and_antimeridian_widens() -> None:
    assert bbox_for(10.0, 89.999, 1000)[0::2] == (-180.0, 180.0)
    assert bbox_for(10.0, 89.999, 1000)[3] == 90.0
    assert bbox_for(179.9999, 0.0, 1000)[0::2] == (-180.0, 180.0)
    assert bbox_for(-179.9999, 0.0, 1000)[0::2] == (-180.0, 180.0)
    with pytest.raises(ValueError):
        bbox_for(LON, LAT, -1)


def destination(lon: float, lat: float, bearing_deg: float, metres: float) -> tuple[float, float]:
    """The point `metres` from (lon, lat) along `bearing_deg`, on the same sphere as haversine_m."""
    d = metres / EARTH_RADIUS_M
    phi, lam, theta = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    phi2 = math.asin(math.sin(phi) * math.cos(d) + math.cos(phi) * math.sin(d) * math.cos(theta))
    lam2 = lam + math.atan2(
        math.sin(theta) * math.sin(d) * math.cos(phi), math.cos(d) - math.sin(phi) * math.sin(phi2)
    )
    lon2 = (math.degrees(lam2) + 540) % 360 - 180
    return lon2, math.degrees(phi2)


@st.composite
def within_radius(draw: st.DrawFn, max_radius: float) -> tuple[float, float, float, float, float]:
    """(lon, lat, lon2, lat2, radius): a place, a radius, and a second place within it."""
    lon, lat = draw(st.floats(-179.9, 179.9)), draw(st.floats(-85, 85))
    radius = draw(st.floats(1, max_radius))
    lon2, lat2 = destination(lon, lat, draw(st.floats(0, 360)), radius * draw(st.floats(0, 1)))
    assume(haversine_m(lon, lat, lon2, lat2) <= radius)
    return lon, lat, lon2, lat2, radius


@given(within_radius(5000))
def test_bbox_contains_every_point_within_radius(pair: tuple[float, float, float, float, float]) -> None:
    lon, lat, lon2, lat2, radius = pair
    min_lon, min_lat, max_lon, max_lat = bbox_for(lon, lat, radius)
    assert min_lat <= lat2 <= max_lat
    assert min_lon <= lon2 <= max_lon


# --- cells a filing locks ----------------------------------------------------------------


def test_a_place_locks_one_to_four_cells_in_ascending_order() -> None:
    assert len(merge_cells(106.505, 29.605, 300)) == 1  # the middle of a cell
    corner = merge_cells(106.5, 29.6, 300)  # a cell corner: the four around it
    assert len(corner) == 4 and list(corner) == sorted(corner)
    assert all(-(2**31) <= c < 2**31 for c in corner)
    assert merge_cells(10.0, 89.999, 1000) == (WHOLE_WORLD_CELL,)  # too wide to count
    assert merge_cells(179.9999, 0.0, 1000) == (WHOLE_WORLD_CELL,)


@given(within_radius(300))
def test_two_places_that_could_merge_share_a_cell(pair: tuple[float, float, float, float, float]) -> None:
    """So their filings take a common lock and go one after the other."""
    lon, lat, lon2, lat2, radius = pair
    assert set(merge_cells(lon, lat, radius)) & set(merge_cells(lon2, lat2, radius))


cells = st.tuples(st.integers(-17990, 17989), st.integers(-8500, 8499))
steps = st.sampled_from([0, 1, -1, 8500, -8500])


@given(cells, steps, steps, st.floats(0.01, 0.99), st.floats(0.01, 0.99))
def test_different_cells_have_different_ids(
    cell: tuple[int, int], dx: int, dy: int, fx: float, fy: float
) -> None:
    (cx, cy), (cx2, cy2) = cell, (cell[0] + dx, max(-8999, min(8999, cell[1] + dy)))
    one = merge_cells((cx + fx) * 0.01, (cy + fy) * 0.01, 0)
    two = merge_cells((cx2 + fy) * 0.01, (cy2 + fx) * 0.01, 0)
    assert len(one) == len(two) == 1
    assert (one == two) == ((cx, cy) == (cx2, cy2))


# --- properties --------------------------------------------------------------------------

categories = st.sampled_from(sorted(CATEGORIES))
statuses = st.sampled_from([s.value for s in IncidentState])


@st.composite
def sightings(draw: st.DrawFn, ids: st.SearchStrategy[str]) -> Sighting:
    return Sighting(
        incident_id=draw(ids),
        source=draw(st.sampled_from(["camera", "hotline", "app"])),
        category=draw(categories),
        lon=LON + draw(st.floats(-0.006, 0.006)),
        lat=LAT + draw(st.floats(-0.006, 0.006)),
        occurred_at=T0 + timedelta(minutes=draw(st.floats(-120, 120))),
        status=draw(statuses),
    )


# An oracle written apart from the code: which categories are the same kind of event (read off
# the brief and the seeds, not off contracts.categories), and distance on a flat map, which agrees
# with the great circle to well under 1 % at these few hundred metres (borderline draws skipped).
SAME_EVENT = {
    "fire": {"smoke_fire", "gas_leak"},
    "public_order": {"fight", "crowd_gathering", "neighbour_dispute"},
    "medical": {"person_fallen", "elderly_help"},
    "public_safety": {"high_altitude_throwing", "intrusion"},
    "traffic": {"illegal_parking"},
    "city_appearance": {"street_vending"},
    "sanitation": {"garbage_overflow", "sewage"},
    "utilities": {"water_supply", "power_supply", "heating"},
    "public_facility": {"road_damage", "streetlight", "public_facility"},
    "environment": {"cooking_fumes", "noise"},
}  # "other" merges with nothing


def flat_m(a: Sighting, b: Sighting) -> float:
    dx = (b.lon - a.lon) * 111_320 * math.cos(math.radians((a.lat + b.lat) / 2))
    dy = (b.lat - a.lat) * 110_574
    return math.hypot(dx, dy)


def same_event(a: str, b: str) -> bool:
    return any(a in group and b in group for group in SAME_EVENT.values())


def qualifies(new: Sighting, old: Sighting, radius_m: float, window: timedelta) -> bool:
    return (
        old.incident_id != new.incident_id
        and old.status not in ("closed", "cancelled", "merged")
        and same_event(new.category, old.category)
        and flat_m(new, old) <= radius_m
        and abs(new.occurred_at - old.occurred_at) <= window
    )


candidate_ids = st.sampled_from([f"INC-{i}" for i in range(8)])


@given(
    sightings(candidate_ids),
    st.lists(sightings(candidate_ids), max_size=12),
    st.floats(50, 1000),
    st.integers(5, 180).map(lambda m: timedelta(minutes=m)),
)
def test_match_iff_some_candidate_qualifies_and_none_is_both_nearer_and_closer_in_time(
    new: Sighting, pool: list[Sighting], radius_m: float, window: timedelta
) -> None:
    # skip draws on the radius's edge, where the flat map and the great circle may disagree
    assume(all(abs(flat_m(new, o) - radius_m) > 0.01 * radius_m for o in pool))
    m = find_duplicate(new, pool, radius_m=radius_m, window=window)
    qualifying = [o for o in pool if qualifies(new, o, radius_m, window)]
    assert (m is None) == (not qualifying)
    if m is None:
        return
    assert isinstance(m, Match)
    chosen = [o for o in qualifying if o.incident_id == m.incident_id]
    assert chosen, "the match must satisfy every rule"
    assert m.distance_m <= radius_m and m.minutes_apart <= window.total_seconds() / 60
    # whatever the weights, no qualifying candidate beats the match on distance and time at once
    target = min(chosen, key=lambda o: (flat_m(new, o), abs(new.occurred_at - o.occurred_at)))
    for o in qualifying:
        nearer = flat_m(new, o) < flat_m(new, target) * 0.99 - 1
        sooner = abs(new.occurred_at - o.occurred_at) < abs(new.occurred_at - target.occurred_at) - timedelta(
            seconds=1
        )
        assert not (nearer and sooner), (o, target)
    # The answer does not depend on the order of the candidates.
    again = find_duplicate(new, list(reversed(pool)), radius_m=radius_m, window=window)
    assert again is not None and again.incident_id == m.incident_id
