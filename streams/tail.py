"""`centre-tail`: watch pipeline topics live, for ops engineers.

    python -m streams.tail incidents.events --grid G001
    python -m streams.tail --all --from beginning --json --max 100 | jq .

The tail reads with a consumer that has no group: it assigns itself every partition and never
commits, so running it (any number of times) cannot rebalance or move the pipeline's offsets.
Values are shown as decoded JSON when they are JSON and leniently decoded text otherwise, since
looking at records the pipeline could not read (dead letters) is a main use of this command.
It is long (some 570 lines) because it is a whole command-line tool: options, filters on the
fields of every topic's records, lenient decoding, masking, text and JSON output.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from contracts import topics as T
from contracts.categories import CATEGORIES
from contracts.masking import masked_tree
from infra.settings import Settings

BEIJING = timezone(timedelta(hours=8))
SOURCES = ("camera", "hotline", "app")
_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4}
_INCIDENT_TOPICS = frozenset({T.INCIDENTS_LOCATED, T.INCIDENTS_ENRICHED})

Start = Literal["end", "beginning"] | datetime
ValueKind = Literal["json", "text", "bytes", "none"]


class TailError(Exception):
    """A problem the user must fix (shown as one line, no traceback)."""

    exit_code = 1


class UnknownTopicError(TailError):
    exit_code = 2

    def __init__(self, unknown: Sequence[str], existing: Iterable[str]) -> None:
        self.unknown = list(unknown)
        self.existing = sorted(existing)
        names = ", ".join(repr(t) for t in self.unknown)
        listed = ", ".join(self.existing) or "(none)"
        super().__init__(f"unknown topic {names}; existing topics: {listed}")


class BrokerUnreachableError(TailError):
    exit_code = 1


@dataclass(frozen=True, slots=True)
class Filters:
    """What to show; every filter that is set must match (a record lacking the field does not)."""

    source: str | None = None
    category: str | None = None
    grid: str | None = None
    severity: int | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.source, self.category, self.grid, self.severity))


@dataclass(frozen=True, slots=True)
class TailRecord:
    """One record as shown: decoded key and value, with how the value was decoded."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: str | None
    value: Any
    value_kind: ValueKind


# --- decoding -------------------------------------------------------------------------------


def decode_key(raw: bytes | None) -> str | None:
    """Keys are UTF-8 strings; anything else is shown with its bad bytes escaped."""
    return None if raw is None else raw.decode("utf-8", "backslashreplace")


def decode_value(raw: bytes | None) -> tuple[Any, ValueKind]:
    """JSON if it parses, else UTF-8 text, else text with the undecodable bytes as \\xNN."""
    if raw is None:
        return None, "none"
    try:
        return orjson.loads(raw), "json"
    except orjson.JSONDecodeError:
        pass
    try:
        return raw.decode("utf-8"), "text"
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), "bytes"


def parse_severity(value: object) -> int | None:
    """1-4, or I-IV (with or without 级) as used on screens; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 1 <= value <= 4 else None
    if isinstance(value, str):
        text = value.strip().removesuffix("级").strip().upper()
        if text.isdigit():
            return parse_severity(int(text))
        return _ROMAN.get(text)
    return None


# --- filtering (pure) -----------------------------------------------------------------------


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _fields(**values: object) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _incident_fields(incident: Mapping[str, Any]) -> dict[str, Any]:
    location = _dict(incident.get("location"))
    return _fields(
        source=_str(incident.get("source")),
        category=_str(incident.get("category")),
        severity=parse_severity(incident.get("severity")),
        grid_id=_str(location.get("grid_id")) or _str(incident.get("grid_id")),
    )


def extract_fields(topic: str, value: Any) -> dict[str, Any]:
    """The filterable fields of a decoded value: any of source, category, severity (int), grid_id.

    A dead letter is filtered on the record it carries, when that record is still JSON, so
    `--category smoke_fire` on `deadletter` shows the smoke alarms the pipeline could not use.
    """
    if not isinstance(value, dict):
        return {}
    if topic == T.REPORTS_RAW:
        payload = _dict(value.get("payload"))
        category = _str(payload.get("category")) or _str(payload.get("alarm_type"))
        return _fields(source=_str(value.get("source")), category=category)
    if topic in _INCIDENT_TOPICS:
        return _incident_fields(value)
    if topic == T.INCIDENTS_EVENTS:
        return _incident_fields(_dict(value.get("incident")))
    if topic == T.DEADLETTER:
        inner_topic, inner = _str(value.get("topic")), value.get("value")
        if inner_topic is None or inner_topic == T.DEADLETTER or not isinstance(inner, str):
            return {}
        try:
            return extract_fields(inner_topic, orjson.loads(inner))
        except orjson.JSONDecodeError:
            return {}
    # Any other topic (positions, roster changes, ones added later): the usual field names.
    if isinstance(value.get("incident"), dict):
        return _incident_fields(value["incident"])
    return _incident_fields(value)


def matches(fields: Mapping[str, Any], filters: Filters) -> bool:
    """True when every filter that is set equals the record's field (missing never matches)."""
    wanted = {
        "source": filters.source,
        "category": filters.category,
        "grid_id": filters.grid,
        "severity": filters.severity,
    }
    return all(fields.get(name) == want for name, want in wanted.items() if want is not None)


