"""The ops tail: pure decoding/filtering/formatting, then against the real (Tansu) broker.

The broker is shared by the whole test session, so integration tests tag their records with a
fresh id (in keys and grid ids) and assert on their own records only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from contracts import topics as T
from infra.kafka_admin import create_topics
from infra.settings import Settings
from streams.tail import (
    BrokerUnreachableError,
    Filters,
    TailRecord,
    UnknownTopicError,
    decode_value,
    extract_fields,
    format_json,
    format_readable,
    main,
    matches,
    parse_severity,
    parse_start,
    record_matches,
    tail,
)

ROOT = Path(__file__).resolve().parents[2]
BEIJING = timezone(timedelta(hours=8))

# --- sample values, shaped like the contracts (contracts/reports.py, incidents.py) --------------


def incident(
    incident_id: str = "INC-1",
    *,
    source: str = "camera",
    category: str = "smoke_fire",
    severity: int = 1,
    grid_id: str | None = "G001",
) -> dict[str, Any]:
    return {
        "incident_id": incident_id,
        "tracking_no": "T-1",
        "source": source,
        "source_id": "CAM-1",
        "category": category,
        "category_label": "烟火",
        "severity": severity,
        "title": "清晖岸小区 烟火",
        "occurred_at": "2026-11-22T09:30:00+08:00",
        "location": {"lon": 106.5321, "lat": 29.6312, "grid_id": grid_id, "grid_name": "清晖第1网格"},
    }


def event(inc: dict[str, Any], version: int = 1, type_: str = "filed") -> dict[str, Any]:
    return {
        "event_id": f"{inc['incident_id']}:{version}",
        "incident_id": inc["incident_id"],
        "version": version,
        "type": type_,
        "at": "2026-11-22T09:30:01+08:00",
        "incident": inc,
    }


CAMERA_RAW = {
    "tracking_no": "T-CAM-1",
    "source": "camera",
    "received_at": "2026-11-22T09:30:00+08:00",
    "payload": {"alarm_id": "CAM-1", "camera_id": "5001", "alarm_type": "smoke_fire", "confidence": 0.91},
}
HOTLINE_RAW = {
    "tracking_no": "T-HL-1",
    "source": "hotline",
    "received_at": "2026-11-22T09:31:00+08:00",
    "payload": {"ticket_no": "12345-1", "category": "cooking_fumes", "description": "楼下饭店油烟太大"},
}
POSITION = {"responder_id": "P-0007", "lon": 106.53, "lat": 29.63, "at": "2026-11-22T09:30:05+08:00"}


def dead_letter(topic: str, inner: str) -> dict[str, Any]:
    return {
        "topic": topic,
        "partition": 0,
        "offset": 7,
        "key": "k",
        "reason": "bad",
        "stage": "enrich",
        "value": inner,
        "at": "2026-11-22T01:30:00Z",
    }


# --- decoding -------------------------------------------------------------------------------


def test_decode_value_json_text_bytes_none() -> None:
    assert decode_value(orjson.dumps({"a": "中"})) == ({"a": "中"}, "json")
    assert decode_value(b"hello world") == ("hello world", "text")
    assert decode_value(b"") == ("", "text")
    assert decode_value(None) == (None, "none")
    text, kind = decode_value(b"\xff\xfe\xe4\xb8\xad{")
    assert kind == "bytes"
    assert text == "\\xff\\xfe中{"  # valid UTF-8 kept readable, the rest escaped


@pytest.mark.parametrize(
    ("given", "level"),
    [(1, 1), (4, 4), ("2", 2), ("I", 1), ("ii", 2), ("III", 3), ("IV", 4), ("IV级", 4), (" 3 ", 3)],
)
def test_parse_severity_accepts_numbers_and_roman(given: object, level: int) -> None:
    assert parse_severity(given) == level


@pytest.mark.parametrize("given", [0, 5, "V", "five", True, 2.0, None, "", [1]])
def test_parse_severity_rejects_others(given: object) -> None:
    assert parse_severity(given) is None


# --- field extraction and matching ----------------------------------------------------------


def test_extract_fields_per_topic() -> None:
    inc = incident(source="hotline", category="cooking_fumes", severity=4, grid_id="G007")
    want = {"source": "hotline", "category": "cooking_fumes", "severity": 4, "grid_id": "G007"}
    assert extract_fields(T.INCIDENTS_LOCATED, inc) == want
    assert extract_fields(T.INCIDENTS_ENRICHED, inc | {"nearest": {}}) == want
    assert extract_fields(T.INCIDENTS_EVENTS, event(inc)) == want
    assert extract_fields(T.REPORTS_RAW, CAMERA_RAW) == {"source": "camera", "category": "smoke_fire"}
    assert extract_fields(T.REPORTS_RAW, HOTLINE_RAW) == {"source": "hotline", "category": "cooking_fumes"}
    assert extract_fields(T.POSITIONS_RAW, POSITION) == {}
    assert extract_fields(T.RESPONDERS_CHANGES, {"responder_id": "G-1", "grid_id": "G002"}) == {
        "grid_id": "G002"
    }


def test_extract_fields_out_of_area_incident_has_no_grid() -> None:
    assert "grid_id" not in extract_fields(T.INCIDENTS_ENRICHED, incident(grid_id=None))


def test_extract_fields_of_dead_letter_uses_the_record_it_carries() -> None:
    inner = orjson.dumps(incident(category="fight", severity=2, grid_id="G003")).decode()
    assert extract_fields(T.DEADLETTER, dead_letter(T.INCIDENTS_LOCATED, inner)) == {
        "source": "camera",
        "category": "fight",
        "severity": 2,
        "grid_id": "G003",
    }
    assert extract_fields(T.DEADLETTER, dead_letter(T.REPORTS_RAW, "\ufffd\ufffdnot json")) == {}
    assert extract_fields(T.DEADLETTER, dead_letter(T.DEADLETTER, inner)) == {}  # no recursion loops


@pytest.mark.parametrize("value", [None, "text", 42, [1, 2], {"incident": "x"}, {"location": 3}])
def test_extract_fields_tolerates_any_shape(value: Any) -> None:
    for topic in (*T.PIPELINE_TOPICS, "other.topic"):
        assert isinstance(extract_fields(topic, value), dict)


def test_extract_fields_ignores_wrongly_typed_fields() -> None:
    weird = {"source": 1, "category": None, "severity": "high", "location": {"grid_id": 5}}
    assert extract_fields(T.INCIDENTS_ENRICHED, weird) == {}
    assert extract_fields(T.INCIDENTS_ENRICHED, {"severity": "II"}) == {"severity": 2}


def test_matches_ands_filters_and_missing_fields_never_match() -> None:
    fields = {"source": "camera", "category": "smoke_fire", "severity": 1, "grid_id": "G001"}
    assert matches(fields, Filters())
    assert matches(fields, Filters(source="camera", category="smoke_fire", grid="G001", severity=1))
    assert not matches(fields, Filters(source="camera", grid="G002"))
    assert not matches(fields, Filters(severity=2))
    assert not matches({"source": "camera"}, Filters(grid="G001"))
    assert not matches({}, Filters(severity=1))


def test_record_matches_on_garbage() -> None:
    assert record_matches(T.DEADLETTER, "\\xff garbage", Filters())
    assert not record_matches(T.DEADLETTER, "\\xff garbage", Filters(category="fight"))
    assert record_matches(T.INCIDENTS_EVENTS, event(incident(severity=3)), Filters(severity=3))


# --- formatting -----------------------------------------------------------------------------

AT = datetime(2026, 11, 22, 9, 30, 0, 123000, tzinfo=BEIJING)
AT_MS = int(AT.timestamp() * 1000)


def rec(value: Any, kind: str = "json", key: str | None = "INC-1", ts: int | None = AT_MS) -> TailRecord:
    return TailRecord(T.INCIDENTS_EVENTS, 3, 42, ts, key, value, kind)  # type: ignore[arg-type]


def test_readable_shows_place_beijing_time_key_and_chinese() -> None:
    text = format_readable(rec(event(incident())))
    header, body = text.split("\n")
    assert header == "incidents.events[3]@42  2026-11-22 09:30:00.123+08:00  key=INC-1"
    assert "清晖岸小区 烟火" in body and "\\u" not in body
    assert json.loads(body) == event(incident())  # compact, but still JSON


def test_readable_non_json_values_and_missing_key() -> None:
    assert format_readable(rec("just text", "text", key=None)).endswith("key=-\n  (not JSON) just text")
    body = format_readable(rec("\\xff\\xfe中", "bytes")).split("\n")[1]
    assert body == "  (not UTF-8) \\xff\\xfe中"
    assert format_readable(rec(None, "none", ts=None)).split("\n") == [
        "incidents.events[3]@42  (no time)  key=INC-1",
        "  (no value)",
    ]


def test_readable_escapes_terminal_control_characters() -> None:
    text = format_readable(rec("a\x1b[2Jb\nc\u202e", "text", key="k\x07"))
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert text.count("\n") == 1
    assert "a\\x1b[2Jb\\nc\\u202e" in text and "key=k\\x07" in text
    json_body = format_readable(rec({"t": "x\x1b\u2028y"})).split("\n")[1]
    assert "\x1b" not in json_body and json.loads(json_body) == {"t": "x\x1b\u2028y"}


def test_json_line_is_parseable_with_utc_timestamp() -> None:
    line = format_json(rec(event(incident())))
    assert "\n" not in line and "烟火" in line
    assert json.loads(line) == {
        "topic": "incidents.events",
        "partition": 3,
        "offset": 42,
        "timestamp": "2026-11-22T01:30:00.123+00:00",
        "key": "INC-1",
        "value": event(incident()),
    }


def test_json_line_for_garbage_text_and_controls() -> None:
    assert json.loads(format_json(rec("\\xff\\xfe中", "bytes")))["value"] == "\\xff\\xfe中"
    assert json.loads(format_json(rec("plain", "text", key=None, ts=None))) | {} == {
        "topic": "incidents.events",
        "partition": 3,
        "offset": 42,
        "timestamp": None,
        "key": None,
        "value": "plain",
    }
    line = format_json(rec({"t": "x\x7f\u2028\U000e0001y"}))
    assert all(c.isprintable() for c in line)
    assert json.loads(line)["value"] == {"t": "x\x7f\u2028\U000e0001y"}


# --- start position and command line ------------------------------------------------------


def test_parse_start() -> None:
    assert parse_start("end") == "end"
    assert parse_start("BEGINNING") == "beginning"
    assert parse_start("2026-11-22T09:30:00+08:00") == datetime(2026, 11, 22, 1, 30, tzinfo=UTC)
    assert parse_start("2026-11-22T01:30:00Z") == datetime(2026, 11, 22, 1, 30, tzinfo=UTC)
    for bad in ("2026-11-22T09:30:00", "yesterday", "1900-01-01T00:00:00+00:00"):
        with pytest.raises(ValueError):
            parse_start(bad)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--all", "reports.raw"],
        ["reports.raw", "--severity", "V"],
        ["reports.raw", "--from", "2026-11-22T09:30:00"],
        ["reports.raw", "--source", "fax"],
        ["reports.raw", "--max", "0"],
        ["reports.raw", "--timeout", "-1"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


# --- against the broker ---------------------------------------------------------------------

Produced = tuple[str, int, int, str | None]  # topic, partition, offset, key


@pytest.fixture(scope="module")
async def kafka(broker: str) -> AsyncIterator[str]:
    await create_topics(Settings(kafka_bootstrap=broker, topic_partitions=4))
    yield broker


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


async def produce(
    bootstrap: str,
    items: Sequence[tuple[str, str | None, bytes | None]],
    timestamp_ms: int | None = None,
    partition: int | None = None,
) -> list[Produced]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        out = []
        for topic, key, value in items:
            md = await producer.send_and_wait(
                topic,
                value,
                key=None if key is None else key.encode(),
                timestamp_ms=timestamp_ms,
                partition=partition,
            )
            out.append((topic, md.partition, md.offset, key))
        return out
    finally:
        await producer.stop()


async def collect(bootstrap: str, topics: Sequence[str], **kwargs: Any) -> list[TailRecord]:
    got: list[TailRecord] = []
    kwargs.setdefault("idle_timeout", 1.5)
    await asyncio.wait_for(tail(bootstrap, topics, out=got.append, **kwargs), 30)
    return got


def placed(records: Sequence[TailRecord]) -> dict[tuple[str, int, int], TailRecord]:
    return {(r.topic, r.partition, r.offset): r for r in records}


async def test_from_beginning_shows_every_record_with_its_key_partition_offset(kafka: str, tag: str) -> None:
    inc = incident(f"INC-{tag}", grid_id=f"G-{tag}")
    letter = dead_letter(T.INCIDENTS_LOCATED, "\ufffd\ufffd{broken")
    items: list[tuple[str, str | None, bytes | None]] = [
        (T.REPORTS_RAW, f"T-{tag}-{i}", orjson.dumps(CAMERA_RAW | {"tracking_no": f"T-{tag}-{i}"}))
        for i in range(6)
    ]
    items += [
        (T.INCIDENTS_ENRICHED, f"INC-{tag}", orjson.dumps(inc)),
        (T.INCIDENTS_EVENTS, f"INC-{tag}", orjson.dumps(event(inc, 1))),
        (T.INCIDENTS_EVENTS, f"INC-{tag}", orjson.dumps(event(inc, 2, "dispatched"))),
        (T.POSITIONS_RAW, f"P-{tag}", orjson.dumps(POSITION)),
        (T.DEADLETTER, f"k-{tag}", orjson.dumps(letter)),
        (T.DEADLETTER, f"k2-{tag}", b"\xff\xfe not json \x00"),
        (T.DEADLETTER, None, b"plain text"),
    ]
    produced = await produce(kafka, items)
    assert len({p for _, p, _, _ in produced[:6]}) > 1  # several partitions really are read

    got = placed(await collect(kafka, T.PIPELINE_TOPICS, start="beginning"))
    for (topic, partition, offset, key), (_, _, raw) in zip(produced, items, strict=True):
        shown = got[(topic, partition, offset)]
        assert shown.key == key
        assert shown.value == decode_value(raw)[0]
    garbage = got[produced[-2][:3]]
    assert garbage.value_kind == "bytes" and garbage.value.startswith("\\xff\\xfe not json")
    assert got[produced[-1][:3]].value == "plain text" and got[produced[-1][:3]].key is None


async def test_filters_by_category_grid_and_severity(kafka: str, tag: str) -> None:
    grid_a, grid_b = f"GA-{tag}", f"GB-{tag}"
    incs = {
        "fire_a_1": incident(f"I1-{tag}", category="smoke_fire", severity=1, grid_id=grid_a),
        "fight_a_2": incident(f"I2-{tag}", category="fight", severity=2, grid_id=grid_a),
        "fire_b_2": incident(f"I3-{tag}", category="smoke_fire", severity=2, grid_id=grid_b),
        "fumes_a_4": incident(
            f"I4-{tag}", source="hotline", category="cooking_fumes", severity=4, grid_id=grid_a
        ),
    }
    items = [(T.INCIDENTS_ENRICHED, i["incident_id"], orjson.dumps(i)) for i in incs.values()]
    items += [(T.INCIDENTS_EVENTS, i["incident_id"], orjson.dumps(event(i))) for i in incs.values()]
    produced = dict(zip([*incs, *(f"ev_{n}" for n in incs)], await produce(kafka, items), strict=True))
    topics = [T.INCIDENTS_ENRICHED, T.INCIDENTS_EVENTS]

    async def shown(filters: Filters) -> set[str]:
        got = placed(await collect(kafka, topics, start="beginning", filters=filters, idle_timeout=1.0))
        for r in got.values():  # everything shown (ours or not) satisfies the filter
            assert matches(extract_fields(r.topic, r.value), filters)
        return {name for name, p in produced.items() if p[:3] in got}

    assert await shown(Filters(grid=grid_a)) == {
        "fire_a_1", "fight_a_2", "fumes_a_4", "ev_fire_a_1", "ev_fight_a_2", "ev_fumes_a_4"
    }  # fmt: skip
    assert await shown(Filters(grid=grid_a, severity=2)) == {"fight_a_2", "ev_fight_a_2"}
    assert await shown(Filters(category="smoke_fire", severity=2)) >= {"fire_b_2", "ev_fire_b_2"}
    assert not (await shown(Filters(category="smoke_fire", severity=2))) & {"fire_a_1", "fight_a_2"}
    assert await shown(Filters(source="hotline", grid=grid_a)) == {"fumes_a_4", "ev_fumes_a_4"}
    assert await shown(Filters(grid=grid_b, severity=1)) == set()


async def test_from_time_skips_older_records(kafka: str, tag: str) -> None:
    # A topic of its own, so every record in each partition is known.
    topic = f"tail-time-{tag}"
    await create_topics(Settings(kafka_bootstrap=kafka, topic_partitions=4), (topic,))
    now_ms = int(time.time() * 1000)
    hour_ago, minute_ago = now_ms - 3_600_000, now_ms - 60_000

    def items(n: int, label: str) -> list[tuple[str, str | None, bytes | None]]:
        return [(topic, f"{label}-{i}", orjson.dumps({"n": i, "label": label})) for i in range(n)]

    await produce(kafka, items(3, "old"), hour_ago, partition=0)
    new = await produce(kafka, items(3, "new"), minute_ago, partition=0)
    # Written after the start point with an old time: a start position, not a filter (as Kafka).
    late = await produce(kafka, items(1, "late"), hour_ago, partition=0)
    await produce(kafka, items(3, "old1"), hour_ago, partition=1)  # nothing after the time here

    got: list[TailRecord] = []
    ready = asyncio.Event()
    since = datetime.fromtimestamp((now_ms - 1_800_000) / 1000, BEIJING)
    task = asyncio.create_task(
        tail(kafka, [topic], start=since, out=got.append, idle_timeout=2.0, on_ready=ready.set)
    )
    try:
        await asyncio.wait_for(ready.wait(), 15)
        arriving = await produce(kafka, items(1, "arriving"), partition=1)  # so partition 1 starts at its end
        await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
    assert [(r.partition, r.offset, r.key) for r in got if r.partition == 0] == [
        (p, o, k) for _, p, o, k in new + late
    ]
    assert [(r.partition, r.offset, r.key) for r in got if r.partition != 0] == [
        (p, o, k) for _, p, o, k in arriving
    ]
    assert {r.timestamp_ms for r in got if r.key and r.key.startswith("new")} == {minute_ago}

    # A time after every record shows nothing of what is there.
    future = datetime.fromtimestamp((now_ms + 60_000) / 1000, UTC)
    assert await collect(kafka, [topic], start=future) == []


async def test_from_end_shows_only_records_produced_after_start(kafka: str, tag: str) -> None:
    inc = incident(f"INC-{tag}", grid_id=f"G-{tag}")
    before = await produce(
        kafka, [(T.INCIDENTS_EVENTS, f"INC-{tag}-{i}", orjson.dumps(event(inc, i))) for i in range(4)]
    )
    got: list[TailRecord] = []
    ready = asyncio.Event()
    task = asyncio.create_task(
        tail(
            kafka,
            [T.INCIDENTS_EVENTS, T.DEADLETTER],
            filters=Filters(grid=f"G-{tag}"),
            out=got.append,
            idle_timeout=3.0,
            on_ready=ready.set,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 15)
        after = await produce(
            kafka,
            [(T.INCIDENTS_EVENTS, f"INC-{tag}-{i}", orjson.dumps(event(inc, 10 + i))) for i in range(4)],
        )
        shown = await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
    assert shown == len(got) == 4
    assert {(r.topic, r.partition, r.offset) for r in got} == {p[:3] for p in after}
    assert not {(r.topic, r.partition, r.offset) for r in got} & {p[:3] for p in before}


async def test_max_records_stops_early(kafka: str, tag: str) -> None:
    inc = incident(f"INC-{tag}", grid_id=f"G-{tag}")
    await produce(kafka, [(T.INCIDENTS_EVENTS, f"INC-{tag}", orjson.dumps(event(inc, i))) for i in range(5)])
    got = await collect(kafka, [T.INCIDENTS_EVENTS], start="beginning", filters=Filters(grid=f"G-{tag}"),
                        max_records=3, idle_timeout=10)  # fmt: skip
    assert [r.value["version"] for r in got] == [0, 1, 2]  # one key, one partition, in order


async def test_idle_timeout_waits_until_the_backlog_is_read(kafka: str, tag: str) -> None:
    # A rare filter over a big backlog: the match at its very end must not be lost to --timeout.
    # Records of ~1 kB, because Tansu answers a fetch with ~5 MB whatever the size limits: the
    # backlog must take several fetches (and longer than the idle timeout) to read.
    topic = f"tail-backlog-{tag}"
    await create_topics(Settings(kafka_bootstrap=kafka, topic_partitions=1), (topic,))
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=5)
    await producer.start()
    try:
        filler = orjson.dumps(incident(grid_id="G-other") | {"description": "x" * 600})
        sends = [await producer.send(topic, filler) for _ in range(40_000)]
        sends.append(await producer.send(topic, orjson.dumps(incident(grid_id=f"G-{tag}")), key=b"last"))
        last = (await asyncio.gather(*sends))[-1]
    finally:
        await producer.stop()
    started = time.monotonic()
    got = await collect(kafka, [topic], start="beginning", filters=Filters(grid=f"G-{tag}"), idle_timeout=0.1)
    assert [(r.offset, r.key) for r in got] == [(last.offset, "last")], f"{time.monotonic() - started:.2f}s"


async def test_unknown_topic_names_it_and_lists_existing(kafka: str) -> None:
    with pytest.raises(UnknownTopicError) as exc:
        await asyncio.wait_for(tail(kafka, ["incidents.evnets", T.REPORTS_RAW], out=lambda r: None), 30)
    assert exc.value.unknown == ["incidents.evnets"]
    assert set(T.PIPELINE_TOPICS) <= set(exc.value.existing)
    assert "'incidents.evnets'" in str(exc.value) and T.INCIDENTS_EVENTS in str(exc.value)


def closed_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


async def test_unreachable_broker_is_a_clean_error() -> None:
    with pytest.raises(BrokerUnreachableError, match="cannot reach Kafka"):
        await asyncio.wait_for(tail(closed_port(), [T.REPORTS_RAW], out=lambda r: None), 30)


# --- the command, as a process -------------------------------------------------------------


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.tail", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_json_lines_parse(kafka: str, tag: str) -> None:
    inc = incident(f"INC-{tag}", grid_id=f"G-{tag}", severity=2)
    items = [(T.INCIDENTS_ENRICHED, f"INC-{tag}", orjson.dumps(inc))]
    items += [(T.INCIDENTS_EVENTS, f"INC-{tag}", orjson.dumps(event(inc, v))) for v in range(3)]
    produced = await produce(kafka, items)
    code, out, err = await run_cli(
        T.INCIDENTS_ENRICHED, T.INCIDENTS_EVENTS, "--from", "beginning", "--grid", f"G-{tag}",
        "--severity", "II", "--json", "--max", "4", "--timeout", "10", "--bootstrap", kafka,
    )  # fmt: skip
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert {(x["topic"], x["partition"], x["offset"], x["key"]) for x in lines} == set(produced)
    assert all(x["timestamp"].endswith("+00:00") for x in lines)
    ids = {x["value"].get("incident_id") or x["value"]["incident"]["incident_id"] for x in lines}
    assert ids == {f"INC-{tag}"}


async def test_cli_readable_until_idle(kafka: str, tag: str) -> None:
    inc = incident(f"INC-{tag}", grid_id=f"G-{tag}")
    await produce(kafka, [(T.INCIDENTS_ENRICHED, f"INC-{tag}", orjson.dumps(inc))])
    code, out, err = await run_cli(
        T.INCIDENTS_ENRICHED,
        "--from",
        "beginning",
        "--grid",
        f"G-{tag}",
        "--timeout",
        "1.5",
        "--bootstrap",
        kafka,
    )
    assert code == 0, err
    assert out.startswith("incidents.enriched[") and "+08:00  key=INC-" in out and "清晖岸小区" in out


async def test_cli_errors_are_clean(kafka: str) -> None:
    code, out, err = await run_cli("no.such.topic", "--bootstrap", kafka, "--timeout", "5")
    assert code == 2 and out == ""
    assert "'no.such.topic'" in err and T.REPORTS_RAW in err and "Traceback" not in err

    code, out, err = await run_cli(T.REPORTS_RAW, "--bootstrap", closed_port(), "--timeout", "5")
    assert code == 1 and out == ""
    assert "cannot reach Kafka" in err and "Traceback" not in err


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child process")
async def test_cli_ctrl_c_exits_cleanly(kafka: str, tag: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.tail", T.INCIDENTS_EVENTS, "--grid", f"G-{tag}", "--json",
        "--bootstrap", kafka,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        inc = incident(f"INC-{tag}", grid_id=f"G-{tag}")
        line = b""
        deadline = time.monotonic() + 30
        while not line and time.monotonic() < deadline:  # produce until the running tail shows one
            await produce(kafka, [(T.INCIDENTS_EVENTS, f"INC-{tag}", orjson.dumps(event(inc)))])
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), 1.0)
            except TimeoutError:
                pass
        assert json.loads(line)["key"] == f"INC-{tag}"
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 15)
        err = (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_a_dead_letter_that_leaves_something_stuck_says_so_first() -> None:
    letter = {
        "topic": "reports.raw",
        "reason": "payload.reported_at: lies in the future",
        "stage": "normalise",
        "value": "{}",
        "stuck": "report A20261205-1: refused for good, not re-published",
    }

    def as_letter(value: dict[str, Any]) -> TailRecord:
        return TailRecord(T.DEADLETTER, 0, 7, AT_MS, "A20261205-1", value, "json")

    text = format_readable(as_letter(letter))
    assert text.splitlines()[1] == "  STUCK: report A20261205-1: refused for good, not re-published"
    assert "STUCK" not in format_readable(as_letter({**letter, "stuck": None}))
