"""What a console server accepts from `incidents.events`, and what it does with the rest.

The board, the hub and the phones' task pushes read a handful of fields of each event; a record
without them would raise inside the board (or, worse, leave it half-updated, or make every later
snapshot fail to sort). So each record is checked first, with the same wording as every other
consumer (`streams.deadletter`), and a bad one goes to `deadletter` with stage "console".

Several console servers read every event (no consumer group), so each of them dead-letters the
same bad record: N servers, N letters. They name the record by the same (topic, partition,
offset), the same key and the same reason; readers count it once by that triple. Accepted on
purpose: a letter is an ops notice, not a command, and no server can know the others sent one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dispatcher.lifecycle import IncidentState
from streams import topics
from streams.deadletter import check_key, dead_letter, decode_object, validated
from streams.normalise import BadRecord

log = logging.getLogger(__name__)
STAGE = "console"
Id = Annotated[str, Field(min_length=1, max_length=200)]


class _Loose(BaseModel):
    """Fields the console does not read are let through: producers may add some."""

    model_config = ConfigDict(extra="allow")


class EventTask(_Loose):
    task_id: Id
    responder_id: Id


class EventIncident(_Loose):
    """The parts of the incident view the board sorts and shows and the phones are sent."""

    incident_id: Id
    status: IncidentState
    severity: int
    title: str
    occurred_at: str
    tasks: list[EventTask] = []


class IncidentEvent(_Loose):
    """A state change (version and incident view) or a routed notice such as a refusal."""

    type: Annotated[str, Field(min_length=1, max_length=100)]
    incident_id: Id
    event_id: str | None = None
    command_id: str | None = None
    version: Annotated[int, Field(ge=1)] | None = None
    incident: EventIncident | None = None
    data: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> IncidentEvent:
        if (self.version is None) != (self.incident is None):
            raise ValueError("version and incident come together (a state change carries both)")
        if self.incident is not None and self.incident.incident_id != self.incident_id:
            raise ValueError(f"incident.incident_id is not the event's incident_id {self.incident_id!r}")
        return self


def check_event(key: bytes | None, value: bytes | None) -> dict[str, Any]:
    """The event as the hub takes it, or `BadRecord` saying why it is unusable."""
    message = decode_object(value)
    event: IncidentEvent = validated(IncidentEvent, message)
    check_key(key, "incident_id", event.incident_id)
    return message


class DeadLetters:
    """Sends a console's letters without holding up the event feed: a letter that cannot be sent
    (the broker is away) is logged, and the feed goes on."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def send(self, record: ConsumerRecord, reason: str) -> None:
        letter = dead_letter(
            STAGE, reason, record.topic, record.key, record.value, record.partition, record.offset
        )
        log.warning("dead-lettered %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason)
        try:
            sent = await self._producer.send(
                topics.DEADLETTER, key=record.key, value=letter.model_dump_json().encode()
            )
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
