"""aiokafka clients built from settings, the same way everywhere.

Producers are idempotent with acks=all (a report acknowledged to its sender is on every
in-sync replica); consumers use the configured small fetch wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import UnknownError

from infra.faults import BROKER_UNAVAILABLE
from infra.settings import Settings

log = logging.getLogger(__name__)

# Clients re-read the cluster's metadata this often (aiokafka's default is 5 minutes): after a
# broker restart or a partition moving, sends that fail with a non-retriable error (which does
# not trigger a refresh) recover within seconds instead of minutes.
METADATA_MAX_AGE_MS = 5_000


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """acks=all always; idempotent unless KAFKA_IDEMPOTENCE=false (the local Tansu broker answers
    InitProducerId v0, the only version aiokafka speaks, with an error). Consumers never rely on
    it: every record carries an id and every effect is idempotent, so a retried send that lands
    twice changes nothing."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_servers,
        enable_idempotence=settings.kafka_idempotence,
        acks="all",
        linger_ms=0,
        request_timeout_ms=10_000,
        metadata_max_age_ms=METADATA_MAX_AGE_MS,
    )


async def start_producer(producer: AIOKafkaProducer) -> None:
    try:
        await producer.start()
    except UnknownError as exc:
        await producer.stop()
        raise RuntimeError(
            "the broker refused to give this producer an id (InitProducerId); Tansu does: "
            "set KAFKA_IDEMPOTENCE=false for it"
        ) from exc


def make_consumer(settings: Settings, *topic_names: str, group_id: str | None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topic_names,
        bootstrap_servers=settings.kafka_servers,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if group_id else "latest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_poll_records=500,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=2_000,
        metadata_max_age_ms=METADATA_MAX_AGE_MS,
    )


async def start_at_end(settings: Settings, topic: str) -> AIOKafkaConsumer:
    """A started consumer (no group) assigned every partition of `topic` and positioned at its
    end: a feed of what happens from now on (each console server reads every record)."""
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        parts = None
        for _ in range(100):
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic)
            if parts:
                break
            await asyncio.sleep(0.1)
        if not parts:
            raise RuntimeError(f"topic {topic} not found: create topics first")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
    except BaseException:
        await consumer.stop()
        raise
    return consumer


def stop_on_signals(stop: Callable[[], None]) -> None:
    """SIGINT/SIGTERM ask the service to finish its batch and shut down cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)


async def delivered(futures: Iterable[Awaitable[Any]]) -> None:
    """Wait for every send to be acknowledged, then raise the first failure, if any: no send's
    error is left unretrieved when an earlier one fails (a broker restart fails them all)."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def rewind_restarted_logs(consumer: AIOKafkaConsumer) -> list[TopicPartition]:
    """Partitions whose log now ends before this consumer's position (the broker lost it and
    started the log again) are read from their beginning; returns them. A consumer left at its
    old position would otherwise wait, silently, until the new log grew past it. The end is the
    high-water mark of the latest fetch: records returned never lie beyond it, so in normal
    operation it is never below the position."""
    restarted = []
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        if end is not None and end < await consumer.position(tp):
            restarted.append(tp)
    if restarted:
        log.error("logs restarted below our position (the broker lost them): %s; reading again", restarted)
        await consumer.seek_to_beginning(*restarted)
    return restarted


class RestartedLogCheck:
    """`rewind_restarted_logs` at most every `every_s`, for a consumer's polling loop; a broker
    that is away right now is looked at again next time."""

    def __init__(self, consumer: AIOKafkaConsumer, every_s: float = 2.0) -> None:
        self._consumer = consumer
        self._every_s = every_s
        self._checked = time.monotonic()

    async def __call__(self) -> None:
        if time.monotonic() - self._checked <= self._every_s:
            return
        self._checked = time.monotonic()
        with contextlib.suppress(*BROKER_UNAVAILABLE):
            await rewind_restarted_logs(self._consumer)
