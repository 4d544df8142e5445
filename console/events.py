"""What a console server accepts from `incidents.events`, and what it does with the rest.

The board, the hub and the phones' task pushes read a handful of fields of each event; a record
without them would raise inside the board (or, worse, leave it half-updated, or make every later
snapshot fail to sort). So each record is checked first, with the same wording as every other
consumer (`contracts.events`), and a bad one goes to `deadletter` with stage "console".

Several console servers read every event (no consumer group), so each of them dead-letters the
same bad record: N servers, N letters. They name the record by the same (topic, partition,
offset), the same key and the same reason; readers count it once by that triple. Accepted on
purpose: a letter is an ops notice, not a command, and no server can know the others sent one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord

from contracts import topics
from contracts.events import check_event
from contracts.validation import BadRecord
from infra.deadletters import send_dead_letter

log = logging.getLogger(__name__)
STAGE = "console"


class DeadLetters:
    """Sends a console's letters without holding up the event feed: a letter that cannot be sent
    (the broker is away) is logged, and the feed goes on."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def _send(self, key: bytes | None, letter: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self._producer.send(topics.DEADLETTER, key=key, value=letter)
        return future

    async def send(self, record: ConsumerRecord, reason: str) -> None:
        try:
            sent = await send_dead_letter(self._send, STAGE, record, reason)
        except Exception as exc:
            where = f"{record.topic}[{record.partition}]@{record.offset}"
            log.error("could not dead-letter %s: %r", where, exc)
            return
        sent.add_done_callback(self._report)

    @staticmethod
    def _report(sent: asyncio.Future[Any]) -> None:
        if not sent.cancelled() and sent.exception() is not None:
            log.error("a dead letter was lost: %r", sent.exception())


def feed(record: ConsumerRecord, publish: Callable[[dict[str, Any]], object]) -> str | None:
    """Hand one record to `publish`; the reason it is unusable, if it is (nothing escapes)."""
    try:
        message = check_event(record.key, record.value)
    except BadRecord as exc:
        return str(exc)
    try:
        publish(message)
    except Exception as exc:
        log.exception("incident event at %s[%d]@%d failed", record.topic, record.partition, record.offset)
        return f"internal error: {type(exc).__name__}: {exc}"
    return None