def record_matches(topic: str, value: Any, filters: Filters) -> bool:
    return not filters.active or matches(extract_fields(topic, value), filters)


# --- formatting (pure) ----------------------------------------------------------------------


def _escape_text(text: str) -> str:
    """Escape control and other unprintable characters so a record cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _escape_json(text: str) -> str:
    """Like _escape_text, but with JSON escapes (unprintables can only occur inside strings)."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c.isprintable():
            out.append(c)
        elif ord(c) > 0xFFFF:
            hi, lo = divmod(ord(c) - 0x10000, 0x400)
            out.append(f"\\u{0xD800 + hi:04x}\\u{0xDC00 + lo:04x}")
        else:
            out.append(f"\\u{ord(c):04x}")
    return "".join(out)


def _time(timestamp_ms: int | None, tz: timezone) -> datetime | None:
    if timestamp_ms is None or timestamp_ms < 0:
        return None
    return datetime.fromtimestamp(timestamp_ms / 1000, tz)


def format_readable(record: TailRecord) -> str:
    """Header line (where, when in Beijing time, key) and the value, compact, Chinese as characters."""
    when = _time(record.timestamp_ms, BEIJING)
    shown_time = when.isoformat(sep=" ", timespec="milliseconds") if when else "(no time)"
    key = "-" if record.key is None else _escape_text(record.key)
    header = f"{record.topic}[{record.partition}]@{record.offset}  {shown_time}  key={key}"
    if record.value_kind == "json":
        body = _escape_json(json.dumps(record.value, ensure_ascii=False, separators=(", ", ": ")))
    elif record.value_kind == "none":
        body = "(no value)"
    elif record.value_kind == "text":
        body = f"(not JSON) {_escape_text(record.value)}"
    else:
        body = f"(not UTF-8) {_escape_text(record.value)}"
    stuck = record.value.get("stuck") if isinstance(record.value, dict) else None
    if record.topic == T.DEADLETTER and isinstance(stuck, str):
        # what no re-send will fix: said before the record, for the engineer who must act
        header += f"\n  STUCK: {_escape_text(stuck)}"
    return f"{header}\n  {body}"


def format_json(record: TailRecord) -> str:
    """One JSON object per line, timestamp in UTC, for jq and scripts."""
    when = _time(record.timestamp_ms, UTC)
    line = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": when.isoformat(timespec="milliseconds") if when else None,
        "key": record.key,
        "value": record.value,
    }
    return _escape_json(orjson.dumps(line).decode("utf-8"))


def text_sink(out: TextIO, json_lines: bool = False) -> Callable[[TailRecord], None]:
    fmt = format_json if json_lines else format_readable

    def write(record: TailRecord) -> None:
        out.write(fmt(record) + "\n")

    return write


def parse_start(text: str) -> Start:
    """`end`, `beginning`, or an ISO-8601 time with its UTC offset (a bare time is ambiguous)."""
    lowered = text.strip().lower()
    if lowered in ("end", "latest"):
        return "end"
    if lowered in ("beginning", "earliest"):
        return "beginning"
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected end, beginning or an ISO time, got {text!r}") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"give the time with its offset, e.g. {text.strip()}+08:00")
    if when.timestamp() < 0:
        raise ValueError(f"time before 1970: {text!r}")
    return when


# --- the tail -------------------------------------------------------------------------------


