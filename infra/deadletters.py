"""The one dead-letter sender every stage uses: the Faust agents, the dispatcher, the console servers.

The letter is built the same way (`contracts.deadletters.dead_letter`) and logged the same way
whatever carries it; each stage passes its own transport (a Faust topic's `send`, an aiokafka
producer's `send` or `send_and_wait`), and gets back what that returns.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from contracts.deadletters import dead_letter

log = logging.getLogger(__name__)
T = TypeVar("T")


class Refused(Protocol):
    """What a consumed record offers, from aiokafka (`ConsumerRecord`) or Faust (`Message`)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


async def send_dead_letter(
    send: Callable[[bytes | None, bytes], Awaitable[T]],
    stage: str,
    record: Refused,
    reason: str,
    *,
    value: bytes | None = None,
    stuck: str | None = None,
) -> T:
    """Send `record`'s letter through `send(key, letter)`. `value`: what to show when only a part
    of the record is refused (one fix of a batch); `stuck`: what the refusal leaves waiting."""
    shown = record.value if value is None else value
    topic, partition, offset = record.topic, record.partition, record.offset
    letter = dead_letter(stage, reason, topic, record.key, shown, partition, offset, stuck)
    log.warning("%s: dead-lettered %s[%s]@%s: %s", stage, topic, partition, offset, reason)
    return await send(record.key, letter.model_dump_json().encode())
