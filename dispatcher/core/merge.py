"""Merging duplicates across channels: is a new report the same event as an open incident? Pure.

A camera's smoke alarm, a 12345 caller's fire report and a resident's 随手拍 photo of the same
fire are one incident. A new sighting duplicates an open incident when all of these hold:

- same category *family* (`CATEGORIES[code].family`), and the family is not "other" (an
  uncategorised report, or an unknown category code, never merges automatically);
- within `radius_m` metres (great-circle, inclusive);
- within `window` of each other in time, either direction (inclusive): a late-filed hotline
  ticket may describe an event older than the camera alarm;
- the target is open: not closed, cancelled or merged;
- the target is not the new incident itself.

Among several candidates the best is the one with the lowest score
`distance / radius_m + |time apart| / window`; ties go to the earliest `occurred_at`, then the
smallest incident id, so the answer does not depend on the order of the candidates.

The caller prefilters candidates in SQL with `bbox_for` and the time window, then asks here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from contracts.categories import CATEGORIES
from contracts.geo import EARTH_RADIUS_M, haversine_m
from contracts.states import IncidentState

DEFAULT_RADIUS_M: Final = 300.0
DEFAULT_WINDOW: Final = timedelta(minutes=60)
NEVER_MERGES: Final = "other"
# States an incident can no longer absorb reports in.
_S = IncidentState
NOT_OPEN: Final = frozenset(s.value for s in (_S.CLOSED, _S.CANCELLED, _S.MERGED))
FAMILY_LABELS: Final = {
    "fire": "火情",
    "public_order": "治安秩序",
    "medical": "人员救助",
    "public_safety": "公共安全",
    "traffic": "交通秩序",
    "city_appearance": "市容秩序",
    "sanitation": "环境卫生",
    "utilities": "水电气暖",
    "public_facility": "公共设施",
    "environment": "环境扰民",
    "other": "其他",
}


@dataclass(frozen=True, slots=True)
class Sighting:
    """What merging needs to know about an incident (the new one, or an open candidate)."""

    incident_id: str
    source: str  # camera | hotline | app
    category: str
    lon: float
    lat: float
    occurred_at: datetime
    status: str  # an IncidentState value


@dataclass(frozen=True, slots=True)
class Match:
    incident_id: str  # the open incident the new report belongs to
    distance_m: float
    minutes_apart: float  # absolute
    reason: str  # Chinese, for the operator's timeline
    score: float = 0.0  # lower is closer; see the module docstring


def family_of(category: str) -> str | None:
    """The category's family, or None for an unknown code."""
    cat = CATEGORIES.get(category)
    return None if cat is None else cat.family


def is_open(status: str) -> bool:
    return status not in NOT_OPEN


def _mergeable_family(new: Sighting, old: Sighting) -> str | None:
    family = family_of(new.category)
    if family is None or family == NEVER_MERGES or family_of(old.category) != family:
        return None
    return family


def find_duplicate(
    new: Sighting,
    open_incidents: Sequence[Sighting],
    *,
    radius_m: float = DEFAULT_RADIUS_M,
    window: timedelta = DEFAULT_WINDOW,
) -> Match | None:
    """The open incident `new` duplicates, or None. Candidates failing any rule are skipped."""
    if not radius_m > 0:
        raise ValueError(f"radius_m must be positive, got {radius_m}")
    if window <= timedelta(0):
        raise ValueError(f"window must be positive, got {window}")
    best: tuple[tuple[float, datetime, str], Match] | None = None
    for old in open_incidents:
        if old.incident_id == new.incident_id or not is_open(old.status):
            continue
        family = _mergeable_family(new, old)
        if family is None:
            continue
        apart = abs(new.occurred_at - old.occurred_at)
        if apart > window:
            continue
        distance = haversine_m(new.lon, new.lat, old.lon, old.lat)
        if distance > radius_m:
            continue
        score = distance / radius_m + apart / window
        rank = (score, old.occurred_at, old.incident_id)
        if best is None or rank < best[0]:
            minutes = apart.total_seconds() / 60
            reason = _reason(family, distance, minutes)
            best = (rank, Match(old.incident_id, distance, minutes, reason, score))
    return None if best is None else best[1]


def _reason(family: str, distance_m: float, minutes: float) -> str:
    """E.g. "同类事件（火情），相距120米，时间相差8分钟"."""
    label = FAMILY_LABELS.get(family, family)
    where = f"相距{round(distance_m)}米"
    when = f"时间相差{round(minutes)}分钟" if minutes >= 0.5 else "时间相差不到1分钟"
    return f"同类事件（{label}），{where}，{when}"


def bbox_for(lon: float, lat: float, radius_m: float) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat) holding every point within `radius_m` of (lon, lat).

    Exact for a sphere (the latitude-circle tangent points, not `radius / cos(lat)`), with a tiny
    margin for rounding. Near a pole, or across the antimeridian, the longitude range widens to
    [-180, 180] rather than split into two boxes, so it stays a superset.
    """
    if radius_m < 0:
        raise ValueError(f"radius_m must be >= 0, got {radius_m}")
    margin = 1e-9
    delta = radius_m / EARTH_RADIUS_M  # angular radius, radians
    phi = math.radians(lat)
    dlat = math.degrees(delta) + margin
    min_lat, max_lat = lat - dlat, lat + dlat
    if max_lat >= 90 or min_lat <= -90 or delta >= math.pi / 2:
        return (-180.0, max(min_lat, -90.0), 180.0, min(max_lat, 90.0))
    ratio = math.sin(delta) / math.cos(phi)
    if ratio >= 1:
        return (-180.0, min_lat, 180.0, max_lat)
    dlon = math.degrees(math.asin(ratio)) + margin
    min_lon, max_lon = lon - dlon, lon + dlon
    if min_lon < -180 or max_lon > 180:
        return (-180.0, min_lat, 180.0, max_lat)
    return (min_lon, min_lat, max_lon, max_lat)


CELL_DEG: Final = 0.01  # ~1.1 km by ~0.9 km here: a 300-m merge circle touches one to four
WHOLE_WORLD_CELL: Final = -(2**31)  # one cell for circles too wide to count cells for (poles, huge radii)
_MAX_CELLS: Final = 16


def merge_cells(lon: float, lat: float, radius_m: float) -> tuple[int, ...]:
    """Ids (int32, ascending) of the grid cells the merge box around a place touches.

    Two filings that could merge (within `radius_m`) always share a cell: the later one's place
    lies in the earlier one's box, so its own cell is in both sets. The dispatcher files each
    incident holding a lock on every cell of its set (taken in this order, so two filings never
    wait on each other in a cycle), which makes filings that could merge go one after the
    other: the later one's duplicate check sees the earlier one, however the records were
    spread over partitions and lanes."""
    x0, y0, x1, y1 = bbox_for(lon, lat, radius_m)
    cx0, cx1 = math.floor(x0 / CELL_DEG), math.floor(x1 / CELL_DEG)
    cy0, cy1 = math.floor(y0 / CELL_DEG), math.floor(y1 / CELL_DEG)
    if (cx1 - cx0 + 1) * (cy1 - cy0 + 1) > _MAX_CELLS:
        return (WHOLE_WORLD_CELL,)
    span = round(180 / CELL_DEG) + 2  # distinct ids for every latitude cell of one column
    return tuple(sorted(cx * span + cy for cx in range(cx0, cx1 + 1) for cy in range(cy0, cy1 + 1)))
