"""Response plans (预案): the shipped plans.yaml, layering and fallbacks, and validation errors."""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from contracts.categories import CAMERA_ALARM_TYPES, CAMERA_RESPONSE_LIMIT, CATEGORIES
from contracts.kinds import KINDS
from devtools import city as democity
from dispatcher.core.clock import PLANNED_STEPS, STEP_LABELS, ClockStatus, Step
from dispatcher.core.plan import (
    DEFAULT_PATH,
    SEVERITIES,
    SKILL_LABELS,
    SKILLS,
    Plan,
    PlanBook,
    RoleNeed,
    StepLimits,
    format_duration,
    load_plans,
    parse_duration,
    parse_plans,
)


@pytest.fixture(scope="module")
def book() -> PlanBook:
    return load_plans()


def kinds(plan: Plan) -> dict[str, int]:
    return {r.kind: r.count for r in plan.roles}


ALL = [(c, s) for c in CATEGORIES for s in SEVERITIES]


# --- the shipped file ------------------------------------------------------------------------


def test_shipped_file_loads_and_covers_every_category(book: PlanBook) -> None:
    assert load_plans(DEFAULT_PATH) == book
    assert book.source == str(DEFAULT_PATH)
    assert book.categories == set(CATEGORIES)  # every category has a plan of its own


@pytest.mark.parametrize(("category", "severity"), ALL)
def test_every_shipped_plan_is_sound(book: PlanBook, category: str, severity: int) -> None:
    plan = book.plan_for(category, severity)
    assert (plan.category, plan.severity) == (category, severity)
    assert plan.roles and all(r.kind in KINDS and r.count >= 1 for r in plan.roles)
    assert [r.kind for r in plan.roles] == sorted({r.kind for r in plan.roles}, key=KINDS.index)
    assert all(r.skills <= SKILLS for r in plan.roles)
    assert 0 < plan.warning_ratio < 1
    assert 0 < plan.accept_timeout_s <= plan.limits.accept
    assert all(plan.limit_s(step) > 0 for step in PLANNED_STEPS)
    assert plan.describe()


def test_the_design_plans(book: PlanBook) -> None:
    smoke = book.plan_for("smoke_fire", 2)
    assert smoke.describe() == "民警1名、网格员1名、志愿者2名"
    assert smoke.role("volunteer") == RoleNeed("volunteer", 2, frozenset({"fire_safety"}), False)
    assert smoke.role("grid_worker") == RoleNeed("grid_worker", 1, frozenset(), True)
    fallen = book.plan_for("person_fallen", 2)
    assert kinds(fallen) == {"grid_worker": 1, "volunteer": 1}
    assert fallen.role("volunteer") == RoleNeed("volunteer", 1, frozenset({"first_aid"}))
    assert book.plan_for("cooking_fumes", 4).describe() == "网格员1名"
    assert kinds(book.plan_for("fight", 2)) == {"police": 2, "grid_worker": 1}
    crowd = book.plan_for("crowd_gathering", 3)  # 一支一警: one officer with a volunteer team
    assert (crowd.name, kinds(crowd)) == ("一支一警", {"police": 1, "volunteer": 3})
    gas = book.plan_for("gas_leak", 1)  # "1+3+N" grid forces
    assert gas.name == "1+3+N" and gas.need("police") == 1 and gas.need("grid_worker") == 3
    assert gas.need("volunteer") >= 1


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_graded_response_more_severe_is_faster(book: PlanBook, category: str) -> None:
    plans = [book.plan_for(category, s) for s in SEVERITIES]
    for step in PLANNED_STEPS:
        limits = [p.limit_s(step) for p in plans]
        assert limits == sorted(limits), (category, step)
    # Levels I and II answer faster than III and IV.
    for urgent in plans[:2]:
        for routine in plans[2:]:
            assert urgent.limit_s(Step.DISPATCH) < routine.limit_s(Step.DISPATCH)
            total = [sum(p.limit_s(s) for s in PLANNED_STEPS) for p in (urgent, routine)]
            assert total[0] < total[1]
            assert urgent.accept_timeout_s <= routine.accept_timeout_s


