"""Enrichment: the nearest available police, grid workers and volunteers for an incident.

`rank` is pure (distance, ETA by kind, the grid's own worker marked); `Enricher` fetches
candidates from live state in Redis and hands them to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from contracts.geo import haversine_m
from contracts.incidents import EnrichedIncident, IncidentRecord, Recommended
from contracts.kinds import AVAILABLE, KINDS, eta_seconds
from infra.livestate import LiveState, Nearby

_ROSTER_FIELDS = ("name", "org", "grid_id", "kind", "on_duty", "status", "lon", "lat")


def rank(
    kind: str, nearby: Sequence[Nearby], roster: Sequence[Sequence[str | None]], grid_id: str | None
) -> list[Recommended]:
    """Candidates nearest first; `roster` rows align with `nearby` (name, org, grid_id, ...)."""
    out: list[Recommended] = []
    for near, row in zip(nearby, roster, strict=True):
        name, org, own_grid = row[0] or near.responder_id, row[1] or "", row[2]
        out.append(
            Recommended(
                responder_id=near.responder_id,
                name=name,
                kind=kind,
                org=org,
                distance_m=round(near.distance_m, 1),
                eta_s=eta_seconds(kind, near.distance_m),
                own_grid=kind == "grid_worker" and bool(grid_id) and own_grid == grid_id,
            )
        )
    return out


def own_worker(
    lon: float, lat: float, grid_id: str, rows: Sequence[tuple[str, Sequence[str | None]]]
) -> Recommended | None:
    """The grid's own grid worker, if one is on duty, available and located."""
    for responder_id, row in rows:
        name, org, _, kind, on_duty, status, r_lon, r_lat = row
        if on_duty != "1" or status != AVAILABLE or r_lon is None or r_lat is None:
            continue
        distance = haversine_m(lon, lat, float(r_lon), float(r_lat))
        return Recommended(
            responder_id=responder_id,
            name=name or responder_id,
            kind=kind or "grid_worker",
            org=org or "",
            distance_m=round(distance, 1),
            eta_s=eta_seconds("grid_worker", distance),
            own_grid=True,
        )
    return None


class Enricher:
    def __init__(self, live: LiveState, per_kind: int, radius_m: float) -> None:
        self._live = live
        self._per_kind = per_kind
        self._radius_m = radius_m

    async def enrich(self, record: IncidentRecord) -> EnrichedIncident:
        lon, lat, grid_id = record.location.lon, record.location.lat, record.location.grid_id
        found = await self._live.candidates(
            KINDS, lon, lat, self._radius_m, self._per_kind, grid_id, _ROSTER_FIELDS
        )
        nearest: dict[str, list[Recommended]] = {}
        for kind in KINDS:
            pairs = found.nearest[kind]
            nearest[kind] = rank(kind, [n for n, _ in pairs], [r for _, r in pairs], grid_id)
        own = own_worker(lon, lat, grid_id, found.grid_workers) if grid_id else None
        return EnrichedIncident(
            **record.model_dump(),
            nearest=nearest,
            own_grid_worker=own,
            enriched_at=datetime.now(UTC),
            enrichment_id=f"{record.incident_id}:enriched",
        )
