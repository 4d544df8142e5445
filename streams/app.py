"""The Faust app and its agents. Agents are thin: hand the record to `StreamService`, send.

`build_app` is the composition root of a streams worker; nothing connects at import time.
Consumers' fetch wait comes from settings (Faust's aiokafka driver hard-codes 1,500 ms,
which costs ~0.5 s a hop against a broker whose fetch does not wake on arrival).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaDriverConsumer
from faust.transport.drivers.aiokafka import Transport as AIOKafkaDriverTransport
from faust.types import TP

from contracts import topics
from contracts.validation import BadRecord
from infra.deadletters import send_dead_letter
from infra.faults import TRANSIENT
from infra.settings import Settings
from streams.logwatch import OffsetWatch, beyond_log_end
from streams.service import Letter, StreamService

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_UNEXPECTED_ATTEMPTS = 3
LOG_CHECK_S = 2.0
POSITION_BATCH = 500  # fixes applied in one Redis round trip
POSITION_BATCH_WITHIN_S = 0.02  # a batch waits at most this long to fill
EXIT_LOG_RESTARTED = 75  # EX_TEMPFAIL: the supervisor starts the worker again


class _TunedConsumerThread(AIOKafkaConsumerThread):
    """Faust builds its aiokafka consumer here, with fetch_max_wait_ms=1500 hard-coded."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            if not hasattr(consumer, "_fetch_max_wait_ms"):
                raise RuntimeError("aiokafka changed: cannot set the consumer's fetch wait")
            consumer._fetch_max_wait_ms = wait_ms
        return consumer

    async def seek_to_committed(self) -> Mapping[Any, int]:
        """Committed offsets past the end of their log (the broker lost it) are not trusted:
        those partitions are read from their beginning (see streams.logwatch)."""
        committed: Mapping[Any, int] = await super().seek_to_committed()
        return dict(await self.call_thread(self._read_restarted_logs_from_start, committed))

    async def _read_restarted_logs_from_start(self, committed: Mapping[Any, int]) -> Mapping[Any, int]:
        consumer = self._ensure_consumer()
        ends = await consumer.end_offsets([tp for tp, o in committed.items() if o is not None])
        stale = beyond_log_end(committed, ends)
        if not stale:
            return committed
        starts = await consumer.beginning_offsets(stale)
        out = dict(committed)
        for tp in stale:
            log.error(
                "%s[%d]: committed offset %d is past the log's end %d (the broker lost it); reading from %d",
                tp.topic,
                tp.partition,
                committed[tp],
                ends[tp],
                starts[tp],
            )
            consumer.seek(tp, starts[tp])
            out[tp] = starts[tp]
        return out


class _TunedConsumer(AIOKafkaDriverConsumer):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _TunedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _TunedTransport(AIOKafkaDriverTransport):
    Consumer = _TunedConsumer


class CentreApp(faust.App):
    """faust.App whose consumers use our fetch wait."""

    fetch_max_wait_ms: int | None = None

    def _new_transport(self) -> Any:
        return _TunedTransport(self.conf.broker_consumer, self)


@dataclass(frozen=True, slots=True)
class Failed:
    """Why a record (or a whole batch) is to be dead-lettered."""

    reason: str


