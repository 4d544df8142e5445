"""Record schemas: the intake contracts (DESIGN.md) and what flows on each topic.

The same models validate a report at the HTTP edge and again when an agent reads it off
`reports.raw`, so a record written by anything else is held to the contract too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StrictBool,
    field_validator,
)

from dispatcher.category import CAMERA_ALARM_TYPES, CATEGORIES, HOTLINE_TIME_LIMITS
from streams.timewindow import representable

# Numbers are numbers: `true` or "106.5" is not a coordinate (lax parsing made `true` lon 1.0).
Lon = Annotated[float, Field(strict=True, ge=-180, le=180, description="WGS-84 longitude, degrees")]
# Latitudes nearer the poles than Redis's GEO index can hold (the Web Mercator limit) could not
# be searched for nearby responders: refused at the door, not failed in enrichment.
GEO_MAX_LAT = 85.05112878
Lat = Annotated[
    float,
    Field(
        strict=True, ge=-GEO_MAX_LAT, le=GEO_MAX_LAT, description="WGS-84 latitude, degrees (±85.05112878)"
    ),
]
# An id starts with a letter or digit: "..", "." or "-x" would name a path or an option.
SourceId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")]
# Text a person reads: not blank (whitespace is stripped first), so a blank field is refused
# by name instead of filing an incident that says nothing.
Text = Annotated[str, Field(min_length=1, max_length=2000)]
Source = Literal["camera", "hotline", "app"]
# Closed vocabularies, declared in the OpenAPI document (the validators below word the refusal).
AlarmType = Annotated[str, Field(json_schema_extra={"enum": list(CAMERA_ALARM_TYPES)})]
CategoryCode = Annotated[str, Field(json_schema_extra={"enum": sorted(CATEGORIES)})]
TimeLimit = Annotated[str, Field(json_schema_extra={"enum": list(HOTLINE_TIME_LIMITS)})]


def refuse_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000: refuse it at the edge (a 422 naming the
    field) rather than fail on the insert (a 500)."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    if isinstance(value, list):
        for item in value:
            refuse_nul(item)
    return value


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    _no_nul = field_validator("*", mode="before")(refuse_nul)


def _check_category(value: str) -> str:
    if value not in CATEGORIES:
        raise ValueError(f"unknown category {value!r}; known: {', '.join(sorted(CATEGORIES))}")
    return value


class CameraAlarm(_Contract):
    alarm_id: SourceId
    camera_id: SourceId
    alarm_type: AlarmType
    confidence: float = Field(strict=True, ge=0, le=1)
    occurred_at: AwareDatetime
    snapshot_url: HttpUrl | None = None
    stream_url: Annotated[str, Field(max_length=500, pattern=r"^(rtsp|rtmp|https?)://\S+$")] | None = None

    @field_validator("alarm_type")
    @classmethod
    def _alarm_type(cls, v: str) -> str:
        if v not in CAMERA_ALARM_TYPES:
            raise ValueError(f"unknown alarm type {v!r}; known: {', '.join(CAMERA_ALARM_TYPES)}")
        return v


class HotlineTicket(_Contract):
    ticket_no: SourceId
    received_at: AwareDatetime
    caller_phone: Annotated[str, Field(pattern=r"^\+?[0-9\-]{5,20}$")]
    caller_name: Annotated[str, Field(min_length=1, max_length=50)] | None = None
    category: CategoryCode
    description: Text
    address: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    lon: Lon
    lat: Lat
    time_limit: TimeLimit

    _category = field_validator("category")(_check_category)

    @field_validator("time_limit")
    @classmethod
    def _time_limit(cls, v: str) -> str:
        if v not in HOTLINE_TIME_LIMITS:
            raise ValueError(f"unknown time limit {v!r}; known: {', '.join(HOTLINE_TIME_LIMITS)}")
        return v


class AppReport(_Contract):
    report_id: SourceId
    reporter_id: SourceId
    reported_at: AwareDatetime
    category: CategoryCode
    description: Text
    lon: Lon
    lat: Lat
    photo_urls: Annotated[list[HttpUrl], Field(max_length=9)] = []

    _category = field_validator("category")(_check_category)


class PositionFix(_Contract):
    responder_id: SourceId
    lon: Lon
    lat: Lat
    at: AwareDatetime
    accuracy_m: float | None = Field(default=None, strict=True, ge=0, le=100_000)


class PositionBatch(_Contract):
    positions: Annotated[list[PositionFix], Field(min_length=1, max_length=1000)]


class ResponderUpsert(_Contract):
    name: Annotated[str, Field(min_length=1, max_length=50)]
    kind: Literal["police", "grid_worker", "volunteer"]
    org: Annotated[str, Field(min_length=1, max_length=100)]
    skills: Annotated[list[Annotated[str, Field(min_length=1, max_length=40)]], Field(max_length=50)] = []
    on_duty: StrictBool
    grid_id: SourceId | None = None


class CameraUpsert(_Contract):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    lon: Lon
    lat: Lat


SOURCE_MODELS: dict[str, type[_Contract]] = {
    "camera": CameraAlarm,
    "hotline": HotlineTicket,
    "app": AppReport,
}
SOURCE_ID_FIELD: dict[str, str] = {"camera": "alarm_id", "hotline": "ticket_no", "app": "report_id"}
# The source's own time of each channel: held to the plausible window (streams.timewindow).
SOURCE_TIME_FIELD: dict[str, str] = {"camera": "occurred_at", "hotline": "received_at", "app": "reported_at"}


def _representable(value: datetime) -> datetime:
    problem = representable(value)
    if problem is not None:
        raise ValueError(problem)
    return value


class RawReport(BaseModel):
    """`reports.raw`: a report exactly as accepted, with our tracking number."""

    tracking_no: str
    source: Source
    received_at: AwareDatetime
    payload: dict[str, Any]
    intake_ns: int | None = None  # wall clock at intake, for end-to-end latency figures

    _times = field_validator("received_at")(_representable)


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
    _times = field_validator("occurred_at", "received_at", "due_at")(_representable)


class Recommended(BaseModel):
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

    _enriched_at = field_validator("enriched_at")(_representable)


class DeadLetter(BaseModel):
    """`deadletter`: a record an agent could not use, and why."""

    topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    reason: str
    stage: str
    value: str  # the original bytes, decoded leniently
    at: datetime
    # What the refusal leaves stuck for good (a report no stage will file, a command the outbox
    # stops re-sending): nothing re-sends it; an operator must look. None: nothing is waiting.
    stuck: str | None = None
