"""`positions.raw`: what one fix must be, alone or in a batch, and a bad fix in a batch named by its
index and field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts.positions import PositionBatch, PositionFix

FIX: dict[str, Any] = {"responder_id": "GW-1", "lon": 106.55, "lat": 29.56, "at": "2026-12-05T09:30:00+08:00"}


def problems(model: type[PositionFix | PositionBatch], data: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as exc:
        model.model_validate(data)
    return {".".join(map(str, e["loc"])) for e in exc.value.errors()}


@given(st.none() | st.floats(0, 100_000))
def test_a_fix_with_or_without_a_plausible_accuracy_is_accepted(accuracy: float | None) -> None:
    fix = PositionFix.model_validate({**FIX, "accuracy_m": accuracy})
    assert (fix.responder_id, fix.lon, fix.lat, fix.accuracy_m) == ("GW-1", 106.55, 29.56, accuracy)


@pytest.mark.parametrize("accuracy", [-0.5, 100_000.5, True, "5", float("nan")])
def test_an_implausible_accuracy_is_refused(accuracy: object) -> None:
    assert problems(PositionFix, {**FIX, "accuracy_m": accuracy}) == {"accuracy_m"}


@pytest.mark.parametrize(
    ("patch", "field"),
    [({"at": "2026-12-05T09:30:00"}, "at"), ({"lat": 85.1}, "lat"), ({"lon": False}, "lon"),
     ({"responder_id": "../GW-1"}, "responder_id"), ({"speed": 3}, "speed")],
)  # fmt: skip
def test_a_malformed_fix_is_refused_by_name(patch: dict[str, Any], field: str) -> None:
    assert problems(PositionFix, {**FIX, **patch}) == {field}


@given(st.integers(1, 1000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_a_bad_fix_in_a_batch_is_named_by_its_index(case: tuple[int, int]) -> None:
    size, bad = case
    fixes = [FIX] * size
    fixes[bad] = {**FIX, "lat": 91.0}
    assert problems(PositionBatch, {"positions": fixes}) == {f"positions.{bad}.lat"}


def test_a_batch_holds_one_to_a_thousand_fixes() -> None:
    assert len(PositionBatch.model_validate({"positions": [FIX] * 1000}).positions) == 1000
    assert problems(PositionBatch, {"positions": []}) == {"positions"}
    assert problems(PositionBatch, {"positions": [FIX] * 1001}) == {"positions"}
