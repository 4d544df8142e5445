"""Each streams stage refuses every kind of malformed record with a reason naming the problem, and
takes the next valid record as if nothing happened (real PostgreSQL and Redis). The agents'
dead-lettering on a running worker is tested end to end in tests/e2e/test_deadletter.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from contracts.deadletters import MAX_LETTER_VALUE, cut_utf8, dead_letter
from contracts.geo import GridIndex
from contracts.reports import RawReport
from contracts.validation import BadRecord, check_key, decode_object
from infra.settings import Settings
from streams.normalise import normalise
from streams.service import StreamService
from tests.hostile import malformed

Handler = Callable[[bytes | None, bytes | None], Awaitable[Any]]


@pytest.fixture
async def service(
    settings: Settings, pg: asyncpg.Pool, redis: aioredis.Redis
) -> AsyncIterator[StreamService]:
    svc = StreamService(settings)
    await svc.start()
    yield svc
    await svc.stop()


def raw_report(tracking_no: str) -> RawReport:
    payload = {
        "report_id": f"SSP-{tracking_no}",
        "reporter_id": "resident-1",
        "reported_at": "2026-11-22T09:32:00+08:00",
        "category": "garbage_overflow",
        "description": "垃圾桶满了",
        "lon": 106.53,
        "lat": 29.63,
    }
    return RawReport(tracking_no=tracking_no, source="app", received_at=datetime.now(UTC), payload=payload)


def as_dict(model: Any) -> dict[str, Any]:
    return dict(orjson.loads(model.model_dump_json()))


async def stages(
    service: StreamService,
) -> list[tuple[str, Handler, str, dict[str, Any], tuple[str, Any], str]]:
    """(stage, handler, id field, a valid record, a field of the wrong type, a required field)."""
    await service.live.apply_roster(
        "DL-P1", {"name": "测试", "kind": "police", "org": "派出所", "on_duty": True}
    )
    roster = {"responder_id": "DL-V1", "name": "测试", "kind": "volunteer", "org": "队", "on_duty": False}
    fix = {"responder_id": "DL-P1", "lon": 106.5, "lat": 29.6, "at": datetime.now(UTC).isoformat()}
    return [
        (
            "normalise",
            service.locate_report,
            "tracking_no",
            as_dict(raw_report("DL-T1")),
            ("received_at", "x"),
            "source",
        ),
        (
            "enrich",
            service.enrich,
            "incident_id",
            as_dict(normalise(raw_report("DL-T2"), GridIndex([]))),
            ("severity", "high"),
            "location",
        ),
        ("positions", service.apply_position, "responder_id", fix, ("lat", "north"), "at"),
        ("roster", service.apply_roster, "responder_id", roster, ("on_duty", "perhaps"), "kind"),
    ]


async def test_every_malformed_record_is_refused_naming_the_problem_and_the_next_is_taken(
    service: StreamService,
) -> None:
    for stage, handler, id_field, valid, wrong, missing in await stages(service):
        for bad in malformed(f"DL-{stage}", id_field, valid, wrong, missing):
            with pytest.raises(BadRecord) as refused:
                await handler(bad.key, bad.value)
            for word in bad.words:
                assert word in str(refused.value), (stage, bad.kind, str(refused.value))
        await handler(str(valid[id_field]).encode(), orjson.dumps(valid))  # the next one is fine


async def test_a_camera_alarm_with_a_malformed_camera_id_is_refused_before_any_lookup(
    service: StreamService,
) -> None:
    """The payload is held to its contract before the registry is asked (PostgreSQL cannot even
    be asked about an id with a NUL in it)."""
    raw = RawReport(
        tracking_no="DL-C1",
        source="camera",
        received_at=datetime.now(UTC),
        payload={
            "alarm_id": "CAM-1",
            "camera_id": "cam\x00era",
            "alarm_type": "fight",
            "confidence": 0.5,
            "occurred_at": "2026-11-22T09:30:00+08:00",
        },
    )
    with pytest.raises(BadRecord, match=r"payload\.camera_id"):
        await service.locate_report(b"DL-C1", raw.model_dump_json().encode())


def test_decoding_words_each_problem() -> None:
    assert decode_object(b'{"a": 1}') == {"a": 1}
    cases = {
        None: "null",
        b"\xc3\x28": "invalid UTF-8",
        b"nope": "not JSON",
        b'"text"': "not a JSON object but a string",
        b"null": "not a JSON object but null",
        b"12": "not a JSON object but a number",
        b"{}" + b" " * 300_000: "oversized",
    }
    for value, words in cases.items():
        with pytest.raises(BadRecord, match=words):
            decode_object(value)
    check_key(b"INC-1", "incident_id", "INC-1")
    with pytest.raises(BadRecord, match="key: 'INC-2' is not the record's incident_id 'INC-1'"):
        check_key(b"INC-2", "incident_id", "INC-1")
    with pytest.raises(BadRecord, match="key: missing"):
        check_key(None, "incident_id", "INC-1")


def test_a_letter_always_fits_where_its_record_did() -> None:
    letter = dead_letter("enrich", "value: oversized", "incidents.located", b"k", b"x" * 900_000, 1, 7)
    assert len(letter.model_dump_json()) < MAX_LETTER_VALUE + 1000
    assert letter.value.endswith("[cut: 900000 bytes in all]")
    assert (letter.topic, letter.partition, letter.offset, letter.key) == ("incidents.located", 1, 7, "k")


async def test_a_batch_of_positions_names_each_bad_fix_and_applies_the_rest(service: StreamService) -> None:
    """The positions agent applies fixes in batches: a bad fix is refused on its own, naming the
    problem, and the good ones around it are applied."""
    at = datetime.now(UTC).isoformat()
    await service.apply_roster(
        b"DL-BP1",
        orjson.dumps(
            {"responder_id": "DL-BP1", "name": "测试", "kind": "police", "org": "所", "on_duty": True}
        ),
    )
    good = {"responder_id": "DL-BP1", "lon": 106.51, "lat": 29.61, "at": at}
    letters = await service.apply_positions(
        [
            (b"DL-BP1", orjson.dumps(good)),
            (b"DL-BP1", b"{not json"),
            (b"DL-BP1", orjson.dumps({**good, "lat": "north"})),
            (b"DL-NOBODY", orjson.dumps({**good, "responder_id": "DL-NOBODY"})),
        ]
    )
    reasons = {letter.index: letter.reason for letter in letters}
    assert sorted(reasons) == [1, 2, 3] and all(letter.value is None for letter in letters[:2])
    assert "JSON" in reasons[1]
    assert "lat" in reasons[2]
    assert "unknown responder" in reasons[3]
    assert (await service.live.responder("DL-BP1"))["lon"] == "106.51"


async def test_a_batch_record_refuses_each_bad_fix_on_its_own_and_applies_the_rest(
    service: StreamService,
) -> None:
    """The position intake sends one record per partition holding many fixes: a bad fix in it
    is lettered with its index, the problem and its own value; the others are applied."""
    at = datetime.now(UTC).isoformat()
    for rid in ("DL-BB1", "DL-BB2"):
        await service.apply_roster(
            rid.encode(),
            orjson.dumps(
                {"responder_id": rid, "name": "测试", "kind": "police", "org": "所", "on_duty": True}
            ),
        )
    fixes = [
        {"responder_id": "DL-BB1", "lon": 106.52, "lat": 29.62, "at": at},
        {"responder_id": "DL-BB2", "lon": 106.53, "lat": "north", "at": at},
        "not a fix",
        {"responder_id": "DL-BB2", "lon": 106.54, "lat": 29.64, "at": at, "accuracy_m": 5},
        {"responder_id": "DL-BB-NOBODY", "lon": 106.5, "lat": 29.6, "at": at},
    ]
    letters = await service.apply_positions(
        [(None, orjson.dumps({"positions": fixes})), (None, orjson.dumps({"positions": "all of them"}))]
    )
    by_reason = sorted((letter.index, letter.reason, letter.value) for letter in letters)
    assert [(i, r.split(":")[0]) for i, r, _ in by_reason] == [
        (0, "positions.1.lat"),
        (0, "positions.2"),
        (0, "responder_id"),
        (1, "positions"),
    ]
    assert orjson.loads(by_reason[0][2] or b"") == fixes[1]  # the letter shows the bad fix itself
    assert "unknown responder 'DL-BB-NOBODY'" in by_reason[2][1]
    assert by_reason[3][2] is None and "not an array" in by_reason[3][1]
    assert (await service.live.responder("DL-BB1"))["lon"] == "106.52"
    assert (await service.live.responder("DL-BB2"))["lon"] == "106.54"


@given(st.text(min_size=1, max_size=300), st.integers(1, 400))
def test_a_letter_cuts_its_value_between_characters_never_inside_one(text: str, limit: int) -> None:
    """Chinese text cut in the middle of a character showed the ops tail a replacement mark."""
    raw = text.encode()
    cut = cut_utf8(raw, limit)
    assert len(cut) <= limit and raw.startswith(cut)
    assert cut.decode("utf-8") == text[: len(cut.decode("utf-8"))]  # whole characters only
    assert len(raw) - len(cut) == 0 or limit - len(cut) < 4  # at most one character short


def test_a_long_chinese_record_in_a_letter_shows_no_broken_character() -> None:
    value = ("垃圾桶满了" * 20_000).encode()  # 3 bytes a character: MAX_LETTER_VALUE falls inside one
    letter = dead_letter("normalise", "x", "reports.raw", b"k", value, 0, 1)
    assert "\ufffd" not in letter.value and letter.value.startswith("垃圾桶满了")