async def _seek(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], start: Start
) -> dict[TopicPartition, int]:
    """Place every partition; returns, per partition, a time to skip older records up to.

    offsets_for_times is only trusted as a lower bound: some Kafka-protocol brokers (Tansu,
    measured) ignore the time and answer the first offset. Dropping the records before the
    first one at or after the time gives Kafka's own answer either way; on Kafka, the offset
    is already exact and nothing is dropped.
    """
    if not isinstance(start, datetime):
        await (consumer.seek_to_end(*tps) if start == "end" else consumer.seek_to_beginning(*tps))
        return {}
    at_ms = int(start.timestamp() * 1000)
    found = await consumer.offsets_for_times({tp: at_ms for tp in tps})
    skip: dict[TopicPartition, int] = {}
    at_end = []
    for tp in tps:
        hit = found.get(tp)
        if hit is None:
            at_end.append(tp)
        else:
            consumer.seek(tp, hit.offset)
            skip[tp] = at_ms
    if at_end:
        await consumer.seek_to_end(*at_end)
    return skip


async def tail(
    target: Settings | str,
    topics: Sequence[str],
    *,
    start: Start = "end",
    filters: Filters = Filters(),  # frozen: safe as a default
    out: TextIO | Callable[[TailRecord], object] | None = None,
    json_lines: bool = False,
    max_records: int | None = None,
    idle_timeout: float | None = None,
    on_ready: Callable[[], object] | None = None,
) -> int:
    """Show the matching records of `topics` from `start`; returns how many were shown.

    `out` is a text stream (formatted by `json_lines`) or a callback taking each TailRecord.
    Stops after `max_records` shown or `idle_timeout` seconds without one (counted once the
    records already on the topics at start have been read); otherwise runs until cancelled.
    `on_ready` is called once every partition's start offset is fixed, so records produced
    after it are certain to be seen with `start="end"`.
    """
    settings = target if isinstance(target, Settings) else Settings(kafka_bootstrap=target)
    if out is None:
        out = sys.stdout
    emit: Callable[[TailRecord], object]
    stream: TextIO | None
    if callable(out):
        emit, stream = out, None
    else:
        emit, stream = text_sink(out, json_lines), out
    wanted = list(dict.fromkeys(topics))
    if not wanted:
        raise TailError("no topic given")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_servers,
        group_id=None,  # no group: never joins, rebalances or commits
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # if records vanish under us (retention), skip nothing more
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        request_timeout_ms=15_000,
        client_id="centre-tail",
    )
    try:
        try:
            await consumer.start()
            existing = await consumer.topics()
            unknown = [t for t in wanted if t not in existing]
            if unknown:
                raise UnknownTopicError(unknown, existing)
            tps = [
                TopicPartition(t, p) for t in wanted for p in sorted(consumer.partitions_for_topic(t) or ())
            ]
            consumer.assign(tps)
            skip_before = await _seek(consumer, tps, start)
            # Resolve lazy seeks now, so "end" means now and not at the first fetch.
            positions = {tp: await consumer.position(tp) for tp in tps}
            ends = await consumer.end_offsets(tps)
        except KafkaConnectionError as exc:
            raise BrokerUnreachableError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from None
        except KafkaError as exc:
            raise TailError(f"Kafka at {settings.kafka_bootstrap} failed: {exc!r}") from None
        behind = {tp: ends[tp] for tp in tps if positions[tp] < ends[tp]}
        if on_ready is not None:
            on_ready()
        return await _run(consumer, emit, stream, filters, skip_before, behind, max_records, idle_timeout)
    finally:
        await consumer.stop()


async def _run(
    consumer: AIOKafkaConsumer,
    emit: Callable[[TailRecord], object],
    stream: TextIO | None,
    filters: Filters,
    skip_before: dict[TopicPartition, int],
    behind: dict[TopicPartition, int],
    max_records: int | None,
    idle_timeout: float | None,
) -> int:
    """The fetch loop. `behind` holds the end offsets, at start, of partitions with a backlog:
    while reading it the tail is not idle, or a rare filter would stop halfway through."""
    loop = asyncio.get_running_loop()
    shown = 0
    last_active = loop.time()
    while max_records is None or shown < max_records:
        wait = 1.0
        if idle_timeout is not None:
            remaining = last_active + idle_timeout - loop.time()
            if remaining <= 0:
                break
            wait = min(wait, remaining)
        batches = await consumer.getmany(timeout_ms=max(1, int(wait * 1000)))
        for tp, messages in batches.items():
            for msg in messages:
                if tp in skip_before:
                    if msg.timestamp is None or msg.timestamp < skip_before[tp]:
                        continue
                    del skip_before[tp]
                value, kind = decode_value(msg.value)
                if not record_matches(msg.topic, value, filters):
                    continue
                value = masked_tree(value)  # ops see the pipeline, not callers' numbers
                emit(
                    TailRecord(
                        msg.topic, msg.partition, msg.offset, msg.timestamp, decode_key(msg.key), value, kind
                    )
                )
                shown += 1
                last_active = loop.time()
                if max_records is not None and shown >= max_records:
                    break
            if max_records is not None and shown >= max_records:
                break
        if stream is not None and batches:
            stream.flush()
        if behind and batches:
            last_active = loop.time()
            for tp in list(behind):
                if await consumer.position(tp) >= behind[tp]:
                    del behind[tp]
    return shown


