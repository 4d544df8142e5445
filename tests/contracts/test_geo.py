"""Geography: great-circle distances, point-in-polygon, and the bucketed grid index."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.geo import EARTH_RADIUS_M, Grid, GridIndex, haversine_m, point_in_polygon, point_in_ring

# --- haversine_m ------------------------------------------------------------------------

ONE_DEGREE_M = EARTH_RADIUS_M * math.pi / 180  # ≈ 111,226 m with Redis's radius


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0.0, 0.0), (0.0, 1.0), ONE_DEGREE_M),  # one degree of latitude
        ((0.0, 0.0), (1.0, 0.0), ONE_DEGREE_M),  # one degree of longitude on the equator
        ((10.0, 60.0), (11.0, 60.0), ONE_DEGREE_M * math.cos(math.radians(60))),  # approx., short arc
        ((0.0, 0.0), (90.0, 0.0), EARTH_RADIUS_M * math.pi / 2),
        ((0.0, 0.0), (180.0, 0.0), EARTH_RADIUS_M * math.pi),  # antipodes
        ((0.0, 90.0), (0.0, -90.0), EARTH_RADIUS_M * math.pi),  # pole to pole
        ((123.0, 90.0), (-45.0, 90.0), 0.0),  # the pole is one point whatever the longitude
    ],
)
def test_haversine_known_distances(a: tuple[float, float], b: tuple[float, float], expected: float) -> None:
    assert haversine_m(*a, *b) == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_haversine_real_cities() -> None:
    # Beijing (Tiananmen) to Shanghai (People's Square): about 1,067 km.
    assert haversine_m(116.3975, 39.9087, 121.4737, 31.2304) == pytest.approx(1_067_000, rel=5e-3)
    # Across Chongqing's Yubei street used by the demo: a few hundred metres per 0.005 degrees.
    d = haversine_m(106.53, 29.63, 106.535, 29.63)
    assert 480 < d < 490


def test_haversine_zero_and_small() -> None:
    assert haversine_m(106.53, 29.63, 106.53, 29.63) == 0.0
    # One metre north is about 1 / 111,226 of a degree.
    assert haversine_m(106.53, 29.63, 106.53, 29.63 + 1 / ONE_DEGREE_M) == pytest.approx(1.0, rel=1e-6)


lons = st.floats(-180, 180, allow_nan=False)
lats = st.floats(-90, 90, allow_nan=False)


@given(lons, lats, lons, lats)
def test_haversine_symmetric_nonnegative_bounded(lon1: float, lat1: float, lon2: float, lat2: float) -> None:
    d = haversine_m(lon1, lat1, lon2, lat2)
    assert d == pytest.approx(haversine_m(lon2, lat2, lon1, lat1), abs=1e-6)
    assert 0.0 <= d <= EARTH_RADIUS_M * math.pi + 1e-6
    assert haversine_m(lon1, lat1, lon1, lat1) == 0.0


@given(lons, lats, lons, lats, lons, lats)
def test_haversine_triangle_inequality(
    lon1: float, lat1: float, lon2: float, lat2: float, lon3: float, lat3: float
) -> None:
    ab, bc, ac = (
        haversine_m(lon1, lat1, lon2, lat2),
        haversine_m(lon2, lat2, lon3, lat3),
        haversine_m(lon1, lat1, lon3, lat3),
    )
    assert ac <= ab + bc + 1e-3


# --- point_in_ring / point_in_polygon ----------------------------------------------------

SQUARE = [(0.0, 0.0), (4.0, 0.0), (4.0, 4.0), (0.0, 4.0), (0.0, 0.0)]
HOLE = [(1.0, 1.0), (3.0, 1.0), (3.0, 3.0), (1.0, 3.0), (1.0, 1.0)]
# A "U": the notch between x=1 and x=2 above y=1 is outside.
U_SHAPE = [
    (0.0, 0.0), (3.0, 0.0), (3.0, 3.0), (2.0, 3.0), (2.0, 1.0),
    (1.0, 1.0), (1.0, 3.0), (0.0, 3.0), (0.0, 0.0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("point", "inside"),
    [((2.0, 2.0), True), ((0.1, 3.9), True), ((-0.1, 2.0), False), ((4.1, 2.0), False), ((2.0, 5.0), False)],
)
def test_convex_ring(point: tuple[float, float], inside: bool) -> None:
    assert point_in_ring(*point, SQUARE) is inside
    assert point_in_ring(*point, SQUARE[:-1]) is inside  # an unclosed ring works the same


@pytest.mark.parametrize(
    ("point", "inside"),
    [
        ((0.5, 2.0), True),  # left arm
        ((2.5, 2.5), True),  # right arm
        ((1.5, 0.5), True),  # the base
        ((1.5, 2.0), False),  # in the notch: inside the bounding box, outside the polygon
        ((1.5, 3.5), False),
    ],
)
def test_concave_ring(point: tuple[float, float], inside: bool) -> None:
    assert point_in_ring(*point, U_SHAPE) is inside
    assert point_in_polygon(*point, [U_SHAPE]) is inside


def test_counter_clockwise_and_clockwise_rings_agree() -> None:
    clockwise = list(reversed(U_SHAPE))
    for x in (0.25, 0.75, 1.25, 1.75, 2.25, 2.75):
        for y in (0.25, 0.75, 1.25, 2.5, 2.9):
            assert point_in_ring(x, y, clockwise) == point_in_ring(x, y, U_SHAPE)


@pytest.mark.parametrize(
    ("point", "inside"),
    [((0.5, 0.5), True), ((3.5, 2.0), True), ((2.0, 2.0), False), ((1.5, 2.5), False), ((5.0, 5.0), False)],
)
def test_polygon_with_hole(point: tuple[float, float], inside: bool) -> None:
    assert point_in_polygon(*point, [SQUARE, HOLE]) is inside


def test_polygon_with_two_holes_and_empty() -> None:
    hole2 = [(3.2, 3.2), (3.8, 3.2), (3.8, 3.8), (3.2, 3.8)]
    assert not point_in_polygon(3.5, 3.5, [SQUARE, HOLE, hole2])
    assert point_in_polygon(3.5, 3.1, [SQUARE, HOLE, hole2])
    assert not point_in_polygon(2.0, 2.0, [])  # no rings, nothing inside


# --- Grid.from_geojson --------------------------------------------------------------------


def square(x0: float, y0: float, size: float) -> dict[str, object]:
    ring = [[x0, y0], [x0 + size, y0], [x0 + size, y0 + size], [x0, y0 + size], [x0, y0]]
    return {"type": "Polygon", "coordinates": [ring]}


def test_grid_from_geojson() -> None:
    poly: dict[str, object] = {
        "type": "Polygon",
        "coordinates": [
            [
                [106.52, 29.62, 300.0],
                [106.54, 29.62, 301.0],
                [106.54, 29.64],
                [106.52, 29.64],
                [106.52, 29.62],
            ],
            [[106.525, 29.625], [106.53, 29.625], [106.53, 29.63], [106.525, 29.625]],
        ],
    }
    grid = Grid.from_geojson("G001", "第1网格", "C01", "清晖社区", poly)
    names = (grid.grid_id, grid.name, grid.community_id, grid.community_name)
    assert names == ("G001", "第1网格", "C01", "清晖社区")
    assert grid.bbox == (106.52, 29.62, 106.54, 29.64)
    assert len(grid.rings) == 2 and grid.rings[0][0] == (106.52, 29.62)  # altitude dropped
    assert grid.contains(106.535, 29.635)
    assert not grid.contains(106.5285, 29.6265)  # in the hole
    assert not grid.contains(106.55, 29.63)


@pytest.mark.parametrize(
    "polygon",
    [
        {"type": "MultiPolygon", "coordinates": [square(0, 0, 1)["coordinates"]]},
        {"type": "Point", "coordinates": [0, 0]},
        {"type": "Feature", "geometry": square(0, 0, 1)},
        {"coordinates": square(0, 0, 1)["coordinates"]},
    ],
)
def test_grid_from_geojson_refuses_non_polygons(polygon: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="G9"):
        Grid.from_geojson("G9", "x", "C", "c", polygon)


# --- GridIndex ----------------------------------------------------------------------------


def test_grid_index_tiles() -> None:
    """A 10 x 10 board of 0.003-degree squares around the demo street: every point its square."""
    size, x0, y0 = 0.003, 106.50, 29.60
    grids = [
        Grid.from_geojson(f"G{i}-{j}", f"{i}-{j}", "C", "c", square(x0 + i * size, y0 + j * size, size))
        for i in range(10)
        for j in range(10)
    ]
    index = GridIndex(grids)
    assert len(index) == 100
    for i in range(10):
        for j in range(10):
            got = index.locate(x0 + (i + 0.37) * size, y0 + (j + 0.61) * size)
            assert got is not None and got.grid_id == f"G{i}-{j}"
    assert index.locate(x0 - 0.001, y0 + 0.01) is None
    assert index.locate(x0 + 0.01, y0 + 10 * size + 0.001) is None
    assert GridIndex([]).locate(106.5, 29.6) is None


def test_grid_index_concave_grid_spanning_many_buckets_west_and_south() -> None:
    ring = [[-x, -y] for x, y in U_SHAPE]  # negative coordinates: floor() bucket maths
    grid = Grid.from_geojson("U", "u", "C", "c", {"type": "Polygon", "coordinates": [ring]})
    index = GridIndex([grid], cell=0.25)
    assert index.locate(-0.5, -2.0) == grid
    assert index.locate(-1.5, -2.0) is None  # the notch
    assert index.locate(-2.5, -2.5) == grid


def _star(cx: float, cy: float, radius: float, angles: list[float], scales: list[float]) -> list[list[float]]:
    pts = [
        [cx + radius * s * math.cos(a), cy + radius * s * math.sin(a)]
        for a, s in zip(sorted(angles), scales, strict=True)
    ]
    return [*pts, pts[0]]


@st.composite
def polygons(draw: st.DrawFn) -> dict[str, object]:
    """Random simple polygons (star-shaped, often concave), some with a random hole."""
    cx = draw(st.floats(106.40, 106.70))
    cy = draw(st.floats(29.50, 29.80))
    radius = draw(st.floats(0.0005, 0.05))
    n = draw(st.integers(3, 9))
    angles = draw(st.lists(st.floats(0, 2 * math.pi - 1e-3), min_size=n, max_size=n, unique=True))
    scales = draw(st.lists(st.floats(0.2, 1.0), min_size=n, max_size=n))
    rings = [_star(cx, cy, radius, angles, scales)]
    if draw(st.booleans()):
        hole_r = radius * draw(st.floats(0.05, 0.3))
        rings.append(_star(cx, cy, hole_r, [0.0, 2.1, 4.2], [1.0, 1.0, 1.0]))
    return {"type": "Polygon", "coordinates": rings}


points = st.tuples(st.floats(106.35, 106.75), st.floats(29.45, 29.85))


@settings(max_examples=120, deadline=None)
@given(
    st.lists(polygons(), min_size=1, max_size=8),
    st.sampled_from([0.0005, 0.002, 0.005, 0.03, 0.5]),
    st.lists(points, min_size=1, max_size=40),
)
def test_grid_index_agrees_with_brute_force(
    polys: list[dict[str, object]], cell: float, pts: list[tuple[float, float]]
) -> None:
    grids = [Grid.from_geojson(f"G{i}", f"g{i}", "C", "c", p) for i, p in enumerate(polys)]
    index = GridIndex(grids, cell=cell)
    # Also probe each polygon's own vertices and centroid-ish points (edges, bucket seams).
    probes = list(pts)
    for g in grids:
        probes.extend(g.rings[0][:3])
        x0, y0, x1, y1 = g.bbox
        probes.append(((x0 + x1) / 2, (y0 + y1) / 2))
    for lon, lat in probes:
        expected = next((g for g in grids if g.contains(lon, lat)), None)
        assert index.locate(lon, lat) == expected, (lon, lat)


@given(points)
def test_contains_matches_point_in_polygon(pt: tuple[float, float]) -> None:
    grid = Grid.from_geojson("G", "g", "C", "c", square(106.5, 29.6, 0.1))
    assert grid.contains(*pt) == point_in_polygon(*pt, grid.rings)
