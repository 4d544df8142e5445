"""The intake contracts: a well-formed report of each channel is accepted, every malformed field is
refused by its name with a reason, and `reports.raw` refuses a time the pipeline cannot carry."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts.reports import SOURCE_ID_FIELD, SOURCE_MODELS, SOURCE_TIME_FIELD, AppReport, RawReport

GOOD: dict[str, dict[str, Any]] = {
    "camera": {
        "alarm_id": "A-1",
        "camera_id": "CAM-7",
        "alarm_type": "smoke_fire",
        "confidence": 0.93,
        "occurred_at": "2026-12-05T09:30:00+08:00",
        "snapshot_url": "https://cam.example/1.jpg",
        "stream_url": "rtsp://cam.example/live",
    },
    "hotline": {
        "ticket_no": "12345-0001",
        "received_at": "2026-12-05T09:30:00+08:00",
        "caller_phone": "+86-139000",
        "category": "gas_leak",
        "description": "燃气味很重",
        "lon": 106.55,
        "lat": 29.56,
        "time_limit": "2h",
    },
    "app": {
        "report_id": "R-9",
        "reporter_id": "U-3",
        "reported_at": "2026-12-05T09:30:00+08:00",
        "category": "streetlight",
        "description": "路灯不亮",
        "lon": 106.55,
        "lat": 29.56,
        "photo_urls": ["https://img.example/a.jpg"],
    },
}
# One malformed value per field, with the words its refusal must carry.
BAD: dict[str, dict[str, tuple[object, str]]] = {
    "camera": {
        "alarm_id": ("..", "pattern"),
        "alarm_type": ("arson", "unknown alarm type 'arson'; known: smoke_fire"),
        "confidence": (True, "valid number"),
        "occurred_at": ("2026-12-05T09:30:00", "timezone"),
        "stream_url": ("file:///etc/passwd", "pattern"),
        "snapshot_url": ("javascript:alert(1)", "URL"),
    },
    "hotline": {
        "caller_phone": ("call me", "pattern"),
        "category": ("arson", "unknown category 'arson'"),
        "description": ("   ", "at least 1 character"),
        "lat": (89.0, "less than or equal to 85.05"),
        "lon": ("106.5", "valid number"),
        "time_limit": ("1h", "unknown time limit '1h'; known: 2h, 24h"),
    },
    "app": {
        "reporter_id": ("-x", "pattern"),
        "description": ("a\x00b", "NUL"),
        "lon": (181.0, "180"),
        "photo_urls": (["https://img.example/a.jpg"] * 10, "at most 9"),
        "reported_at": ("soon", "datetime"),
    },
}


@pytest.mark.parametrize("source", sorted(SOURCE_MODELS))
def test_each_channel_names_its_id_and_time_and_accepts_a_good_report(source: str) -> None:
    model = SOURCE_MODELS[source]
    report = model.model_validate(GOOD[source])
    assert getattr(report, SOURCE_ID_FIELD[source]) == GOOD[source][SOURCE_ID_FIELD[source]]
    assert getattr(report, SOURCE_TIME_FIELD[source]).utcoffset() is not None


@given(
    st.sampled_from(sorted(BAD)).flatmap(
        lambda s: st.tuples(st.just(s), st.sets(st.sampled_from(sorted(BAD[s])), min_size=1))
    )
)
def test_every_malformed_field_is_refused_by_name_with_its_reason(case: tuple[str, set[str]]) -> None:
    source, broken = case
    data = {**GOOD[source], **{f: BAD[source][f][0] for f in broken}}
    with pytest.raises(ValidationError) as exc:
        SOURCE_MODELS[source].model_validate(data)
    errors = exc.value.errors()
    assert {e["loc"][0] for e in errors} == broken
    for e in errors:
        assert BAD[source][str(e["loc"][0])][1] in e["msg"], e


@pytest.mark.parametrize("source", sorted(SOURCE_MODELS))
def test_a_missing_id_or_time_and_an_unknown_field_are_refused(source: str) -> None:
    data = {**GOOD[source], "priority": "urgent"}
    del data[SOURCE_ID_FIELD[source]], data[SOURCE_TIME_FIELD[source]]
    with pytest.raises(ValidationError) as exc:
        SOURCE_MODELS[source].model_validate(data)
    assert {(e["loc"][0], e["type"]) for e in exc.value.errors()} == {
        (SOURCE_ID_FIELD[source], "missing"),
        (SOURCE_TIME_FIELD[source], "missing"),
        ("priority", "extra_forbidden"),
    }


def test_an_app_report_without_photos_has_an_empty_list() -> None:
    data = {k: v for k, v in GOOD["app"].items() if k != "photo_urls"}
    assert AppReport.model_validate(data).photo_urls == []


@pytest.mark.parametrize(
    ("received_at", "words"),
    [
        ("2026-12-05T09:30:00", "timezone"),
        ("1970-01-01T00:00:00Z", "outside 2000 to 2200"),
        ("0001-01-01T00:00:00+08:00", "outside any time"),
    ],
)
def test_a_raw_report_refuses_a_receipt_time_the_pipeline_cannot_carry(received_at: str, words: str) -> None:
    raw = {"tracking_no": "T-1", "source": "app", "received_at": received_at, "payload": GOOD["app"]}
    with pytest.raises(ValidationError) as exc:
        RawReport.model_validate(raw)
    assert [e["loc"] for e in exc.value.errors()] == [("received_at",)]
    assert words in exc.value.errors()[0]["msg"]
    ok = RawReport.model_validate({**raw, "received_at": "2026-12-05T09:30:00+08:00"})
    assert ok.payload == GOOD["app"] and ok.intake_ns is None
    with pytest.raises(ValidationError, match="source"):
        RawReport.model_validate({**raw, "received_at": "2026-12-05T09:30:00Z", "source": "fax"})
