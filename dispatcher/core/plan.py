"""Response plans (预案) as data: who goes to each kind of incident, how many, and how fast.

`plans.yaml` (next to this module; its header documents the shape) says, for each category and
severity, which roles to send (一支一警, "1+3+N", ...), how long a responder has to accept an
offer, and the time limit of each step of the closed loop. `load_plans` validates the whole file
up front and resolves every (category, severity) pair, so a mistake is a `ValueError` naming
its place in the file (``plans.smoke_fire.severity.2.roles[0].kind: unknown kind 'firefighter'``)
when the dispatcher starts, never a surprise during an incident.

Layers, most specific first. The category decides who goes; the severity decides how fast:

- roles (and the plan's name): plans.<cat>.severity.<n> -> plans.<cat> -> defaults.severity.<n> -> defaults
- clocks (accept_timeout_s, warning_ratio, each step of limits):
  plans.<cat>.severity.<n> -> defaults.severity.<n> -> plans.<cat> -> defaults

Apart from reading the file, everything here is pure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, Final, TypeGuard

import yaml

from contracts.categories import CATEGORIES
from contracts.kinds import KIND_LABELS, KINDS
from dispatcher.core.clock import PLANNED_STEPS, ClockStatus, Step

DEFAULT_PATH: Final = Path(__file__).resolve().parent.parent / "plans.yaml"  # data, beside the code
SEVERITIES: Final = (1, 2, 3, 4)
MAX_COUNT: Final = 50  # per role: anything larger is a typo, not a plan

# The skills responders carry in the registry (infra/city.py draws from these), with labels.
SKILL_LABELS: Final = {
    "patrol": "巡逻",
    "first_aid": "急救",
    "fire_safety": "消防",
    "traffic": "交通疏导",
    "mediation": "调解",
    "elderly_care": "助老",
    "cleanup": "保洁",
    "inspection": "巡查",
}
SKILLS: Final = frozenset(SKILL_LABELS)


@dataclass(frozen=True, slots=True)
class StepLimits:
    """Seconds allowed for each step."""

    dispatch: int
    accept: int
    arrive: int
    resolve: int
    verify: int

    def seconds(self, step: Step) -> int:
        return {
            Step.DISPATCH: self.dispatch,
            Step.ACCEPT: self.accept,
            Step.ARRIVE: self.arrive,
            Step.RESOLVE: self.resolve,
            Step.VERIFY: self.verify,
        }[Step(step)]


@dataclass(frozen=True, slots=True)
class RoleNeed:
    kind: str  # a contracts.kinds kind
    count: int
    skills: frozenset[str] = frozenset()  # preferred: candidates with all of them rank first
    prefer_own_grid: bool = False  # the incident grid's own grid worker first

    def describe(self) -> str:
        return f"{KIND_LABELS[self.kind]}{self.count}名"


@dataclass(frozen=True, slots=True)
class Plan:
    category: str
    severity: int
    roles: tuple[RoleNeed, ...]  # one per kind, in KINDS order
    accept_timeout_s: int
    limits: StepLimits
    warning_ratio: float
    name: str = ""  # e.g. 一支一警, 1+3+N

    def describe(self) -> str:
        """One Chinese line, e.g. 民警1名、网格员1名、志愿者2名."""
        return "、".join(role.describe() for role in self.roles)

    def role(self, kind: str) -> RoleNeed | None:
        return next((r for r in self.roles if r.kind == kind), None)

    def need(self, kind: str) -> int:
        role = self.role(kind)
        return 0 if role is None else role.count

    def limit_s(self, step: Step) -> int:
        return self.limits.seconds(step)

    def warning_s(self, step: Step) -> int:
        """Seconds into the step at which it is at risk (and escalates)."""
        return math.floor(self.limits.seconds(step) * self.warning_ratio)

    def clock(self, step: Step, elapsed_s: float) -> ClockStatus:
        if elapsed_s >= self.limit_s(step):
            return ClockStatus.OVERDUE
        if elapsed_s >= self.warning_s(step):
            return ClockStatus.AT_RISK
        return ClockStatus.OK


@dataclass(frozen=True, slots=True)
class PlanBook:
    """Every plan, resolved: explicit categories at each severity, and the default at each."""

    source: str
    plans: Mapping[tuple[str, int], Plan] = field(repr=False)
    defaults: Mapping[int, Plan] = field(repr=False)

    @property
    def categories(self) -> frozenset[str]:
        """Categories with a plan of their own (the rest use the default)."""
        return frozenset(category for category, _ in self.plans)

    def plan_for(self, category: str, severity: int) -> Plan:
        """Category at this severity, else the category's plan, else the default plan."""
        if isinstance(severity, bool) or severity not in SEVERITIES:
            raise ValueError(f"severity must be 1..4, got {severity!r}")
        plan = self.plans.get((category, severity))
        if plan is not None:
            return plan
        return replace(self.defaults[severity], category=category)


