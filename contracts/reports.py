"""The intake contracts (DESIGN.md: camera alarms, 12345 tickets, app reports) and `reports.raw`.

The same models validate a report at the HTTP edge and again when an agent reads it off
`reports.raw`, so a record written by anything else is held to the contract too.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, Field, HttpUrl, field_validator

from contracts.categories import CAMERA_ALARM_TYPES, HOTLINE_TIME_LIMITS
from contracts.fields import (
    AlarmType,
    CategoryCode,
    Contract,
    Lat,
    Lon,
    Source,
    SourceId,
    Text,
    TimeLimit,
    check_category,
    representable_time,
)


class CameraAlarm(Contract):
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


class HotlineTicket(Contract):
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

    _category = field_validator("category")(check_category)

    @field_validator("time_limit")
    @classmethod
    def _time_limit(cls, v: str) -> str:
        if v not in HOTLINE_TIME_LIMITS:
            raise ValueError(f"unknown time limit {v!r}; known: {', '.join(HOTLINE_TIME_LIMITS)}")
        return v


class AppReport(Contract):
    report_id: SourceId
    reporter_id: SourceId
    reported_at: AwareDatetime
    category: CategoryCode
    description: Text
    lon: Lon
    lat: Lat
    photo_urls: Annotated[list[HttpUrl], Field(max_length=9)] = Field(default_factory=list)

    _category = field_validator("category")(check_category)


SOURCE_MODELS: dict[str, type[Contract]] = {
    "camera": CameraAlarm,
    "hotline": HotlineTicket,
    "app": AppReport,
}
SOURCE_ID_FIELD: dict[str, str] = {"camera": "alarm_id", "hotline": "ticket_no", "app": "report_id"}
# The source's own time of each channel: held to the plausible window (contracts.timewindow).
SOURCE_TIME_FIELD: dict[str, str] = {"camera": "occurred_at", "hotline": "received_at", "app": "reported_at"}


class RawReport(BaseModel):
    """`reports.raw`: a report exactly as accepted, with our tracking number."""

    tracking_no: str
    source: Source
    received_at: AwareDatetime
    payload: dict[str, Any]
    intake_ns: int | None = None  # wall clock at intake, for end-to-end latency figures

    _times = field_validator("received_at")(representable_time)
