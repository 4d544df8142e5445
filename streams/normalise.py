"""Normalise and locate: turn any channel's raw report into one incident record.

Pure functions; the agent supplies the camera (from the registry) and the grid index.
Anything unusable raises `BadRecord` with a reason an ops engineer can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson
from pydantic import ValidationError

from contracts.categories import (
    APP_RESPONSE_LIMIT,
    CAMERA_RESPONSE_LIMIT,
    CATEGORIES,
    HOTLINE_TIME_LIMITS,
    severity_for,
)
from contracts.geo import GridIndex
from contracts.incidents import IncidentRecord, Location
from contracts.reports import (
    SOURCE_ID_FIELD,
    SOURCE_MODELS,
    SOURCE_TIME_FIELD,
    AppReport,
    CameraAlarm,
    HotlineTicket,
    RawReport,
)
from contracts.timewindow import HARD
from contracts.validation import BadRecord, describe_validation_error


@dataclass(frozen=True, slots=True)
class CameraInfo:
    camera_id: str
    name: str
    lon: float
    lat: float


def incident_id_for(tracking_no: str) -> str:
    """Deterministic, so a replayed raw report becomes the same incident."""
    return f"INC-{tracking_no}"


def decode_raw(value: bytes | None) -> RawReport:
    if value is None:
        raise BadRecord("empty value")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"value is not JSON: {exc}") from None
    try:
        return RawReport.model_validate(data)
    except ValidationError as exc:
        raise BadRecord(describe_validation_error(exc)) from None


def parse_payload(raw: RawReport) -> CameraAlarm | HotlineTicket | AppReport:
    model = SOURCE_MODELS[raw.source]
    try:
        parsed = model.model_validate(raw.payload)
    except ValidationError as exc:
        raise BadRecord(describe_validation_error(exc, prefix="payload.")) from None
    assert isinstance(parsed, CameraAlarm | HotlineTicket | AppReport)
    name = SOURCE_TIME_FIELD[raw.source]
    problem = HARD.problem(getattr(parsed, name), raw.received_at)
    if problem is not None:
        raise BadRecord(f"payload.{name}: {problem}")
    return parsed


def locate(lon: float, lat: float, grids: GridIndex, **extra: str | None) -> Location:
    grid = grids.locate(lon, lat)
    if grid is None:
        return Location(lon=lon, lat=lat, out_of_area=True, **extra)
    return Location(
        lon=lon,
        lat=lat,
        grid_id=grid.grid_id,
        grid_name=grid.name,
        community_id=grid.community_id,
        community_name=grid.community_name,
        **extra,  # type: ignore[arg-type]
    )


def normalise(raw: RawReport, grids: GridIndex, camera: CameraInfo | None = None) -> IncidentRecord:
    """One incident record from a raw report. Camera alarms need their camera from the registry."""
    report = parse_payload(raw)
    common = {
        "incident_id": incident_id_for(raw.tracking_no),
        "tracking_no": raw.tracking_no,
        "source": raw.source,
        "source_id": getattr(report, SOURCE_ID_FIELD[raw.source]),
        "received_at": raw.received_at,
        "intake_ns": raw.intake_ns,
    }
    occurred: datetime
    if isinstance(report, CameraAlarm):
        if camera is None or camera.camera_id != report.camera_id:
            raise BadRecord(f"payload.camera_id: unknown camera {report.camera_id!r}")
        category = report.alarm_type
        occurred = report.occurred_at
        where = locate(camera.lon, camera.lat, grids, camera_id=camera.camera_id, camera_name=camera.name)
        label = CATEGORIES[category].label
        return IncidentRecord(
            **common,
            category=category,
            category_label=label,
            severity=severity_for(category, confidence=report.confidence),
            title=f"{label}·{camera.name}",
            description=f"视频分析告警：{label}（置信度 {report.confidence:.0%}）",
            occurred_at=occurred,
            due_at=occurred + CAMERA_RESPONSE_LIMIT,
            location=where,
            camera_confidence=report.confidence,
            snapshot_url=str(report.snapshot_url) if report.snapshot_url else None,
            stream_url=report.stream_url,
        )
    if isinstance(report, HotlineTicket):
        category = report.category
        label = CATEGORIES[category].label
        where = locate(report.lon, report.lat, grids, address=report.address)
        return IncidentRecord(
            **common,
            category=category,
            category_label=label,
            severity=severity_for(category, time_limit=report.time_limit),
            title=f"{label}·{report.address or where.grid_name or '辖区外'}",
            description=report.description,
            occurred_at=report.received_at,
            due_at=report.received_at + HOTLINE_TIME_LIMITS[report.time_limit],
            location=where,
            caller_phone=report.caller_phone,
            caller_name=report.caller_name,
            time_limit=report.time_limit,
        )
    category = report.category
    label = CATEGORIES[category].label
    where = locate(report.lon, report.lat, grids)
    return IncidentRecord(
        **common,
        category=category,
        category_label=label,
        severity=severity_for(category),
        title=f"{label}·{where.grid_name or '辖区外'}",
        description=report.description,
        occurred_at=report.reported_at,
        due_at=report.reported_at + APP_RESPONSE_LIMIT,
        location=where,
        photo_urls=[str(u) for u in report.photo_urls],
        reporter_id=report.reporter_id,
    )