# --- command line ---------------------------------------------------------------------------


def _start_arg(text: str) -> Start:
    try:
        return parse_start(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _severity_arg(text: str) -> int:
    level = parse_severity(text)
    if level is None:
        raise argparse.ArgumentTypeError(f"expected 1-4 or I-IV, got {text!r}")
    return level


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="centre-tail",
        description="Show records on the pipeline's Kafka topics as they arrive, without a consumer group.",
        epilog=f"Topics: {', '.join(T.PIPELINE_TOPICS)}. Times are shown in Beijing time (+08:00); "
        "--json prints UTC. Exit codes: 0 done, 1 broker problem, 2 usage or unknown topic, 130 Ctrl-C.",
    )
    p.add_argument("topics", nargs="*", metavar="TOPIC", help="topics to tail")
    p.add_argument("--all", action="store_true", help="tail every pipeline topic")
    p.add_argument(
        "--from",
        dest="start",
        type=_start_arg,
        default="end",
        metavar="WHEN",
        help="end (default: only new records), beginning, or an ISO time with offset, "
        "e.g. 2026-11-22T09:30:00+08:00",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line (for jq)")
    p.add_argument("--source", choices=SOURCES, help="only this channel")
    p.add_argument("--category", help="only this category (e.g. smoke_fire, cooking_fumes)")
    p.add_argument("--grid", help="only this grid id (e.g. G001)")
    p.add_argument("--severity", type=_severity_arg, help="only this severity: 1-4 or I-IV")
    p.add_argument(
        "--max", dest="max_records", type=_positive_int, metavar="N", help="stop after N records shown"
    )
    p.add_argument(
        "--timeout",
        dest="idle_timeout",
        type=_positive_float,
        metavar="S",
        help="stop after S seconds without a record shown (once the backlog is read)",
    )
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP)")
    return p


def _quiet_stdout() -> None:
    """After a broken pipe (`| head`), point stdout at /dev/null so exit does not complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.all and args.topics:
        parser.error("give topics or --all, not both")
    if not args.all and not args.topics:
        parser.error("give at least one topic, or --all")
    if args.category is not None and args.category not in CATEGORIES:
        print(
            f"centre-tail: note: {args.category!r} is not a known category (known: {', '.join(CATEGORIES)})",
            file=sys.stderr,
        )
    settings = Settings.from_env()
    if args.bootstrap:
        settings = dataclasses.replace(settings, kafka_bootstrap=args.bootstrap)

    # aiokafka logs every failed connection attempt; until the tail is running, the one-line
    # error below says it better. Once running, its warnings (broker lost...) go to stderr.
    logging.basicConfig(level=logging.WARNING, format="centre-tail: %(name)s: %(message)s", stream=sys.stderr)
    kafka_log = logging.getLogger("aiokafka")
    kafka_log.setLevel(logging.CRITICAL)

    coro = tail(
        settings,
        T.PIPELINE_TOPICS if args.all else args.topics,
        start=args.start,
        filters=Filters(args.source, args.category, args.grid, args.severity),
        out=sys.stdout,
        json_lines=args.json,
        max_records=args.max_records,
        idle_timeout=args.idle_timeout,
        on_ready=lambda: kafka_log.setLevel(logging.WARNING),
    )
    try:
        asyncio.run(coro)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except TailError as exc:
        print(f"centre-tail: {exc}", file=sys.stderr)
        return exc.exit_code
    except KafkaError as exc:  # while running: the broker gave up on us
        print(f"centre-tail: Kafka error: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
