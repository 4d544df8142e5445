"""Personal data on screens: phones, names and reporter ids are masked, and numbers typed into free text."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.masking import (
    mask_id,
    mask_name,
    mask_phone,
    mask_text,
    masked_event,
    masked_incident,
    masked_payload,
    masked_tree,
    responder_incident,
    unmasked_texts,
)


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


# --- numbers typed into free text ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("回电13800138000 联系人李女士", "回电138****8000 联系人李女士"),
        ("电话：023-68881234", "电话：023*****1234"),
        ("座机02368881234转", "座机023****1234转"),
        ("+86 138 0013 8000", "+86 *********8000"),
        ("身份证500101199001011234号", "身份证5001**********1234号"),
        ("身份证11010519491231002X", "身份证1101**********002X"),
        ("旧证110105491231002", "旧证1101*******1002"),
    ],
)
def test_phone_and_id_numbers_in_free_text_are_masked(text: str, masked: str) -> None:
    assert str(mask_text(text)).endswith(masked)


@pytest.mark.parametrize(
    "text",
    [
        "摄像头50010800001320000042告警",  # a 20-digit camera id
        "单号H20261122-5F3A9C1D",
        "2026-11-22T09:30:00+08:00",
        "坐标106.5321, 29.6312，3栋1201室",
        "置信度 91%，编号 12345-20261122-00077",
        "",
    ],
)
def test_what_is_not_a_personal_number_is_left_alone(text: str) -> None:
    assert mask_text(text) == text


chinese = st.text(alphabet=st.sampled_from("楼下油烟垃圾满了请尽快处理联系人李女士，。 "), max_size=12)


@given(chinese, st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True), chinese)
def test_a_mobile_number_anywhere_in_chinese_text_never_shows_whole(
    before: str, phone: str, after: str
) -> None:
    masked = mask_text(f"{before}{phone}{after}")
    assert masked is not None and phone not in masked
    assert masked == f"{before}{phone[:3]}****{phone[-4:]}{after}"  # a literal expectation


def test_free_text_is_masked_in_every_view_event_and_tail_record() -> None:
    view = {
        "incident_id": "INC-3",
        "description": "回电13800138000",
        "location": {"address": "联系电话 023-68881234 的那栋楼"},
        "tasks": [
            {"task_id": "T-1", "note": "已联系13800138000", "photo_urls": ["http://p/13800138000.jpg"]}
        ],
    }
    shown = masked_incident(view)
    assert shown["description"] == "回电138****8000"
    assert shown["location"]["address"] == "联系电话 023*****1234 的那栋楼"
    assert shown["tasks"][0]["note"] == "已联系138****8000"
    assert shown["tasks"][0]["photo_urls"] == ["http://p/13800138000.jpg"]  # a URL is not free text
    event = masked_event(
        {"type": "task.decline", "reason": "身份证500101199001011234", "data": {"text": "x"}}
    )
    assert event["reason"] == "身份证5001**********1234"
    phone_view = responder_incident({**view, "title": "垃圾满溢·回电13800138000"}, [])
    assert "13800138000" not in orjson.dumps(phone_view).decode()
    tail = orjson.loads(masked_tree({"value": orjson.dumps(view).decode()})["value"])
    assert tail["description"] == "回电138****8000" and tail["tasks"][0]["note"] == "已联系138****8000"


def test_what_the_reveal_returns_is_the_free_text_masking_changed() -> None:
    view = {"description": "回电13800138000", "title": "油烟", "tasks": [{"note": "座机023-68881234"}]}
    assert list(unmasked_texts(view)) == [
        ("description", "回电13800138000"),
        ("tasks.0.note", "座机023-68881234"),
    ]
