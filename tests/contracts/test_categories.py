"""The incident vocabulary and the severity rules (分级响应)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.categories import (
    CAMERA_ALARM_TYPES,
    CATEGORIES,
    HOTLINE_TIME_LIMITS,
    SEVERITY_LABELS,
    Category,
    severity_for,
)

CJK = re.compile(r"[\u4e00-\u9fff]")
SEVERE = [c for c in CATEGORIES.values() if c.severity <= 2]
MILD = [c for c in CATEGORIES.values() if c.severity > 2]
TIME_LIMIT_CEILING = {"2h": 2, "24h": 3, "7d": 4, "15d": 4}


def test_every_category_has_a_chinese_label_a_family_and_a_severity() -> None:
    assert CATEGORIES
    for code, cat in CATEGORIES.items():
        assert cat.code == code
        assert CJK.search(cat.label), f"{code}: label {cat.label!r} is not Chinese"
        assert cat.family and cat.family.strip() == cat.family
        assert cat.severity in SEVERITY_LABELS
    assert len({c.label for c in CATEGORIES.values()}) == len(CATEGORIES)  # labels tell them apart


def test_camera_alarm_types_cover_the_design() -> None:
    # DESIGN.md: crowd gathering, fight, smoke/fire, person fallen, high-altitude throwing,
    # illegal parking, street vending, garbage overflow, intrusion.
    assert set(CAMERA_ALARM_TYPES) == {
        "crowd_gathering", "fight", "smoke_fire", "person_fallen", "high_altitude_throwing",
        "illegal_parking", "street_vending", "garbage_overflow", "intrusion",
    }  # fmt: skip
    assert all(CATEGORIES[t].camera for t in CAMERA_ALARM_TYPES)


def test_families_group_across_channels() -> None:
    # A camera's smoke alarm and a caller's gas leak are the same family (merging keys on it).
    assert CATEGORIES["smoke_fire"].family == CATEGORIES["gas_leak"].family
    assert CATEGORIES["fight"].family == CATEGORIES["neighbour_dispute"].family


def test_hotline_time_limits() -> None:
    assert {k: v.total_seconds() for k, v in HOTLINE_TIME_LIMITS.items()} == {
        "2h": 2 * 3600, "24h": 24 * 3600, "7d": 7 * 86400, "15d": 15 * 86400,
    }  # fmt: skip


@pytest.mark.parametrize("code", list(CATEGORIES))
def test_base_severity_without_hints(code: str) -> None:
    assert severity_for(code) == CATEGORIES[code].severity


@pytest.mark.parametrize("cat", SEVERE, ids=lambda c: c.code)
def test_confident_alarm_of_a_severe_kind_goes_up_one_level(cat: Category) -> None:
    code, base = cat.code, cat.severity
    assert severity_for(code, confidence=0.9) == max(1, base - 1)  # 0.9 is enough
    assert severity_for(code, confidence=1.0) == max(1, base - 1)
    assert severity_for(code, confidence=0.8999) == base
    assert severity_for(code, confidence=0.0) == base


@pytest.mark.parametrize("cat", MILD, ids=lambda c: c.code)
def test_confidence_never_bumps_mild_categories(cat: Category) -> None:
    code, base = cat.code, cat.severity
    assert severity_for(code, confidence=1.0) == base


def test_examples() -> None:
    assert severity_for("smoke_fire", confidence=0.91) == 1
    assert severity_for("crowd_gathering", confidence=0.99) == 3
    assert severity_for("gas_leak", confidence=0.99) == 1  # clamped at I
    assert severity_for("cooking_fumes", time_limit="2h") == 2
    assert severity_for("cooking_fumes", time_limit="24h") == 3
    assert severity_for("cooking_fumes", time_limit="7d") == 4
    assert severity_for("gas_leak", time_limit="15d") == 1  # a slow class never lowers severity


@pytest.mark.parametrize("code", list(CATEGORIES))
@pytest.mark.parametrize("limit", list(HOTLINE_TIME_LIMITS))
def test_hotline_time_limit_floors(code: str, limit: str) -> None:
    assert severity_for(code, time_limit=limit) == min(CATEGORIES[code].severity, TIME_LIMIT_CEILING[limit])


def test_unknown_category_or_time_limit_raise() -> None:
    with pytest.raises(KeyError):
        severity_for("not_a_category")
    with pytest.raises(KeyError):
        severity_for("noise", time_limit="3d")


@given(
    st.sampled_from(list(CATEGORIES)),
    st.none() | st.floats(0, 1),
    st.none() | st.sampled_from(list(HOTLINE_TIME_LIMITS)),
)
def test_severity_always_clamped_and_never_milder_than_base(
    code: str, confidence: float | None, limit: str | None
) -> None:
    level = severity_for(code, confidence=confidence, time_limit=limit)
    assert 1 <= level <= 4
    assert level <= CATEGORIES[code].severity  # hints only ever sharpen
