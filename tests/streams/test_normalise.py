"""Normalise and locate: every channel's raw report becomes one incident record, or a BadRecord."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from contracts.categories import CAMERA_RESPONSE_LIMIT
from contracts.geo import Grid, GridIndex
from contracts.incidents import IncidentRecord
from contracts.reports import RawReport
from contracts.validation import BadRecord
from streams.normalise import CameraInfo, decode_raw, incident_id_for, locate, normalise, parse_payload


def square(x0: float, y0: float, x1: float, y1: float) -> dict[str, object]:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


# Two side-by-side grids around the DESIGN.md contract points; the seam is at lon 106.531.
WEST = Grid.from_geojson("G001", "清晖第1网格", "C01", "清晖社区", square(106.520, 29.620, 106.531, 29.640))
EAST = Grid.from_geojson("G002", "清晖第2网格", "C01", "清晖社区", square(106.531, 29.620, 106.540, 29.640))
GRIDS = GridIndex([WEST, EAST])
CAMERA = CameraInfo("50010800001320000042", "清晖岸小区东门", 106.5250, 29.6300)

RECEIVED = "2026-11-22T01:31:05+00:00"

CAMERA_PAYLOAD: dict[str, Any] = {
    "alarm_id": "CAM-20261122-000123",
    "camera_id": "50010800001320000042",
    "alarm_type": "smoke_fire",
    "confidence": 0.91,
    "occurred_at": "2026-11-22T09:30:00+08:00",
    "snapshot_url": "http://video.example/snap/42.jpg",
    "stream_url": "rtsp://video.example/live/42",
}
HOTLINE_PAYLOAD: dict[str, Any] = {
    "ticket_no": "12345-20261122-00077",
    "received_at": "2026-11-22T09:31:00+08:00",
    "caller_phone": "13800138000",
    "caller_name": "李女士",
    "category": "cooking_fumes",
    "description": "楼下饭店油烟太大",
    "address": "清晖岸小区3栋",
    "lon": 106.5321,
    "lat": 29.6312,
    "time_limit": "24h",
}
APP_PAYLOAD: dict[str, Any] = {
    "report_id": "SSP-8f3a",
    "reporter_id": "resident-1029",
    "reported_at": "2026-11-22T09:32:00+08:00",
    "category": "garbage_overflow",
    "description": "垃圾桶满了",
    "lon": 106.5302,
    "lat": 29.6290,
    "photo_urls": ["http://app.example/p/8f3a.jpg"],
}
PAYLOADS = {"camera": CAMERA_PAYLOAD, "hotline": HOTLINE_PAYLOAD, "app": APP_PAYLOAD}


def raw(source: str, tracking_no: str = "TRK-0001", **changes: Any) -> RawReport:
    payload = {**PAYLOADS[source], **changes}
    for key, value in changes.items():
        if value is ...:
            del payload[key]
    return RawReport.model_validate(
        {
            "tracking_no": tracking_no,
            "source": source,
            "received_at": RECEIVED,
            "payload": payload,
            "intake_ns": 7,
        }
    )


def encoded(source: str, **changes: Any) -> bytes:
    return raw(source, **changes).model_dump_json().encode()


# --- decode_raw -----------------------------------------------------------------------------


def test_decode_raw_round_trip() -> None:
    r = decode_raw(encoded("hotline"))
    assert r == raw("hotline")
    assert r.source == "hotline" and r.intake_ns == 7


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty value"),
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "(record)"),
        (b'"a string"', "(record)"),
        (b'{"tracking_no": "T"}', "source"),
        (b'{"tracking_no": "T"}', "received_at"),
        (b'{"tracking_no": "T"}', "payload"),
        (
            b'{"tracking_no": "T", "source": "fax", "received_at": "2026-11-22T01:00:00Z", "payload": {}}',
            "source",
        ),
        (b'{"tracking_no": "T", "source": "app", "received_at": "yesterday", "payload": {}}', "received_at"),
        (
            b'{"tracking_no": "T", "source": "app", "received_at": "2026-11-22T01:00:00Z", "payload": []}',
            "payload",
        ),
    ],
)
def test_decode_raw_bad_records(value: bytes | None, reason: str) -> None:
    with pytest.raises(BadRecord) as info:
        decode_raw(value)
    assert reason in str(info.value)


def test_bad_record_is_a_value_error() -> None:
    assert issubclass(BadRecord, ValueError)


# --- payload errors name the field ------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "changes", "field"),
    [
        ("hotline", {"caller_phone": ...}, "payload.caller_phone"),
        ("hotline", {"caller_phone": "call me maybe"}, "payload.caller_phone"),
        ("hotline", {"lon": 181.0}, "payload.lon"),
        ("hotline", {"lat": "north"}, "payload.lat"),
        ("hotline", {"category": "ufo_sighting"}, "payload.category"),
        ("hotline", {"time_limit": "3d"}, "payload.time_limit"),
        ("hotline", {"received_at": "2026-11-22T09:31:00"}, "payload.received_at"),  # no offset
        ("hotline", {"shoe_size": 42}, "payload.shoe_size"),  # unknown fields are refused
        ("camera", {"alarm_type": "ufo"}, "payload.alarm_type"),
        ("camera", {"alarm_type": "cooking_fumes"}, "payload.alarm_type"),  # not a video alarm
        ("camera", {"confidence": 1.5}, "payload.confidence"),
        ("camera", {"alarm_id": ""}, "payload.alarm_id"),
        ("camera", {"snapshot_url": "not a url"}, "payload.snapshot_url"),
        ("camera", {"stream_url": "ftp://x/y"}, "payload.stream_url"),
        ("app", {"report_id": "has spaces in it"}, "payload.report_id"),
        ("app", {"photo_urls": ["http://a.example/1.jpg"] * 10}, "payload.photo_urls"),
        ("app", {"reported_at": ...}, "payload.reported_at"),
        # times a later stage cannot use (OverflowError, a DataError) or has no use for
        ("app", {"reported_at": "9999-12-31T23:00:00+08:00"}, "payload.reported_at"),
        ("app", {"reported_at": "0001-01-01T00:00:00+08:00"}, "payload.reported_at"),
        ("camera", {"occurred_at": "1970-01-01T08:00:00+08:00"}, "payload.occurred_at"),
        ("hotline", {"received_at": "2100-01-01T00:00:00+08:00"}, "payload.received_at"),
        # loose input the contract used to take: a boolean or a string as a number, blank text
        ("app", {"lon": True}, "payload.lon"),
        ("app", {"lat": "29.63"}, "payload.lat"),
        ("camera", {"confidence": "0.9"}, "payload.confidence"),
        ("app", {"description": "   "}, "payload.description"),
        ("hotline", {"caller_name": " "}, "payload.caller_name"),
        ("app", {"reporter_id": ".."}, "payload.reporter_id"),
    ],
)
def test_payload_errors_name_the_field(source: str, changes: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRecord) as info:
        normalise(raw(source, **changes), GRIDS, CAMERA)
    assert field in str(info.value)
    # The same from the bytes on the topic: decoding succeeds, parsing names the field.
    with pytest.raises(BadRecord, match=field.replace(".", r"\.")):
        parse_payload(decode_raw(encoded(source, **changes)))


def test_several_errors_are_all_named() -> None:
    with pytest.raises(BadRecord) as info:
        normalise(raw("app", lon=200.0, category="nope"), GRIDS)
    message = str(info.value)
    assert "payload.lon" in message and "payload.category" in message and "; " in message


# --- camera -----------------------------------------------------------------------------------


def test_camera_alarm() -> None:
    rec = normalise(raw("camera"), GRIDS, CAMERA)
    occurred = datetime.fromisoformat("2026-11-22T09:30:00+08:00")
    assert rec.incident_id == "INC-TRK-0001" and rec.tracking_no == "TRK-0001"
    assert (rec.source, rec.source_id) == ("camera", "CAM-20261122-000123")
    assert (rec.category, rec.category_label, rec.severity) == ("smoke_fire", "烟火", 1)  # 0.91 bumps II to I
    assert rec.occurred_at == occurred and rec.due_at == occurred + CAMERA_RESPONSE_LIMIT
    assert rec.received_at == datetime.fromisoformat(RECEIVED) and rec.intake_ns == 7
    assert rec.camera_confidence == 0.91
    assert rec.snapshot_url == "http://video.example/snap/42.jpg"
    assert rec.stream_url == "rtsp://video.example/live/42"
    assert "清晖岸小区东门" in rec.title and "烟火" in rec.title
    loc = rec.location
    assert (loc.lon, loc.lat) == (CAMERA.lon, CAMERA.lat)  # an alarm is where its camera is
    assert (loc.grid_id, loc.grid_name, loc.community_id, loc.community_name) == (
        "G001", "清晖第1网格", "C01", "清晖社区",
    )  # fmt: skip
    assert (loc.camera_id, loc.camera_name, loc.out_of_area) == (CAMERA.camera_id, CAMERA.name, False)
    assert rec.caller_phone is None and rec.reporter_id is None


def test_camera_alarm_low_confidence_keeps_base_severity() -> None:
    assert normalise(raw("camera", confidence=0.5), GRIDS, CAMERA).severity == 2


def test_camera_alarm_without_optional_urls() -> None:
    rec = normalise(raw("camera", snapshot_url=..., stream_url=...), GRIDS, CAMERA)
    assert rec.snapshot_url is None and rec.stream_url is None


@pytest.mark.parametrize(
    "camera",
    [None, CameraInfo("50010800001320000099", "另一个摄像头", 106.525, 29.63)],
    ids=["none", "other"],
)
def test_unknown_camera_is_a_bad_record_naming_camera_id(camera: CameraInfo | None) -> None:
    with pytest.raises(BadRecord, match=r"payload\.camera_id") as info:
        normalise(raw("camera"), GRIDS, camera)
    assert "50010800001320000042" in str(info.value)


def test_camera_outside_every_grid_is_out_of_area() -> None:
    far = CameraInfo(CAMERA.camera_id, "远处", 106.60, 29.70)
    loc = normalise(raw("camera"), GRIDS, far).location
    assert loc.out_of_area and loc.grid_id is None and loc.camera_id == CAMERA.camera_id


# --- hotline ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "delta"),
    [
        ("2h", timedelta(hours=2)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("15d", timedelta(days=15)),
    ],
)
def test_hotline_due_at_is_received_at_plus_time_limit(limit: str, delta: timedelta) -> None:
    rec = normalise(raw("hotline", time_limit=limit), GRIDS)
    ticket_received = datetime.fromisoformat("2026-11-22T09:31:00+08:00")
    assert rec.occurred_at == ticket_received
    assert rec.due_at == ticket_received + delta
    assert rec.time_limit == limit


def test_hotline_ticket() -> None:
    rec = normalise(raw("hotline"), GRIDS)
    assert (rec.source, rec.source_id) == ("hotline", "12345-20261122-00077")
    assert (rec.category, rec.category_label) == ("cooking_fumes", "餐饮油烟")
    assert rec.severity == 3  # IV, floored to III by the 24 h class
    assert rec.description == "楼下饭店油烟太大"
    assert rec.title == "餐饮油烟·清晖岸小区3栋"
    # Personal data travels in the record; the console masks it on screens.
    assert (rec.caller_phone, rec.caller_name) == ("13800138000", "李女士")
    loc = rec.location
    assert (loc.lon, loc.lat, loc.address) == (106.5321, 29.6312, "清晖岸小区3栋")
    assert (loc.grid_id, loc.out_of_area) == ("G002", False)
    assert loc.camera_id is None


def test_hotline_2h_is_at_least_level_two() -> None:
    assert normalise(raw("hotline", time_limit="2h"), GRIDS).severity == 2


def test_hotline_without_address_titles_with_grid_or_out_of_area() -> None:
    assert normalise(raw("hotline", address=...), GRIDS).title == "餐饮油烟·清晖第2网格"
    rec = normalise(raw("hotline", address=..., lon=107.0), GRIDS)
    assert rec.title == "餐饮油烟·辖区外" and rec.location.out_of_area


# --- app --------------------------------------------------------------------------------------


def test_app_report() -> None:
    rec = normalise(raw("app"), GRIDS)
    reported = datetime.fromisoformat("2026-11-22T09:32:00+08:00")
    assert (rec.source, rec.source_id, rec.reporter_id) == ("app", "SSP-8f3a", "resident-1029")
    assert (rec.category, rec.category_label, rec.severity) == ("garbage_overflow", "垃圾满溢", 4)
    assert rec.occurred_at == reported and rec.due_at == reported + timedelta(hours=24)
    assert rec.photo_urls == ["http://app.example/p/8f3a.jpg"]
    assert rec.title == "垃圾满溢·清晖第1网格"
    assert (rec.location.grid_id, rec.location.out_of_area) == ("G001", False)
    assert rec.caller_phone is None


def test_app_report_outside_every_grid_is_kept_and_flagged() -> None:
    rec = normalise(raw("app", lon=106.60, lat=29.70), GRIDS)
    assert rec.location.out_of_area
    assert rec.location.grid_id is None and rec.location.community_id is None
    assert rec.title == "垃圾满溢·辖区外"


def test_app_report_without_photos() -> None:
    assert normalise(raw("app", photo_urls=...), GRIDS).photo_urls == []


# --- locate and identity -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lon", "lat", "grid"),
    [(106.525, 29.630, "G001"), (106.535, 29.630, "G002"), (106.510, 29.630, None), (106.535, 29.650, None)],
)
def test_locate(lon: float, lat: float, grid: str | None) -> None:
    loc = locate(lon, lat, GRIDS, address="某处")
    assert loc.grid_id == grid and loc.out_of_area is (grid is None)
    assert (loc.lon, loc.lat, loc.address) == (lon, lat, "某处")
    if grid:
        assert loc.community_id == "C01" and loc.grid_name is not None


def test_locate_with_no_grids_is_out_of_area() -> None:
    assert locate(106.525, 29.63, GridIndex([])).out_of_area


def test_incident_id_is_deterministic_from_tracking_no() -> None:
    a = normalise(raw("app", tracking_no="TRK-42"), GRIDS)
    b = normalise(decode_raw(raw("app", tracking_no="TRK-42").model_dump_json().encode()), GRIDS)
    c = normalise(raw("app", tracking_no="TRK-43"), GRIDS)
    assert a.incident_id == b.incident_id == incident_id_for("TRK-42") == "INC-TRK-42"
    assert c.incident_id != a.incident_id
    assert a == b  # a replayed raw report normalises to the very same record


def test_record_survives_json_round_trip() -> None:
    rec = normalise(raw("hotline"), GRIDS)
    assert type(rec).model_validate(orjson.loads(rec.model_dump_json())) == rec


@pytest.mark.parametrize(
    "received_at", ["9999-12-31T23:00:00-08:00", "0001-01-01T00:00:00+08:00", "1999-12-31T00:00:00Z"]
)
def test_a_raw_record_received_at_an_unusable_time_is_refused_not_crashed_on(received_at: str) -> None:
    value = orjson.dumps(
        {"tracking_no": "T", "source": "app", "received_at": received_at, "payload": APP_PAYLOAD}
    )
    with pytest.raises(BadRecord, match="received_at"):
        decode_raw(value)


def test_an_incident_record_with_a_time_the_dispatcher_cannot_store_is_refused_by_name() -> None:
    """The dispatcher used to retry it (asyncpg DataError) and dead-letter an 'internal error'."""
    record = normalise(raw("app"), GRIDS)
    data = orjson.loads(record.model_dump_json())
    for name in ("occurred_at", "received_at", "due_at"):
        with pytest.raises(ValidationError, match=name):
            IncidentRecord.model_validate({**data, name: "9999-12-31T23:59:59-08:00"})
