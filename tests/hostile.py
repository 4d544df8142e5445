"""Malformed variants of a valid record, and a reader that skips them, for the dead-letter tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from contracts.validation import MAX_RECORD_BYTES


@dataclass(frozen=True)
class Bad:
    """One malformed record and the words its dead letter's reason must contain."""

    kind: str
    key: bytes | None
    value: bytes | None
    words: tuple[str, ...]


def malformed(
    marker: str, id_field: str, valid: dict[str, Any], wrong: tuple[str, Any], missing: str
) -> list[Bad]:
    """Not JSON, not an object, a field of the wrong type, a missing field, oversized, invalid
    UTF-8, a null value, a key that is not the record's id (`id_field`), and no key."""
    with_wrong = {**valid, wrong[0]: wrong[1]}
    without = {k: v for k, v in valid.items() if k != missing}
    padded = {**valid, "padding": "x" * MAX_RECORD_BYTES}
    return [
        Bad("not-json", f"{marker}-not-json".encode(), b'{"half": ', ("not JSON",)),
        Bad("array", f"{marker}-array".encode(), b"[1, 2, 3]", ("not a JSON object",)),
        Bad("wrong-type", f"{marker}-wrong-type".encode(), orjson.dumps(with_wrong), (wrong[0],)),
        Bad("missing", f"{marker}-missing".encode(), orjson.dumps(without), (missing,)),
        Bad("oversized", f"{marker}-oversized".encode(), orjson.dumps(padded), ("oversized",)),
        Bad("utf8", f"{marker}-utf8".encode(), b'{"name": "\xff\xfe"}', ("UTF-8",)),
        Bad("null", f"{marker}-null".encode(), None, ("null",)),
        Bad("other-key", f"{marker}-other-key".encode(), orjson.dumps(valid), ("key", id_field)),
        Bad("no-key", None, orjson.dumps(valid), ("key", "missing")),
    ]


async def collect(
    servers: list[str], topic: str, want: Callable[[dict[str, Any]], bool], count: int, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Records of `topic` (JSON objects only: the junk the tests send is skipped) that `want`,
    until `count` are in or the time is up (then what was found)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
        group_id=None,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    try:
                        value = orjson.loads(r.value or b"")
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(value, dict) and want(value):
                        found.append(value)
    finally:
        await consumer.stop()
    return found
