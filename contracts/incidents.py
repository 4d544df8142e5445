"""`incidents.located` and `incidents.enriched`: one normalised incident, then with its forces.

Normalise turns any channel's report into an `IncidentRecord`; enrich adds the nearest available
responders of each kind (`Recommended`); the dispatcher files the `EnrichedIncident`.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, field_validator

from contracts.fields import Source, representable_time


class Location(BaseModel):
    lon: float
    lat: float
    address: str | None = None
    grid_id: str | None = None
    grid_name: str | None = None
    community_id: str | None = None
    community_name: str | None = None
    out_of_area: bool = False
    camera_id: str | None = None
    camera_name: str | None = None


class IncidentRecord(BaseModel):
    """`incidents.located`: one normalised incident, whatever the channel."""

    incident_id: str
    tracking_no: str
    source: Source
    source_id: str
    category: str
    category_label: str
    severity: int
    title: str
    description: str = ""
    occurred_at: datetime
    received_at: datetime
    due_at: datetime
    location: Location
    camera_confidence: float | None = None
    snapshot_url: str | None = None
    stream_url: str | None = None
    photo_urls: list[str] = []
    caller_phone: str | None = None  # personal data: masked on every screen
    caller_name: str | None = None
    reporter_id: str | None = None
    time_limit: str | None = None
    intake_ns: int | None = None

    # A record the dispatcher could not store (a DataError, retried, then an "internal error")
    # is refused here, by name, instead.
    _times = field_validator("occurred_at", "received_at", "due_at")(representable_time)


class Recommended(BaseModel):
    """A responder near an incident, as enrichment and the dispatcher's plans recommend one: who,
    of what kind and organisation, how far in a straight line, how soon (ETA), and whether it is
    the grid worker responsible for the incident's grid."""

    responder_id: str
    name: str
    kind: str
    org: str
    distance_m: float
    eta_s: int
    own_grid: bool = False


class EnrichedIncident(IncidentRecord):
    """`incidents.enriched`: the incident with the nearest available forces of each kind."""

    nearest: dict[str, list[Recommended]]
    own_grid_worker: Recommended | None = None
    enriched_at: datetime
    enrichment_id: str  # idempotency key of this enrichment (replays carry the same id)

    _enriched_at = field_validator("enriched_at")(representable_time)
