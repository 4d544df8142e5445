"""Responder kinds, their travel speeds and the ETA we quote operators.

ETA is straight-line distance stretched by a street-network detour factor, over the kind's
typical urban speed: a patrol car, a grid worker's e-bike, a volunteer on foot.
"""

from __future__ import annotations

from typing import Final, Literal

ResponderKind = Literal["police", "grid_worker", "volunteer"]
KINDS: Final[tuple[ResponderKind, ...]] = ("police", "grid_worker", "volunteer")
KIND_LABELS: Final = {"police": "民警", "grid_worker": "网格员", "volunteer": "志愿者"}

SPEED_M_PER_S: Final[dict[str, float]] = {
    "police": 30 / 3.6,  # patrol car in town, 30 km/h
    "grid_worker": 15 / 3.6,  # e-bike, 15 km/h
    "volunteer": 5 / 3.6,  # on foot, 5 km/h
}
DETOUR_FACTOR: Final = 1.3

AVAILABLE: Final = "available"


def eta_seconds(kind: str, distance_m: float) -> int:
    """Seconds to reach a point `distance_m` away in a straight line."""
    return round(distance_m * DETOUR_FACTOR / SPEED_M_PER_S[kind])
