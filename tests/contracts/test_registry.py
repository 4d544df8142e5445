"""The registry's contracts: a responder or a camera as the administrator enters it, with a strict
on-duty flag, a closed set of kinds and no blank or NUL-bearing names or skills."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts.kinds import KINDS
from contracts.registry import CameraUpsert, ResponderUpsert

RESPONDER: dict[str, Any] = {"name": "李网格", "kind": "grid_worker", "org": "石桥铺街道", "on_duty": True}


def refused(model: type[ResponderUpsert | CameraUpsert], data: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as exc:
        model.model_validate(data)
    return {".".join(map(str, e["loc"])) for e in exc.value.errors()}


@given(st.sampled_from(KINDS), st.booleans(), st.none() | st.from_regex(r"\AG[0-9]{1,6}\Z"))
def test_every_kind_of_responder_is_accepted(kind: str, on_duty: bool, grid: str | None) -> None:
    data = {**RESPONDER, "kind": kind, "on_duty": on_duty, "grid_id": grid, "skills": [" 急救 ", "消防"]}
    r = ResponderUpsert.model_validate(data)
    assert (r.kind, r.on_duty, r.grid_id, r.skills) == (kind, on_duty, grid, ["急救", "消防"])


@pytest.mark.parametrize("on_duty", ["true", 1, 0, "yes", None])
def test_on_duty_must_be_a_real_boolean(on_duty: object) -> None:
    assert refused(ResponderUpsert, {**RESPONDER, "on_duty": on_duty}) == {"on_duty"}


@pytest.mark.parametrize(
    ("patch", "field"),
    [({"kind": "firefighter"}, "kind"), ({"name": "  "}, "name"), ({"name": "x" * 51}, "name"),
     ({"org": ""}, "org"), ({"grid_id": ".."}, "grid_id"), ({"skills": [" "]}, "skills.0"),
     ({"skills": ["a\x00"]}, "skills"), ({"skills": ["s"] * 51}, "skills"), ({"phone": "1"}, "phone")],
)  # fmt: skip
def test_a_malformed_responder_is_refused_by_name(patch: dict[str, Any], field: str) -> None:
    assert refused(ResponderUpsert, {**RESPONDER, **patch}) == {field}


@given(st.floats(-180, 180), st.floats(-85.05112878, 85.05112878))
def test_a_camera_anywhere_searchable_is_accepted(lon: float, lat: float) -> None:
    cam = CameraUpsert.model_validate({"name": "路口 3 号", "lon": lon, "lat": lat})
    assert (cam.lon, cam.lat) == (lon, lat)


def test_a_camera_off_the_geo_index_or_with_a_string_coordinate_is_refused() -> None:
    assert refused(CameraUpsert, {"name": "x", "lon": "106.5", "lat": 85.06}) == {"lon", "lat"}
    assert refused(CameraUpsert, {"name": "\t", "lon": 1.0, "lat": 1.0}) == {"name"}
