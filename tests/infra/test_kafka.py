"""Kafka clients against a real Tansu that is restarted empty (what a lost log looks like)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.faults import BROKER_UNAVAILABLE
from infra.kafka import make_consumer, rewind_restarted_logs
from infra.settings import Settings
from tests.drills.servers import PrivateBroker


async def _topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(topic, v)
    finally:
        await producer.stop()


async def test_a_consumer_left_past_a_restarted_log_reads_the_new_log(tmp_path: Path) -> None:
    broker = PrivateBroker(tmp_path)
    await asyncio.to_thread(broker.start)
    consumer = None
    try:
        await _topic(broker.bootstrap, "events")
        await _produce(broker.bootstrap, "events", [b"old-%d" % i for i in range(5)])
        consumer = make_consumer(Settings(kafka_bootstrap=broker.bootstrap), group_id=None)
        await consumer.start()
        tp = TopicPartition("events", 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        assert await consumer.position(tp) == 5
        assert await rewind_restarted_logs(consumer) == []  # nothing lost: left alone
        # Records flowing while the consumer keeps up: never mistaken for a restarted log.
        flowing = asyncio.create_task(_produce(broker.bootstrap, "events", [b"more"] * 30))
        while not flowing.done() or await consumer.position(tp) < 35:
            await consumer.getmany(tp, timeout_ms=50)
            assert await rewind_restarted_logs(consumer) == []
        await flowing

        await asyncio.to_thread(broker.restart_empty, 0.5)
        await _topic(broker.bootstrap, "events")
        await _produce(broker.bootstrap, "events", [b"new-0", b"new-1"])
        outcome = None
        for _ in range(50):  # the client reconnects (the broker is away meanwhile: retried)
            try:
                if await rewind_restarted_logs(consumer) == [tp]:
                    outcome = "rewound"  # the rewind saw the shorter log
                    break
            except BROKER_UNAVAILABLE:
                pass  # anything else is a failure of the rewind, and fails the test
            await asyncio.sleep(0.2)
        if outcome is None and await consumer.position(tp) <= 2:
            outcome = "reset by the client"  # Kafka answers a fetch past the end with OffsetOutOfRange
        assert outcome is not None, "the consumer stayed past the end of the restarted log"
        # The consumer follows the new log: records appended now are read. (One that races the
        # rewind may be missed where the client also reset itself to the end; consoles catch
        # that up from PostgreSQL, see console/resync.py.)
        got: list[bytes] = []
        for k in range(2, 12):
            await _produce(broker.bootstrap, "events", [b"new-%d" % k])
            for _ in range(10):
                batch = await consumer.getmany(tp, timeout_ms=100)
                got += [r.value for r in batch.get(tp, []) if r.value is not None]
            if any(v.startswith(b"new-") and v != b"new-0" and v != b"new-1" for v in got):
                break
        assert any(v in got for v in (b"new-2", b"new-3", b"new-4")), got
    finally:
        if consumer is not None:
            await consumer.stop()
        await asyncio.to_thread(broker.stop)