async def attempt(stage: str, call: Callable[[], Awaitable[T]]) -> T | Failed:
    """Run `call`: retry transient failures (a store away) until they pass, unexpected errors a
    few times; a bad record, or an error that keeps coming back, is a `Failed`."""
    delay, unexpected = 0.1, 0
    while True:
        try:
            return await call()
        except BadRecord as exc:
            return Failed(str(exc))
        except TRANSIENT as exc:
            log.warning("%s: transient failure, retrying in %.1fs: %r", stage, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        except Exception as exc:
            unexpected += 1
            log.exception("%s: unexpected failure (%d/%d)", stage, unexpected, MAX_UNEXPECTED_ATTEMPTS)
            if unexpected >= MAX_UNEXPECTED_ATTEMPTS:
                return Failed(f"internal error: {type(exc).__name__}: {exc}")
            await asyncio.sleep(delay)


def _through(deadletters: Any) -> Callable[[bytes | None, bytes], Awaitable[Any]]:
    """A Faust topic's `send` as the dead-letter sender's transport."""

    async def send(key: bytes | None, letter: bytes) -> Any:
        return await deadletters.send(key=key, value=letter)

    return send


Refuse = Callable[[str, bytes | None, str, str], Awaitable[str | None]]


async def process(
    stage: str,
    event: Any,
    handler: Callable[[bytes | None, bytes | None], Awaitable[T]],
    deadletters: Any,
    refuse: Refuse | None = None,
) -> T | None:
    """Run `handler` on one record's key and value: retry transient failures, dead-letter bad
    records (and records that keep failing), and go on with the next either way. `refuse`
    marks what a refused record leaves stuck (its report), so nothing re-sends it for ever."""
    message = event.message
    result = await attempt(stage, lambda: handler(message.key, message.value))
    if isinstance(result, Failed):
        stuck = None if refuse is None else await refuse(message.topic, message.key, stage, result.reason)
        await send_dead_letter(_through(deadletters), stage, message, result.reason, stuck=stuck)
        return None
    return result


async def process_batch(
    stage: str,
    events: Sequence[Any],
    handler: Callable[[list[tuple[bytes | None, bytes | None]]], Awaitable[list[Letter]]],
    deadletters: Any,
) -> None:
    """Like `process` for a batch: `handler` says what to dead-letter (a whole record, or a
    part of one, with its own value)."""
    records = [(e.message.key, e.message.value) for e in events]
    result = await attempt(stage, lambda: handler(records))
    if isinstance(result, Failed):
        result = [Letter(i, result.reason) for i in range(len(events))]
    for letter in result:
        message = events[letter.index].message
        await send_dead_letter(_through(deadletters), stage, message, letter.reason, value=letter.value)


def build_app(settings: Settings, service: StreamService | None = None) -> CentreApp:
    svc = service or StreamService(settings)
    app = CentreApp(
        settings.faust_app_id,
        broker=[f"kafka://{s}" for s in settings.kafka_servers],
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=0.0,
        web_port=settings.faust_web_port,
        web_host="127.0.0.1",
        datadir=f"{settings.state_dir}/faust-{settings.faust_web_port}",
        broker_commit_interval=0.5,
        # A worker that dies (SIGKILL, a lost host) gives its partitions up after 10 s rather
        # than Faust's default 60 s: reports on them wait that long for the rebalance.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        broker_rebalance_timeout=20.0,
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    watch = OffsetWatch()

    def topic(name: str) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    raw, located, enriched = (
        topic(topics.REPORTS_RAW),
        topic(topics.INCIDENTS_LOCATED),
        topic(topics.INCIDENTS_ENRICHED),
    )
    positions, roster, deadletters = (
        topic(topics.POSITIONS_RAW),
        topic(topics.RESPONDERS_CHANGES),
        topic(topics.DEADLETTER),
    )

    async def started() -> None:
        delay = 0.5
        while True:
            try:
                await svc.start()
                return
            except TRANSIENT as exc:
                log.warning("stores not reachable yet (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def each(stream: Any) -> AsyncIterator[Any]:
        await started()
        async for event in stream.events():
            watch.saw(event.message.topic, event.message.partition, event.message.offset)
            yield event

    async def check_logs() -> None:
        """A log that restarted below what we read: leave, and let the supervisor start us afresh."""
        restarted = watch.truncated(lambda t, p: app.consumer.highwater(TP(t, p)))
        if restarted:
            log.error("the broker lost its logs (%s); exiting to start afresh", "; ".join(restarted))
            logging.shutdown()
            os._exit(EXIT_LOG_RESTARTED)  # like a crash: nothing is acknowledged that was not done

    app.timer(interval=LOG_CHECK_S)(check_logs)

    @app.agent(raw, name="normalise")
    async def normalise_reports(stream: Any) -> None:
        """Validate, normalise and locate each raw report; re-key it by incident id."""
        async for event in each(stream):
            record = await process("normalise", event, svc.locate_report, deadletters, svc.refuse_report)
            if record is not None:
                await located.send(key=record.incident_id.encode(), value=record.model_dump_json().encode())

    @app.agent(located, name="enrich")
    async def enrich_incidents(stream: Any) -> None:
        """Add the nearest available police, grid workers and volunteers."""
        async for event in each(stream):
            record = await process("enrich", event, svc.enrich, deadletters, svc.refuse_report)
            if record is not None:
                await enriched.send(key=record.incident_id.encode(), value=record.model_dump_json().encode())

    @app.agent(positions, name="positions")
    async def track_positions(stream: Any) -> None:
        """Keep each responder's live position current in Redis: thousands of fixes a second,
        most of them in batch records (infra.fixes), applied a batch of records at a time
        (one Redis round trip each) rather than one call per fix."""
        await started()
        async for events in stream.take_events(POSITION_BATCH, POSITION_BATCH_WITHIN_S):
            for event in events:
                watch.saw(event.message.topic, event.message.partition, event.message.offset)
            await process_batch("positions", events, svc.apply_positions, deadletters)

    @app.agent(roster, name="roster")
    async def track_roster(stream: Any) -> None:
        """Keep duty status, kind, organisation and grid current in Redis."""
        async for event in each(stream):
            await process("roster", event, svc.apply_roster, deadletters)

    return app
