"""`deadletter`: a record an agent could not use, and why; one builder for every stage.

(topic, partition, offset) names the refused record exactly: several consumers of one record
(every console server reads every event) may each send a letter for it, and readers count it once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from pydantic import BaseModel


class DeadLetter(BaseModel):
    """`deadletter`: a record an agent could not use, and why."""

    topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    reason: str
    stage: str
    value: str  # the original bytes, decoded leniently
    at: datetime
    # What the refusal leaves stuck for good (a report no stage will file, a command the outbox
    # stops re-sending): nothing re-sends it; an operator must look. None: nothing is waiting.
    stuck: str | None = None


# A letter keeps this much of the refused value, so that it always fits where the record did.
MAX_LETTER_VALUE: Final = 64 * 1024


def cut_utf8(value: bytes, limit: int) -> bytes:
    """At most `limit` bytes of `value`, never ending inside a UTF-8 character (a Chinese
    character is three bytes: a plain cut showed the ops tail a replacement mark)."""
    if len(value) <= limit:
        return value
    end = limit
    while end > 0 and end > limit - 3 and value[end] & 0xC0 == 0x80:  # a continuation byte
        end -= 1
    return value[:end]


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
