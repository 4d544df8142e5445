"""Adapter: the available responders near an incident, from live state in Redis, as the pure
recommendation wants them (on duty, not busy, located; skills, organisation, ETA)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contracts.geo import haversine_m
from contracts.kinds import KINDS, eta_seconds
from contracts.states import ACTIVE_TASK_STATES
from dispatcher.core.plan import PlanBook
from dispatcher.core.recommend import Available, recommend
from infra.livestate import Candidates, LiveState

_FIELDS = ("name", "org", "grid_id", "skills", "on_duty", "status", "lon", "lat")


def _skills(raw: str | None) -> frozenset[str]:
    return frozenset(s for s in (raw or "").split(",") if s)


def _available(found: Candidates, grid_id: str | None) -> list[Available]:
    out: list[Available] = []
    for kind in KINDS:
        for n, (name, org, grid, skills, *_) in found.nearest.get(kind, []):
            out.append(
                Available(
                    responder_id=n.responder_id,
                    name=name or n.responder_id,
                    kind=kind,
                    org=org or "",
                    skills=_skills(skills),
                    distance_m=round(n.distance_m, 1),
                    eta_s=eta_seconds(kind, n.distance_m),
                    own_grid=kind == "grid_worker" and bool(grid_id) and grid == grid_id,
                )
            )
    return out


def _own(found: Candidates, lon: float, lat: float, any_status: bool) -> list[Available]:
    out: list[Available] = []
    for rid, (name, org, _, skills, on_duty, status, r_lon, r_lat) in found.grid_workers:
        if on_duty != "1" or (status != "available" and not any_status) or r_lon is None or r_lat is None:
            continue
        d = haversine_m(lon, lat, float(r_lon), float(r_lat))
        out.append(
            Available(
                rid,
                name or rid,
                "grid_worker",
                org or "",
                _skills(skills),
                round(d, 1),
                eta_seconds("grid_worker", d),
                True,
            )
        )
    return out


async def candidates_near(
    live: LiveState, lon: float, lat: float, grid_id: str | None, radius_m: float, per_kind: int
) -> tuple[list[Available], list[Available]]:
    """In one Redis round trip: the `per_kind` nearest available responders of each kind
    (nearest first), and the incident grid's own grid workers on duty and located, whatever
    their status (the caller checks who is busy elsewhere)."""
    found = await live.candidates(KINDS, lon, lat, radius_m, per_kind, grid_id, _FIELDS)
    return _available(found, grid_id), _own(found, lon, lat, any_status=True)


# Why a responder an operator named cannot be dispatched, by what live state says of them.
UNKNOWN, OFF_DUTY, BUSY, NOT_LOCATED = "unknown", "off_duty", "busy", "not_located"
_NAMED_FIELDS = ("name", "kind", "org", "grid_id", "skills", "on_duty", "status", "lon", "lat")


async def named_responders(
    live: LiveState, lon: float, lat: float, grid_id: str | None, ids: Sequence[str]
) -> tuple[list[Available], dict[str, str]]:
    """Responders an operator named, however far (flat dispatch: any responder of any
    organisation), with distance and ETA from where they are now; and, for each who cannot go,
    why (`UNKNOWN`, `OFF_DUTY`, `BUSY`, `NOT_LOCATED`). One Redis round trip."""
    ids = list(dict.fromkeys(ids))
    rows = await live.responders(ids, _NAMED_FIELDS)
    ready: list[Available] = []
    why: dict[str, str] = {}
    for rid, (name, kind, org, grid, skills, on_duty, status, r_lon, r_lat) in zip(ids, rows, strict=True):
        if kind not in KINDS:
            why[rid] = UNKNOWN
        elif on_duty != "1":
            why[rid] = OFF_DUTY
        elif status != "available":
            why[rid] = BUSY
        elif r_lon is None or r_lat is None:
            why[rid] = NOT_LOCATED
        else:
            d = haversine_m(lon, lat, float(r_lon), float(r_lat))
            own = kind == "grid_worker" and bool(grid_id) and grid == grid_id
            eta = eta_seconds(kind, d)
            ready.append(Available(rid, name or rid, kind, org or "", _skills(skills), round(d, 1), eta, own))
    return ready, why


async def available_near(
    live: LiveState, lon: float, lat: float, grid_id: str | None, radius_m: float, per_kind: int
) -> list[Available]:
    """The `per_kind` nearest available responders of each kind, nearest first."""
    found = await live.candidates(KINDS, lon, lat, radius_m, per_kind, None, _FIELDS)
    return _available(found, grid_id)


async def own_grid_workers(
    live: LiveState, lon: float, lat: float, grid_id: str | None, *, any_status: bool = False
) -> list[Available]:
    """The incident grid's own grid workers on duty and located (for verification); only the
    available ones unless `any_status` (the caller then checks who is busy elsewhere)."""
    if not grid_id:
        return []
    found = await live.candidates((), lon, lat, 0.0, 0, grid_id, _FIELDS)
    return _own(found, lon, lat, any_status)


async def live_recommendation(
    live: LiveState, plans: PlanBook, view: dict[str, Any], radius_m: float, per_kind: int = 30
) -> dict[str, Any]:
    """The incident's plan filled from who is available right now, with reasons (for consoles)."""
    plan = plans.plan_for(view["category"], int(view["severity"]))
    loc = view.get("location") or {}
    candidates = await available_near(live, loc["lon"], loc["lat"], loc.get("grid_id"), radius_m, per_kind)
    active = [t for t in view.get("tasks", []) if t["state"] in ACTIVE_TASK_STATES]
    already: dict[str, int] = {}
    for t in active:
        if t["kind"] == "response":
            already[t["responder_kind"]] = already.get(t["responder_kind"], 0) + 1
    tried = frozenset(
        t["responder_id"] for t in view.get("tasks", []) if t.get("round") == view.get("round", 0)
    )
    rec = recommend(plan, candidates, exclude=tried, already=already)
    return {
        "plan": plan.describe(),
        "plan_name": plan.name,
        **rec.to_dict(),
        "shortfall_text": rec.describe_shortfall(),
    }
