"""ETAs quoted to operators: by kind, proportional to distance."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.kinds import DETOUR_FACTOR, KIND_LABELS, KINDS, SPEED_M_PER_S, eta_seconds


def test_known_etas() -> None:
    # 1 km straight line, 1.3 km on the street: 30 km/h car, 15 km/h e-bike, 5 km/h on foot.
    assert eta_seconds("police", 1000) == 156
    assert eta_seconds("grid_worker", 1000) == 312
    assert eta_seconds("volunteer", 1000) == 936


@pytest.mark.parametrize("kind", KINDS)
def test_zero_distance_is_zero(kind: str) -> None:
    assert eta_seconds(kind, 0) == 0


@given(st.floats(50, 50_000))
def test_police_faster_than_grid_worker_faster_than_volunteer(d: float) -> None:
    assert eta_seconds("police", d) < eta_seconds("grid_worker", d) < eta_seconds("volunteer", d)


@given(st.sampled_from(KINDS), st.floats(0, 50_000), st.integers(2, 10))
def test_proportional_to_distance(kind: str, d: float, k: int) -> None:
    exact = d * DETOUR_FACTOR / SPEED_M_PER_S[kind]
    assert abs(eta_seconds(kind, d) - exact) <= 0.5
    assert abs(eta_seconds(kind, k * d) - k * eta_seconds(kind, d)) <= (k + 1) / 2  # rounding only
    assert isinstance(eta_seconds(kind, d), int)


@given(st.sampled_from(KINDS), st.floats(0, 50_000), st.floats(0, 50_000))
def test_monotone_in_distance(kind: str, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert eta_seconds(kind, lo) <= eta_seconds(kind, hi)


def test_unknown_kind_raises() -> None:
    with pytest.raises(KeyError):
        eta_seconds("firefighter", 100)


def test_kinds_are_labelled_and_have_speeds() -> None:
    assert set(KINDS) == set(KIND_LABELS) == set(SPEED_M_PER_S)
