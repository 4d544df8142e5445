"""What makes a record unusable, worded once for every consumer (and for the intake's 422s).

Every consumer (the Faust agents, the dispatcher, the console servers) decodes a record's value
with `decode_object` and checks its key with `check_key`, so a null value, an oversized record,
invalid UTF-8, text that is not JSON, JSON that is not an object, or a key that is not the
record's own id is refused with the same words, and the record goes to `deadletter` with them.

A record keyed by anything but its id sits on the wrong partition: processing it would break the
one-writer-per-incident (or per-responder) order the whole pipeline relies on.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from pydantic import ValidationError

# The largest legitimate record (an enriched incident with a 2,000-character description, nine
# photo URLs and fifteen recommended responders) is about 20 KB; anything far beyond is refused
# before it is parsed.
MAX_RECORD_BYTES: Final = 256 * 1024


class BadRecord(ValueError):
    """A record that can never be processed: it goes to the dead-letter topic with this reason."""


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """'field: reason; field: reason' — the same wording intake answers with."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(record)"
        parts.append(f"{prefix}{loc}: {err['msg']}")
    return "; ".join(parts)


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
