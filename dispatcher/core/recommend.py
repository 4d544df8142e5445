"""Recommendation: fill a response plan with the best available responders, and say why.

Pure and deterministic. The caller hands in responders already filtered to on duty, not busy
and located, with their ETA to the incident (flat dispatch: every organisation at once). For
each role of the plan, candidates rank by:

1. having all of the role's skills (skills are preferred, not required: if too few have them,
   others fill the gap and the operator is told what is missing);
2. for a role that prefers its own grid, the incident grid's own grid worker;
3. ETA, then distance, then responder id (so equal inputs always give equal answers).

A responder is picked at most once. Responders in `exclude` (declined, let an offer expire, or
already tasked on this incident) are never picked; `already` counts those of each kind already
active on the incident, which reduces what the plan still needs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from pydantic import ConfigDict

from contracts.incidents import Recommended
from contracts.kinds import KIND_LABELS
from dispatcher.core.plan import SKILL_LABELS, Plan, RoleNeed

_NO_EXCLUSIONS: Final[frozenset[str]] = frozenset()
_NONE_ALREADY: Final[Mapping[str, int]] = {}


@dataclass(frozen=True, slots=True)
class Available:
    """A responder who could go now: on duty, not busy, located."""

    responder_id: str
    name: str
    kind: str
    org: str
    skills: frozenset[str]
    distance_m: float
    eta_s: int
    own_grid: bool  # the grid worker responsible for the incident's grid

    def pick(self, reasons: tuple[str, ...]) -> Pick:
        return Pick(
            responder_id=self.responder_id,
            name=self.name,
            kind=self.kind,
            org=self.org,
            distance_m=self.distance_m,
            eta_s=self.eta_s,
            own_grid=self.own_grid,
            reasons=reasons,
        )


class Pick(Recommended):
    """A recommended responder (the contract's `Recommended`) the plan or an operator picked, with
    the reasons shown to the operator, in Chinese."""

    model_config = ConfigDict(frozen=True)

    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "responder_id": self.responder_id,
            "name": self.name,
            "kind": self.kind,
            "org": self.org,
            "distance_m": round(self.distance_m, 1),
            "eta_s": self.eta_s,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class Recommendation:
    picks: tuple[Pick, ...]  # by the plan's roles, best first within each
    shortfall: dict[str, int]  # kind -> how many the plan still needs that nobody can fill

    @property
    def complete(self) -> bool:
        return not self.shortfall

    def describe_shortfall(self) -> str:
        """e.g. 缺民警1名、志愿者2名; empty when the plan is filled."""
        if not self.shortfall:
            return ""
        return "缺" + "、".join(f"{KIND_LABELS.get(k, k)}{n}名" for k, n in self.shortfall.items())

    def to_dict(self) -> dict[str, object]:
        return {"picks": [p.to_dict() for p in self.picks], "shortfall": dict(self.shortfall)}


def rank_key(role: RoleNeed, c: Available) -> tuple[bool, bool, int, float, str]:
    """Sort key within a role: smaller is better."""
    skilled = role.skills <= c.skills
    own = role.prefer_own_grid and c.own_grid
    return (not skilled, not own, c.eta_s, c.distance_m, c.responder_id)


def _skill_text(skills: Iterable[str]) -> str:
    order = list(SKILL_LABELS)
    ranked = sorted(skills, key=lambda s: (order.index(s) if s in SKILL_LABELS else len(order), s))
    return "、".join(SKILL_LABELS.get(s, s) for s in ranked)


def _distance_text(distance_m: float) -> str:
    if distance_m < 1000:
        return f"{max(10, round(distance_m, -1)):.0f}米"
    return f"{distance_m / 1000:.1f}公里"


def _arrival_text(eta_s: int) -> str:
    return "1分钟内到达" if eta_s < 60 else f"约{math.ceil(eta_s / 60)}分钟到达"


def _reasons(role: RoleNeed, c: Available, pool: list[Available]) -> tuple[str, ...]:
    """`pool`: every eligible candidate of the role's kind (for "nearest" and "fastest")."""
    reasons: list[str] = []
    if c.own_grid:
        reasons.append(f"本网格{KIND_LABELS.get(c.kind, c.kind)}")
    if role.skills:
        missing = role.skills - c.skills
        if missing:
            reasons.append(f"缺少所需技能：{_skill_text(missing)}")
        else:
            reasons.append(f"具备{_skill_text(role.skills)}技能")
    arrival = _arrival_text(c.eta_s)
    if c.distance_m <= min(o.distance_m for o in pool):
        reasons.append(f"距离最近的{KIND_LABELS.get(c.kind, c.kind)}，{arrival}")
    elif c.eta_s <= min(o.eta_s for o in pool):
        reasons.append(f"同类中到达最快，{arrival}")
    else:
        reasons.append(f"距离{_distance_text(c.distance_m)}，{arrival}")
    return tuple(reasons)


def _pick(role: RoleNeed, c: Available, pool: list[Available]) -> Pick:
    return c.pick(_reasons(role, c, pool))


def _fill(
    role: RoleNeed, need: int, candidates: Iterable[Available], exclude: frozenset[str], taken: set[str]
) -> list[Pick]:
    pool = [c for c in candidates if c.kind == role.kind and c.responder_id not in exclude]
    picks: list[Pick] = []
    for c in sorted(pool, key=lambda c: rank_key(role, c)):
        if len(picks) >= need:
            break
        if c.responder_id in taken:
            continue
        taken.add(c.responder_id)
        picks.append(_pick(role, c, pool))
    return picks


def recommend(
    plan: Plan,
    candidates: Iterable[Available],
    exclude: frozenset[str] = _NO_EXCLUSIONS,
    already: Mapping[str, int] = _NONE_ALREADY,
) -> Recommendation:
    """The best responders to fill what `plan` still needs, and what cannot be filled."""
    candidates = tuple(candidates)
    taken: set[str] = set()
    picks: list[Pick] = []
    shortfall: dict[str, int] = {}
    for role in plan.roles:
        need = max(0, role.count - already.get(role.kind, 0))
        filled = _fill(role, need, candidates, exclude, taken)
        picks.extend(filled)
        if len(filled) < need:
            shortfall[role.kind] = need - len(filled)
    return Recommendation(tuple(picks), shortfall)


def next_best(
    plan: Plan,
    candidates: Iterable[Available],
    exclude: frozenset[str],
    kind: str,
    already: Mapping[str, int] = _NONE_ALREADY,
) -> Pick | None:
    """Who to offer next after a responder of `kind` declined or let an offer expire.

    Same ranking as `recommend`. None when nobody eligible is left, or when the plan needs no
    more of that kind (its role is already filled by `already`, or it has no such role).
    """
    role = plan.role(kind)
    if role is None or already.get(kind, 0) >= role.count:
        return None
    filled = _fill(role, 1, candidates, exclude, set())
    return filled[0] if filled else None
