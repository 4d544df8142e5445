"""Personal data on screens: phones, names and reporter ids are masked."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from console.masking import mask_id, mask_name, mask_phone, masked_incident, masked_payload


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("13800138000", "138****8000"),
        (" 13800138000 ", "138****8000"),
        ("+8613800138000", "+86****8000"),
        ("010-62345678", "010****5678"),
        ("62345678", "******78"),
        ("12345", "***45"),
        ("12", "12"),
        ("", ""),
        (None, None),
    ],
)
def test_mask_phone(phone: str | None, masked: str | None) -> None:
    assert mask_phone(phone) == masked


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_mobile_numbers_hide_the_middle_four(phone: str) -> None:
    masked = mask_phone(phone)
    assert masked is not None and len(masked) == 11
    assert masked[:3] == phone[:3] and masked[3:7] == "****" and masked[-4:] == phone[-4:]


@given(st.from_regex(r"\+?[0-9\-]{5,20}", fullmatch=True))
def test_masked_phone_never_shows_the_whole_number(phone: str) -> None:
    masked = mask_phone(phone)
    assert masked is not None and "*" in masked and masked != phone


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("resident-1029", "re***29"),
        ("abcde", "ab***de"),
        ("abcd", "***"),
        ("a", "***"),
        ("", ""),
        (None, None),
    ],
)
def test_mask_id(value: str | None, masked: str | None) -> None:
    assert mask_id(value) == masked


@pytest.mark.parametrize(
    ("name", "masked"),
    [("李女士", "李**"), ("欧阳娜娜", "欧***"), ("王", "王"), ("", ""), (None, None)],
)
def test_mask_name(name: str | None, masked: str | None) -> None:
    assert mask_name(name) == masked


def test_masked_incident_masks_and_does_not_mutate() -> None:
    view = {
        "incident_id": "INC-1",
        "caller_phone": "13800138000",
        "caller_name": "李女士",
        "reporter_id": "resident-1029",
        "title": "餐饮油烟·清晖岸小区3栋",
    }
    original = dict(view)
    out = masked_incident(view)
    assert out == {**view, "caller_phone": "138****8000", "caller_name": "李**", "reporter_id": "re***29"}
    assert view == original


def test_masked_incident_without_personal_data() -> None:
    out = masked_incident({"incident_id": "INC-2", "source": "camera"})
    personal = {"caller_phone": None, "caller_name": None, "reporter_id": None}
    assert out == {"incident_id": "INC-2", "source": "camera", **personal}


def test_masked_payload() -> None:
    payload = {"ticket_no": "12345-1", "caller_phone": "13800138000", "caller_name": "李女士", "lon": 106.53}
    out = masked_payload("hotline", payload)
    assert out == {
        "ticket_no": "12345-1",
        "caller_phone": "138****8000",
        "caller_name": "李**",
        "lon": 106.53,
    }
    assert payload["caller_phone"] == "13800138000"  # the input is left alone
    app = masked_payload("app", {"report_id": "SSP-1", "reporter_id": "resident-1029"})
    assert app == {"report_id": "SSP-1", "reporter_id": "re***29"}
    camera = {"alarm_id": "CAM-1", "camera_id": "500108"}
    assert masked_payload("camera", camera) == camera  # nothing personal, no keys added


def test_the_ops_tail_sees_no_personal_data_anywhere_in_a_record() -> None:
    from console.masking import masked_tree

    raw = {
        "tracking_no": "H20261122-0001",
        "payload": {"caller_phone": "13800138000", "caller_name": "李女士", "description": "油烟"},
    }
    letter = {"topic": "reports.raw", "reason": "x", "value": orjson.dumps(raw).decode()}
    shown = masked_tree({"records": [raw, {"reporter_id": "resident-1029"}], "letter": letter})
    text = orjson.dumps(shown).decode()
    assert "13800138000" not in text and "李女士" not in text and "resident-1029" not in text
    assert shown["records"][0]["payload"]["caller_phone"] == "138****8000"
    assert shown["records"][0]["payload"]["description"] == "油烟"  # the rest untouched
    assert orjson.loads(shown["letter"]["value"])["payload"]["caller_name"].startswith("李")
    assert masked_tree("not json") == "not json" and masked_tree(None) is None
