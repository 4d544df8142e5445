"""What makes a record unusable, worded once for every consumer, and the dead letter itself.

Every consumer (the Faust agents, the dispatcher, the console servers) decodes a record's value
with `decode_object` and checks its key with `check_key`, so a null value, an oversized record,
invalid UTF-8, text that is not JSON, JSON that is not an object, or a key that is not the
record's own id is refused with the same words, and the record goes to `deadletter` with them.

A record keyed by anything but its id sits on the wrong partition: processing it would break the
one-writer-per-incident (or per-responder) order the whole pipeline relies on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import orjson
from pydantic import ValidationError

from streams.normalise import BadRecord, describe_validation_error
from streams.records import DeadLetter

# The largest legitimate record (an enriched incident with a 2,000-character description, nine
# photo URLs and fifteen recommended responders) is about 20 KB; anything far beyond is refused
# before it is parsed.
MAX_RECORD_BYTES: Final = 256 * 1024
# A letter keeps this much of the refused value, so that it always fits where the record did.
MAX_LETTER_VALUE: Final = 64 * 1024


def kind_of(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def decode_object(value: bytes | None, limit: int = MAX_RECORD_BYTES) -> dict[str, Any]:
    """The record's value as a JSON object, or `BadRecord` saying why it is not one."""
    if value is None:
        raise BadRecord("value: null (a tombstone), nothing to process")
    if len(value) > limit:
        raise BadRecord(f"value: oversized, {len(value)} bytes (at most {limit})")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRecord(f"value is not JSON: invalid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"value is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRecord(f"value: not a JSON object but {kind_of(data)}")
    return data


def cut_utf8(value: bytes, limit: int) -> bytes:
    """At most `limit` bytes of `value`, never ending inside a UTF-8 character (a Chinese
    character is three bytes: a plain cut showed the ops tail a replacement mark)."""
    if len(value) <= limit:
        return value
    end = limit
    while end > 0 and end > limit - 3 and value[end] & 0xC0 == 0x80:  # a continuation byte
        end -= 1
    return value[:end]


def check_key(key: bytes | None, field: str, expected: str) -> None:
    """The record's key must be its own id (`field` of the value)."""
    if key is None:
        raise BadRecord(f"key: missing (must be the record's {field} {expected!r})")
    if key != expected.encode():
        shown = key.decode("utf-8", "replace")[:100]
        raise BadRecord(f"key: {shown!r} is not the record's {field} {expected!r}")


def validated(model: type[Any], data: dict[str, Any], prefix: str = "") -> Any:
    """`model.model_validate(data)`, with a validation failure as `BadRecord` naming the fields."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRecord(describe_validation_error(exc, prefix)) from None


def dead_letter(
    stage: str,
    reason: str,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    partition: int | None,
    offset: int | None,
    stuck: str | None = None,
) -> DeadLetter:
    """The letter for one refused record. (topic, partition, offset) names the record exactly:
    readers use it to drop the copies several consumers of one record may each send."""
    shown = "" if value is None else cut_utf8(value, MAX_LETTER_VALUE).decode("utf-8", "replace")
    if value is not None and len(value) > MAX_LETTER_VALUE:
        shown += f"…[cut: {len(value)} bytes in all]"
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key=None if key is None else key.decode("utf-8", "replace"),
        reason=reason,
        stage=stage,
        value=shown,
        at=datetime.now(UTC),
        stuck=stuck,
    )