@pytest.mark.parametrize(("category", "severity"), [(c, s) for c in CAMERA_ALARM_TYPES for s in SEVERITIES])
def test_camera_alarms_are_answered_in_minutes(book: PlanBook, category: str, severity: int) -> None:
    plan = book.plan_for(category, severity)
    assert plan.limit_s(Step.DISPATCH) <= 120
    to_scene = sum(plan.limit_s(s) for s in (Step.DISPATCH, Step.ACCEPT, Step.ARRIVE))
    assert to_scene <= CAMERA_RESPONSE_LIMIT.total_seconds()


def test_skills_match_the_registry() -> None:
    registry = {"patrol", "inspection", *democity.POLICE_SKILLS, *democity.VOLUNTEER_SKILLS}
    assert registry | set(democity.GRID_WORKER_SKILLS) == SKILLS == set(SKILL_LABELS)


def test_every_wanted_skill_exists_in_the_demo_city(book: PlanBook) -> None:
    held: dict[str, set[str]] = {k: set() for k in KINDS}
    for r in democity.generate_city().responders:
        if r.on_duty:
            held[r.kind].update(r.skills)
    for category, severity in ALL:
        for role in book.plan_for(category, severity).roles:
            assert role.skills <= held[role.kind], (category, severity, role)


# --- layers and fallbacks ----------------------------------------------------------------------

LIMITS = {"dispatch": "30m", "accept": "30m", "arrive": "2h", "resolve": "7d", "verify": "2d"}


def base_doc(**plans: Any) -> dict[str, Any]:
    return {
        "defaults": {
            "roles": [{"kind": "grid_worker", "count": 1}],
            "accept_timeout_s": 300,
            "warning_ratio": 0.8,
            "limits": dict(LIMITS),
        },
        "plans": plans,
    }