# --- loading --------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (line {line})", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_UNITS = (86_400, 3_600, 60, 1)
_CLOCK_KEYS: Final = ("accept_timeout_s", "warning_ratio", "limits")
_PLAN_KEYS: Final = ("name", "roles", *_CLOCK_KEYS)
_ROLE_KEYS: Final = ("kind", "count", "skills", "prefer_own_grid")
_STEPS: Final = tuple(s.value for s in PLANNED_STEPS)


class _Invalid(ValueError):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class _Layer:
    """One block of the file, as written: anything it leaves out comes from another layer."""

    where: str
    name: str | None = None
    roles: tuple[RoleNeed, ...] | None = None
    accept_timeout_s: int | None = None
    warning_ratio: float | None = None
    limits: Mapping[str, int] = field(default_factory=dict)


def _mapping(value: object, where: str) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Invalid(where, f"expected a mapping, got {type(value).__name__}")
    return value


def _check_keys(block: Mapping[Any, Any], allowed: Iterable[str], where: str) -> None:
    allowed = tuple(allowed)
    for key in block:
        if key not in allowed:
            raise _Invalid(f"{where}.{key}", f"unknown key (expected one of: {', '.join(allowed)})")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_duration(value: object, where: str = "duration") -> int:
    """Seconds, from a positive integer of seconds or a string such as '90s', '15m', '2h', '1h30m', '7d'."""
    if _is_int(value):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION.match(value.strip())) and any(m.groups()):
        seconds = sum(int(g) * unit for g, unit in zip(m.groups(), _UNITS, strict=True) if g)
    else:
        raise _Invalid(where, f"expected seconds or a duration such as '15m', '2h', '7d'; got {value!r}")
    if seconds <= 0:
        raise _Invalid(where, f"must be positive, got {value!r}")
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest unit string for `seconds`, as parse_duration reads it: 5400 -> '1h30m'."""
    parts = []
    for unit, suffix in zip(_UNITS, "dhms", strict=True):
        n, seconds = divmod(seconds, unit)
        if n:
            parts.append(f"{n}{suffix}")
    return "".join(parts) or "0s"


def _role(value: object, where: str) -> RoleNeed:
    block = _mapping(value, where)
    _check_keys(block, _ROLE_KEYS, where)
    if "kind" not in block:
        raise _Invalid(f"{where}.kind", "missing")
    kind = block["kind"]
    if kind not in KINDS:
        raise _Invalid(f"{where}.kind", f"unknown kind {kind!r} (expected one of: {', '.join(KINDS)})")
    count = block.get("count")
    if not _is_int(count) or not 1 <= count <= MAX_COUNT:
        raise _Invalid(f"{where}.count", f"must be a whole number 1..{MAX_COUNT}, got {count!r}")
    skills_value = block.get("skills", [])
    if not isinstance(skills_value, list):
        raise _Invalid(f"{where}.skills", f"expected a list of skills, got {type(skills_value).__name__}")
    for i, skill in enumerate(skills_value):
        if not isinstance(skill, str) or skill not in SKILLS:
            known = ", ".join(sorted(SKILLS))
            raise _Invalid(f"{where}.skills[{i}]", f"unknown skill {skill!r} (expected one of: {known})")
    prefer = block.get("prefer_own_grid", kind == "grid_worker")
    if not isinstance(prefer, bool):
        raise _Invalid(f"{where}.prefer_own_grid", f"must be true or false, got {prefer!r}")
    if prefer and kind != "grid_worker":
        raise _Invalid(f"{where}.prefer_own_grid", "only a grid_worker role has an own grid")
    return RoleNeed(kind, count, frozenset(skills_value), prefer)


def _roles(value: object, where: str) -> tuple[RoleNeed, ...]:
    if not isinstance(value, list) or not value:
        raise _Invalid(where, "expected a non-empty list of roles")
    roles: list[RoleNeed] = []
    first: dict[str, int] = {}
    for i, item in enumerate(value):
        role = _role(item, f"{where}[{i}]")
        if role.kind in first:
            raise _Invalid(f"{where}[{i}].kind", f"{role.kind} already listed in {where}[{first[role.kind]}]")
        first[role.kind] = i
        roles.append(role)
    return tuple(sorted(roles, key=lambda r: KINDS.index(r.kind)))


def _layer(value: object, where: str, allowed: Iterable[str]) -> _Layer:
    block = _mapping(value, where)
    _check_keys(block, allowed, where)
    name = block.get("name")
    if name is not None and not isinstance(name, str):
        raise _Invalid(f"{where}.name", f"must be text, got {name!r}")
    roles = _roles(block["roles"], f"{where}.roles") if "roles" in block else None
    timeout = None
    if "accept_timeout_s" in block:
        timeout = parse_duration(block["accept_timeout_s"], f"{where}.accept_timeout_s")
    ratio = block.get("warning_ratio")
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio < 1:
            raise _Invalid(f"{where}.warning_ratio", f"must be a number between 0 and 1, got {ratio!r}")
        ratio = float(ratio)
    limits_block = _mapping(block.get("limits"), f"{where}.limits")
    _check_keys(limits_block, _STEPS, f"{where}.limits")
    limits = {step: parse_duration(v, f"{where}.limits.{step}") for step, v in limits_block.items()}
    return _Layer(where, name, roles, timeout, ratio, limits)


def _severities(value: object, where: str, allowed: Iterable[str]) -> dict[int, _Layer]:
    block = _mapping(value, where)
    out: dict[int, _Layer] = {}
    for key, sub in block.items():
        if not _is_int(key) or key not in SEVERITIES:
            raise _Invalid(f"{where}.{key}", "a severity must be 1, 2, 3 or 4 (I..IV)")
        out[key] = _layer(sub, f"{where}.{key}", allowed)
    return out


def _resolve(category: str, severity: int, people: list[_Layer], clocks: list[_Layer]) -> Plan:
    """Most specific layer first in each list; `defaults` (complete) is last in both."""
    roles = next(layer.roles for layer in people if layer.roles is not None)
    name = next((layer.name for layer in people if layer.name is not None), "")
    timeout = next(layer.accept_timeout_s for layer in clocks if layer.accept_timeout_s is not None)
    ratio = next(layer.warning_ratio for layer in clocks if layer.warning_ratio is not None)
    steps = {step: next(layer.limits[step] for layer in clocks if step in layer.limits) for step in _STEPS}
    limits = StepLimits(**steps)
    where = f"{people[0].where} (severity {severity})"
    if timeout > limits.accept:
        timeout_text, accept_text = format_duration(timeout), format_duration(limits.accept)
        raise _Invalid(where, f"accept_timeout_s {timeout_text} exceeds limits.accept {accept_text}")
    return Plan(category, severity, roles, timeout, limits, ratio, name)


def _check_graded(plans: Mapping[int, Plan], where: str) -> None:
    """分级响应: a more severe level never allows more time for a step than a less severe one."""
    for more, less in pairwise(SEVERITIES):
        for step in PLANNED_STEPS:
            a, b = plans[more].limit_s(step), plans[less].limit_s(step)
            if a > b:
                raise _Invalid(
                    where,
                    f"severity {more} allows {format_duration(a)} for {step.value}, more than severity "
                    f"{less}'s {format_duration(b)} (a more severe level must be at least as fast)",
                )


def parse_plans(data: object, source: str = "<plans>") -> PlanBook:
    """Validate a parsed plans document (see plans.yaml) and resolve every plan."""
    try:
        top = _mapping(data, "(top level)")
        if not top:
            raise _Invalid("(top level)", "empty: expected 'defaults' and 'plans'")
        _check_keys(top, ("defaults", "plans"), "(top level)")
        if "defaults" not in top:
            raise _Invalid("defaults", "missing")
        defaults_block = _mapping(top["defaults"], "defaults")
        base = _layer(defaults_block, "defaults", (*_PLAN_KEYS, "severity"))
        for key in ("roles", *_CLOCK_KEYS):
            if key not in defaults_block:
                raise _Invalid(f"defaults.{key}", "missing (defaults must be complete)")
        for step in _STEPS:
            if step not in base.limits:
                raise _Invalid(f"defaults.limits.{step}", "missing (defaults must be complete)")
        default_sev = _severities(defaults_block.get("severity"), "defaults.severity", _PLAN_KEYS)

        defaults: dict[int, Plan] = {}
        for s in SEVERITIES:
            by_sev = [default_sev[s]] if s in default_sev else []
            defaults[s] = _resolve("default", s, [*by_sev, base], [*by_sev, base])
        _check_graded(defaults, "defaults")

        plans: dict[tuple[str, int], Plan] = {}
        for category, value in _mapping(top.get("plans"), "plans").items():
            where = f"plans.{category}"
            if category not in CATEGORIES:
                raise _Invalid(where, f"unknown category {category!r} (see dispatcher/category.py)")
            block = _mapping(value, where)
            layer = _layer(block, where, (*_PLAN_KEYS, "severity"))
            own_sev = _severities(block.get("severity"), f"{where}.severity", _PLAN_KEYS)
            resolved: dict[int, Plan] = {}
            for s in SEVERITIES:
                mine = [own_sev[s]] if s in own_sev else []
                theirs = [default_sev[s]] if s in default_sev else []
                people = [*mine, layer, *theirs, base]
                clocks = [*mine, *theirs, layer, base]
                resolved[s] = plans[(category, s)] = _resolve(category, s, people, clocks)
            _check_graded(resolved, where)
    except _Invalid as e:
        raise ValueError(f"{source}: {e}") from None
    return PlanBook(source, plans, defaults)


def load_plans(path: str | Path | None = None) -> PlanBook:
    """Read and validate a plans file (the shipped `dispatcher/plans.yaml` by default: PLANS_PATH
    unset)."""
    path = DEFAULT_PATH if path is None else Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{path}: cannot read plans: {e}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    return parse_plans(data, str(path))
