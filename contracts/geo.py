"""Geography: great-circle distance and locating a point in the street's grids.

Grids are GeoJSON polygons loaded once by each worker; lookups go through a coarse bucket
index over bounding boxes and then an exact ray-casting test, so locating a point costs a few
polygon tests whatever the number of grids.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Redis's GEO commands use this radius; using the same keeps our figures and Redis's equal.
EARTH_RADIUS_M = 6372797.560856

Ring = Sequence[tuple[float, float]]


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres between two WGS-84 points."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def point_in_ring(lon: float, lat: float, ring: Ring) -> bool:
    """Even-odd ray casting; points exactly on an edge may fall either side."""
    inside = False
    n = len(ring)
    j = n - 1
    for i in range(n):
        xi, yi = ring[i]
        xj, yj = ring[j]
        if (yi > lat) != (yj > lat):
            x_cross = xi + (lat - yi) * (xj - xi) / (yj - yi)
            if lon < x_cross:
                inside = not inside
        j = i
    return inside


def point_in_polygon(lon: float, lat: float, rings: Sequence[Ring]) -> bool:
    """GeoJSON polygon semantics: inside the outer ring and outside every hole."""
    if not rings or not point_in_ring(lon, lat, rings[0]):
        return False
    return not any(point_in_ring(lon, lat, hole) for hole in rings[1:])


@dataclass(frozen=True, slots=True)
class Grid:
    grid_id: str
    name: str
    community_id: str
    community_name: str
    rings: tuple[tuple[tuple[float, float], ...], ...]
    bbox: tuple[float, float, float, float]  # min_lon, min_lat, max_lon, max_lat

    @classmethod
    def from_geojson(
        cls, grid_id: str, name: str, community_id: str, community_name: str, polygon: dict[str, object]
    ) -> Grid:
        if polygon.get("type") != "Polygon":
            raise ValueError(f"grid {grid_id}: expected a GeoJSON Polygon, got {polygon.get('type')!r}")
        coords = polygon["coordinates"]
        assert isinstance(coords, list)
        rings = tuple(tuple((float(x), float(y)) for x, y, *_ in ring) for ring in coords)
        xs = [p[0] for p in rings[0]]
        ys = [p[1] for p in rings[0]]
        return cls(grid_id, name, community_id, community_name, rings, (min(xs), min(ys), max(xs), max(ys)))

    def contains(self, lon: float, lat: float) -> bool:
        x0, y0, x1, y1 = self.bbox
        return x0 <= lon <= x1 and y0 <= lat <= y1 and point_in_polygon(lon, lat, self.rings)


class GridIndex:
    """Finds the grid containing a point. Buckets are `cell` degrees square."""

    def __init__(self, grids: Iterable[Grid], cell: float = 0.005) -> None:
        self._cell = cell
        self._buckets: dict[tuple[int, int], list[Grid]] = defaultdict(list)
        self.grids: dict[str, Grid] = {}
        for grid in grids:
            self.grids[grid.grid_id] = grid
            x0, y0, x1, y1 = grid.bbox
            for bx in range(self._b(x0), self._b(x1) + 1):
                for by in range(self._b(y0), self._b(y1) + 1):
                    self._buckets[(bx, by)].append(grid)

    def _b(self, v: float) -> int:
        return math.floor(v / self._cell)

    def locate(self, lon: float, lat: float) -> Grid | None:
        for grid in self._buckets.get((self._b(lon), self._b(lat)), ()):
            if grid.contains(lon, lat):
                return grid
        return None

    def __len__(self) -> int:
        return len(self.grids)
