"""The one dead-letter sender, on the real broker: a record consumed off a topic and refused arrives
on `deadletter` keyed by its own key, naming its topic, partition and offset, the stage and reason."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord, RecordMetadata

from contracts.deadletters import DeadLetter
from contracts.topics import DEADLETTER
from infra.deadletters import send_dead_letter
from infra.kafka import make_consumer, make_producer, start_at_end, start_producer
from infra.kafka_admin import create_topics
from infra.settings import Settings

SOURCE = "deadletter-test.source"


@pytest.fixture
async def kafka(settings: Settings) -> AsyncIterator[tuple[Settings, AIOKafkaProducer]]:
    s = replace(settings, kafka_idempotence=False)  # Tansu refuses idempotent producers
    await create_topics(s, (SOURCE, DEADLETTER))
    producer = make_producer(s)
    await start_producer(producer)
    yield s, producer
    await producer.stop()


async def consumed(
    s: Settings, producer: AIOKafkaProducer, key: bytes | None, value: bytes
) -> ConsumerRecord:
    """A record as a stage gets it: written to the source topic, then read back."""
    md = await producer.send_and_wait(SOURCE, value, key=key)
    consumer = make_consumer(s, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(SOURCE, md.partition)
        consumer.assign([tp])
        consumer.seek(tp, md.offset)
        return await consumer.getone(tp)
    finally:
        await consumer.stop()


async def letters_of(consumer: AIOKafkaConsumer, stage: str) -> list[tuple[bytes | None, DeadLetter]]:
    got: list[tuple[bytes | None, DeadLetter]] = []
    for _ in range(50):
        for records in (await consumer.getmany(timeout_ms=100)).values():
            got += [(r.key, DeadLetter.model_validate_json(r.value or b"")) for r in records]
        if [g for g in got if g[1].stage == stage]:
            break
    return [g for g in got if g[1].stage == stage]


async def test_a_refused_record_arrives_as_its_letter(
    kafka: tuple[Settings, AIOKafkaProducer], caplog: pytest.LogCaptureFixture
) -> None:
    s, producer = kafka
    stage = f"test-{uuid.uuid4().hex[:8]}"
    record = await consumed(s, producer, b"INC-7", "{不是 JSON".encode())
    tail = await start_at_end(s, DEADLETTER)
    try:

        async def send(key: bytes | None, letter: bytes) -> RecordMetadata:
            return await producer.send_and_wait(DEADLETTER, letter, key=key)

        with caplog.at_level(logging.WARNING, logger="infra.deadletters"):
            md = await send_dead_letter(send, stage, record, "value is not JSON", stuck="a report")
        assert isinstance(md, RecordMetadata) and md.topic == DEADLETTER  # what the transport returned
        [(key, letter)] = await letters_of(tail, stage)
    finally:
        await tail.stop()
    assert key == b"INC-7"
    assert (letter.topic, letter.partition, letter.offset) == (SOURCE, record.partition, record.offset)
    assert (letter.key, letter.reason, letter.value, letter.stuck) == (
        "INC-7", "value is not JSON", "{不是 JSON", "a report"
    )  # fmt: skip
    assert (
        f"{stage}: dead-lettered {SOURCE}[{record.partition}]@{record.offset}: value is not JSON"
        in caplog.text
    )


async def test_a_letter_can_show_only_the_refused_part(kafka: tuple[Settings, AIOKafkaProducer]) -> None:
    s, producer = kafka
    record = await consumed(s, producer, None, b'{"positions": [{"ok": 1}, {"lat": 91}]}')
    sent: list[tuple[bytes | None, bytes]] = []

    async def send(key: bytes | None, letter: bytes) -> str:
        sent.append((key, letter))
        return "queued"

    assert (
        await send_dead_letter(send, "positions", record, "positions.1.lat: too far", value=b'{"lat": 91}')
        == "queued"
    )
    [(key, raw)] = sent
    letter = DeadLetter.model_validate_json(raw)
    assert key is None and letter.key is None and letter.stuck is None
    assert letter.value == '{"lat": 91}' and letter.offset == record.offset