def write(tmp_path: Path, data: object, name: str = "plans.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def test_fallback_order(tmp_path: Path) -> None:
    doc = base_doc(
        smoke_fire={
            "name": "烟火预案",
            "roles": [{"kind": "police", "count": 1}, {"kind": "volunteer", "count": 2}],
            "accept_timeout_s": "2m",
            "limits": {"dispatch": "5m", "arrive": "20m"},
            "severity": {
                1: {
                    "name": "1+3+N",
                    "roles": [{"kind": "police", "count": 1}, {"kind": "grid_worker", "count": 3}],
                },
                4: {"limits": {"arrive": "25m"}, "warning_ratio": 0.5},
            },
        },
    )
    doc["defaults"]["severity"] = {
        1: {"accept_timeout_s": 60, "limits": {"dispatch": "1m", "accept": "2m"}},
        2: {"roles": [{"kind": "police", "count": 1}], "limits": {"dispatch": "2m"}},
    }
    book = load_plans(write(tmp_path, doc))

    # Category + severity override wins for people; defaults.severity beats the category for clocks.
    p1 = book.plan_for("smoke_fire", 1)
    assert (p1.name, kinds(p1)) == ("1+3+N", {"police": 1, "grid_worker": 3})
    assert (p1.accept_timeout_s, p1.limits.dispatch, p1.limits.accept) == (60, 60, 120)
    assert p1.limits.arrive == 20 * 60  # the category's own, where the severity says nothing
    # Without an override of its own, the category's people beat defaults.severity's.
    p2 = book.plan_for("smoke_fire", 2)
    assert (p2.name, kinds(p2)) == ("烟火预案", {"police": 1, "volunteer": 2})
    assert (p2.limits.dispatch, p2.accept_timeout_s) == (120, 120)
    p3 = book.plan_for("smoke_fire", 3)  # the category's clocks, over the defaults
    assert p3.limits == StepLimits(300, 1800, 1200, 7 * 86400, 2 * 86400) and p3.warning_ratio == 0.8
    p4 = book.plan_for("smoke_fire", 4)
    assert (p4.limits.arrive, p4.limits.dispatch, p4.warning_ratio) == (25 * 60, 5 * 60, 0.5)

    # A category without a plan: defaults, then defaults.severity.
    fumes1, fumes2, fumes4 = (book.plan_for("cooking_fumes", s) for s in (1, 2, 4))
    assert fumes1.category == "cooking_fumes" and fumes1.name == ""
    assert kinds(fumes1) == {"grid_worker": 1} and fumes1.limits.dispatch == 60
    assert kinds(fumes2) == {"police": 1}  # defaults.severity.2's roles
    assert fumes4 == Plan(
        "cooking_fumes", 4, (RoleNeed("grid_worker", 1, frozenset(), True),), 300,
        StepLimits(1800, 1800, 7200, 7 * 86400, 2 * 86400), 0.8,
    )  # fmt: skip
    assert book.categories == {"smoke_fire"}
    # Anything else, even a category this build does not know, gets the default plan.
    assert book.plan_for("volcano", 4) == replace(fumes4, category="volcano")


@pytest.mark.parametrize("severity", [0, 5, -1, True, "2"])
def test_plan_for_refuses_a_bad_severity(book: PlanBook, severity: Any) -> None:
    with pytest.raises(ValueError, match="severity"):
        book.plan_for("smoke_fire", severity)


def test_roles_are_put_in_kind_order_and_own_grid_defaults(tmp_path: Path) -> None:
    doc = base_doc(
        fight={
            "roles": [
                {"kind": "volunteer", "count": 2, "skills": ["patrol", "first_aid", "patrol"]},
                {"kind": "grid_worker", "count": 1, "prefer_own_grid": False},
                {"kind": "police", "count": 2},
            ]
        }
    )
    plan = load_plans(write(tmp_path, doc)).plan_for("fight", 2)
    assert plan.roles == (
        RoleNeed("police", 2, frozenset(), False),
        RoleNeed("grid_worker", 1, frozenset(), False),
        RoleNeed("volunteer", 2, frozenset({"patrol", "first_aid"}), False),
    )
    assert plan.describe() == "民警2名、网格员1名、志愿者2名"


def test_anchors_and_merge_keys_work_and_duplicate_keys_do_not(tmp_path: Path) -> None:
    text = """
defaults:
  roles: [{kind: grid_worker, count: 1}]
  accept_timeout_s: 5m
  warning_ratio: 0.8
  limits: &base {dispatch: 30m, accept: 30m, arrive: 2h, resolve: 7d, verify: 2d}
plans:
  noise:
    limits: {<<: *base, resolve: 3d}
    severity:
      1: &urgent {roles: [{kind: police, count: 1}]}
      2: *urgent
"""
    path = tmp_path / "ok.yaml"
    path.write_text(text, encoding="utf-8")
    book = load_plans(path)
    assert book.plan_for("noise", 4).limits.resolve == 3 * 86400
    assert kinds(book.plan_for("noise", 2)) == {"police": 1}

    path.write_text(text + "  noise:\n    roles: [{kind: police, count: 9}]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"ok\.yaml: not valid YAML: .*duplicate key 'noise'"):
        load_plans(path)


# --- validation errors name their place ----------------------------------------------------------


def put(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `doc` with the value at a dotted path (numbers index lists) set, or removed."""
    doc = copy.deepcopy(doc)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = doc
    for part in parents:
        if isinstance(node, dict) and part not in node:
            node[part] = {}
        node = node[part]
    if value is DROP:
        del node[last]
    else:
        node[last] = value
    return doc


DROP = object()
GOOD = base_doc(
    smoke_fire={
        "roles": [
            {"kind": "police", "count": 1},
            {"kind": "volunteer", "count": 2, "skills": ["fire_safety"]},
        ],
        "severity": {2: {"roles": [{"kind": "police", "count": 1}]}},
    }
)
BAD = [
    ("plans.smoke_fire.severity.2.roles.0.kind", "firefighter",
     "plans.smoke_fire.severity.2.roles[0].kind: unknown kind 'firefighter'"),
    ("plans.volcano", {"roles": []}, "plans.volcano: unknown category 'volcano'"),
    ("plans.smoke_fire.roles.0.count", 0, "plans.smoke_fire.roles[0].count: must be a whole number 1..50"),
    ("plans.smoke_fire.roles.0.count", 51, "plans.smoke_fire.roles[0].count: must be a whole number"),
    ("plans.smoke_fire.roles.0.count", "two", "plans.smoke_fire.roles[0].count: must be a whole number"),
    ("plans.smoke_fire.roles.0.count", True, "plans.smoke_fire.roles[0].count: must be a whole number"),
    ("plans.smoke_fire.roles.0.count", DROP, "plans.smoke_fire.roles[0].count: must be a whole number"),
    ("plans.smoke_fire.roles.0.kind", DROP, "plans.smoke_fire.roles[0].kind: missing"),
    ("plans.smoke_fire.roles.1.skills", ["swimming"],
     "plans.smoke_fire.roles[1].skills[0]: unknown skill 'swimming'"),
    ("plans.smoke_fire.roles.1.skills", [{"a": 1}],
     "plans.smoke_fire.roles[1].skills[0]: unknown skill {'a': 1}"),
    ("plans.smoke_fire.roles.1.skills", "fire_safety", "plans.smoke_fire.roles[1].skills: expected a list"),
    ("plans.smoke_fire.roles.0.prefer_own_grid", True,
     "plans.smoke_fire.roles[0].prefer_own_grid: only a grid_worker role"),
    ("plans.smoke_fire.roles.0.prefer_own_grid", "yes",
     "plans.smoke_fire.roles[0].prefer_own_grid: must be true"),
    ("plans.smoke_fire.roles.0.radius", 500, "plans.smoke_fire.roles[0].radius: unknown key"),
    ("plans.smoke_fire.roles.1.kind", "police", "plans.smoke_fire.roles[1].kind: police already listed in"),
    ("plans.smoke_fire.roles.0", "police", "plans.smoke_fire.roles[0]: expected a mapping"),
    ("plans.smoke_fire.roles", [], "plans.smoke_fire.roles: expected a non-empty list"),
    ("plans.smoke_fire.roles", None, "plans.smoke_fire.roles: expected a non-empty list"),
    ("plans.smoke_fire.rolez", [], "plans.smoke_fire.rolez: unknown key"),
    ("plans.smoke_fire.name", 7, "plans.smoke_fire.name: must be text"),
    ("plans.smoke_fire.limits.travel", "5m", "plans.smoke_fire.limits.travel: unknown key"),
    ("plans.smoke_fire.limits.arrive", "5 minutes", "plans.smoke_fire.limits.arrive: expected seconds or a"),
    ("plans.smoke_fire.limits.arrive", 0, "plans.smoke_fire.limits.arrive: must be positive"),
    ("plans.smoke_fire.limits.arrive", -5, "plans.smoke_fire.limits.arrive: must be positive"),
    ("plans.smoke_fire.limits.arrive", 1.5, "plans.smoke_fire.limits.arrive: expected seconds"),
    ("plans.smoke_fire.limits.arrive", True, "plans.smoke_fire.limits.arrive: expected seconds"),
    ("plans.smoke_fire.limits", [1, 2], "plans.smoke_fire.limits: expected a mapping"),
    ("plans.smoke_fire.accept_timeout_s", "", "plans.smoke_fire.accept_timeout_s: expected seconds"),
    ("plans.smoke_fire.warning_ratio", 1.2,
     "plans.smoke_fire.warning_ratio: must be a number between 0 and 1"),
    ("plans.smoke_fire.warning_ratio", 0, "plans.smoke_fire.warning_ratio: must be a number"),
    ("plans.smoke_fire.warning_ratio", "high", "plans.smoke_fire.warning_ratio: must be a number"),
    ("plans.smoke_fire.severity.5", {}, "plans.smoke_fire.severity.5: a severity must be 1, 2, 3 or 4"),
    ("plans.smoke_fire.severity.I", {}, "plans.smoke_fire.severity.I: a severity must be"),
    ("plans.smoke_fire.severity.2.severity", {}, "plans.smoke_fire.severity.2.severity: unknown key"),
    ("plans.smoke_fire.severity.2.roles.0.count", 0, "plans.smoke_fire.severity.2.roles[0].count"),
    ("plans.smoke_fire.accept_timeout_s", "1h",
     "plans.smoke_fire (severity 1): accept_timeout_s 1h exceeds limits.accept 30m"),
    ("plans.smoke_fire.severity.1.limits", {"resolve": "8d"},
     "plans.smoke_fire: severity 1 allows 8d for resolve, more than severity 2's 7d"),
    ("defaults.severity.3.limits", {"dispatch": "1h"},
     "defaults: severity 3 allows 1h for dispatch, more than severity 4's 30m"),
    ("defaults.limits.verify", DROP, "defaults.limits.verify: missing"),
    ("defaults.roles", DROP, "defaults.roles: missing"),
    ("defaults.accept_timeout_s", DROP, "defaults.accept_timeout_s: missing"),
    ("defaults.warning_ratio", DROP, "defaults.warning_ratio: missing"),
    ("defaults.roles.0.kind", "firefighter", "defaults.roles[0].kind: unknown kind"),
    ("defaults", DROP, "defaults: missing"),
    ("defaults", "all", "defaults: expected a mapping"),
    ("plans", ["smoke_fire"], "plans: expected a mapping"),
    ("version", 2, "(top level).version: unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_validation_errors_name_the_path(tmp_path: Path, path: str, value: Any, message: str) -> None:
    load_plans(write(tmp_path, GOOD))  # the starting point is valid
    file = write(tmp_path, put(GOOD, path, value))
    with pytest.raises(ValueError, match=re.escape(f"{file}: {message}")):
        load_plans(file)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("- a\n- b\n", "(top level): expected a mapping"),
        ("defaults: {roles: [}\n", "not valid YAML"),
        ("defaults: !!python/object:os.system {}\n", "not valid YAML"),
    ],
)
def test_unreadable_documents(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "plans.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(message)):
        load_plans(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read plans"):
        load_plans(tmp_path / "nope.yaml")


def test_parse_plans_names_its_source() -> None:
    with pytest.raises(ValueError, match=r"^<test>: defaults: missing$"):
        parse_plans({"plans": {}}, "<test>")
    assert parse_plans(GOOD).plan_for("smoke_fire", 2).describe() == "民警1名"


# --- durations and clocks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (45, 45),
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("1h30m", 5400),
        ("7d", 604_800),
        (" 1d2h3m4s ", 93_784),
    ],
)
def test_parse_duration(value: object, seconds: int) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["", "m", "15", "15 m", "1.5h", "2h1d", "-1m", None, 1.0, False, [], "0s", 0]
)
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError, match=r"duration|positive"):
        parse_duration(value)


@given(st.integers(0, 30), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))
def test_duration_units_add_up(d: int, h: int, m: int, s: int) -> None:
    total = d * 86_400 + h * 3600 + m * 60 + s
    text = "".join(f"{n}{u}" for n, u in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if n) or "0s"
    assert format_duration(total) == text
    if total:
        assert parse_duration(text) == total == parse_duration(total)


def test_plan_clock() -> None:
    plan = Plan("fight", 2, (RoleNeed("police", 2),), 90, StepLimits(120, 180, 600, 7200, 28800), 0.75)
    assert plan.warning_s(Step.ARRIVE) == 450 and plan.limit_s(Step.ARRIVE) == 600
    assert plan.clock(Step.ARRIVE, 0) is ClockStatus.OK
    assert plan.clock(Step.ARRIVE, 449.9) is ClockStatus.OK
    assert plan.clock(Step.ARRIVE, 450) is ClockStatus.AT_RISK
    assert plan.clock(Step.ARRIVE, 599) is ClockStatus.AT_RISK
    assert plan.clock(Step.ARRIVE, 600) is ClockStatus.OVERDUE
    assert [plan.limit_s(s) for s in PLANNED_STEPS] == [120, 180, 600, 7200, 28800]
    assert (plan.need("police"), plan.need("volunteer"), plan.role("volunteer")) == (2, 0, None)
    assert plan.describe() == "民警2名"
    assert set(STEP_LABELS) >= set(PLANNED_STEPS) and set(PLANNED_STEPS) < set(Step)
