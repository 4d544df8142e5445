"""Entry point of the dispatcher: `python -m dispatcher.main`. Several may run (one group).

Consumes enriched incidents, persists them, publishes state-change events keyed by incident
id, and commits offsets only after both (at-least-once; effects are idempotent).

Throughput: the records of one fetch are applied in lanes by incident id (`into_lanes`: an
incident's enriched record and its commands share a lane, so one incident still has one
writer), lanes side by side; a record's events are handed to
the producer without waiting, and the whole fetch's sends are awaited once before the commit.
Waiting for each record's acknowledgement in turn capped the dispatcher at one broker round
trip plus one transaction per record (~100 incidents/s in the city benchmark).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from pydantic import ValidationError

from contracts import events, topics
from contracts.commands import Command, parse_command
from contracts.incidents import EnrichedIncident
from contracts.validation import BadRecord, check_key, decode_object, describe_validation_error
from dispatcher.adapters import timers
from dispatcher.adapters.livekeeper import LiveKeeper
from dispatcher.core.plan import load_plans
from dispatcher.service import IncidentService, Result
from infra import outbox, refusals, wiring
from infra.deadletters import send_dead_letter
from infra.faults import BROKER_UNAVAILABLE, DATABASE_UNAVAILABLE, TRANSIENT
from infra.kafka import (
    delivered,
    make_consumer,
    rewind_restarted_logs,
    stop_on_signals,
)
from infra.settings import Settings
from infra.wiring import open_database, open_live_state, open_producer

log = logging.getLogger("dispatcher")
TIMER_TICK_S = 0.2
RELAY_TICK_S = 1.0
LOG_CHECK_S = 2.0  # how often the consumer checks the broker did not restart its logs
MAX_UNEXPECTED = 3  # a record that keeps failing for no transient reason is dead-lettered
# Two lanes' transactions can meet on the same rows (responders' tasks, a merge): the database
# aborts one; its transaction rolled back whole, so it is simply applied again.
CONFLICTS = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


@dataclass
class Sent:
    """What one record handed to the producer: acknowledgements to await before the commit,
    and the outbox messages to mark sent once they are."""

    futures: list[Awaitable[Any]] = field(default_factory=list)
    forwards: list[str] = field(default_factory=list)


def into_lanes(
    batches: Mapping[Any, Sequence[ConsumerRecord]], lanes: int
) -> dict[int, list[ConsumerRecord]]:
    """One fetch's records in `lanes` lanes by key (the incident id), each lane in fetch order:
    an incident's enriched record and its commands share a lane, so it has one writer, and
    different incidents are filed side by side. On a busy machine a filing is a dozen
    database round trips each waiting to be scheduled; applying one record at a time per
    partition left the dispatcher waiting, not working (BENCHMARKS.md, fourth run)."""
    out: dict[int, list[ConsumerRecord]] = defaultdict(list)
    for _, records in sorted(batches.items(), key=lambda item: (item[0].topic, item[0].partition)):
        for record in records:
            out[zlib.crc32(record.key or b"") % max(lanes, 1)].append(record)
    return out


class Dispatcher:
    """Owns the consumer, producer and pool; `run` until `stop` is called."""

    def __init__(self, settings: Settings) -> None:
        if settings.dispatcher_lanes < 1:
            raise ValueError(f"DISPATCHER_LANES={settings.dispatcher_lanes}: expected 1 or more")
        self.settings = settings
        self._stopping = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._redis: aioredis.Redis | None = None
        self._service: IncidentService | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def start(self) -> None:
        # a connection per lane, and the timers, the relay and the live keeper beside them
        s = self.settings
        self._pool = await open_database(s, max_size=max(10, s.dispatcher_lanes + 4))
        self._producer = await open_producer(s)
        self._redis, live = open_live_state(s)
        plans = load_plans(s.plans_path or None)
        self._service = IncidentService(self._pool, plans, live, radius_m=s.nearest_radius_m)
        synced = await self._service.sync_live_statuses()
        log.info("live statuses brought in line with active tasks: %d changed", synced)
        self._consumer = make_consumer(
            self.settings,
            topics.INCIDENTS_ENRICHED,
            topics.INCIDENTS_COMMANDS,
            group_id=topics.DISPATCHER_GROUP,
        )
        await self._consumer.start()

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._redis is not None:
            await self._redis.aclose()
        if self._pool is not None:
            await self._pool.close()

    async def run(self) -> None:
        """Consume until stopped. The background loops are owned here: a dead loop is a dead
        dispatcher (surfaced at once), and every loop is cancelled on the way out."""
        assert self._consumer is not None and self._service is not None
        assert self._pool is not None and self._redis is not None
        keeper = LiveKeeper(self._pool, self._redis, self.settings.live_snapshot_s)
        loops = [
            asyncio.create_task(self._fire_timers(), name="timers"),
            asyncio.create_task(self._relay(), name="outbox-relay"),
            asyncio.create_task(keeper.run(self._stopping), name="live-keeper"),
        ]
        checked = time.monotonic()
        try:
            while not self._stopping.is_set():
                if time.monotonic() - checked > LOG_CHECK_S:
                    checked = time.monotonic()
                    with contextlib.suppress(*BROKER_UNAVAILABLE):
                        await rewind_restarted_logs(self._consumer)
                batches = await self._consumer.getmany(timeout_ms=200)
                if batches:
                    await self._apply_fetch(self._service, batches)
                    await self._consumer.commit()
                for loop in loops:
                    if loop.done():
                        loop.result()
        finally:
            for loop in loops:
                loop.cancel()
            for loop in loops:
                with contextlib.suppress(asyncio.CancelledError):
                    await loop

    async def _fire_timers(self) -> None:
        """Durable timers: each due timer becomes a command in the outbox, in the same transaction
        that marks it fired, and is published at once; the outbox re-sends it until the case
        applies it, so a broker that loses it delays it but never drops it. The command id (the
        timer id) makes every extra delivery change nothing: each clock fires once."""
        assert self._pool is not None
        while not self._stopping.is_set():
            due: list[outbox.Message] = []
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    due = await timers.fire_due(conn)
                if due:
                    await self._publish(due)
                    await outbox.mark_sent(self._pool, [m.message_id for m in due])
            except TRANSIENT as exc:
                log.warning("timer loop: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), TIMER_TICK_S)

    async def _relay(self) -> None:
        """Re-send outbox messages nobody confirmed (lost by the broker, or never sent)."""
        assert self._pool is not None
        s = self.settings
        last_prune = 0.0
        while not self._stopping.is_set():
            try:
                n = await outbox.relay_once(
                    self._pool, self._publish, s.redeliver_after_s, s.redeliver_attempts
                )
                if n:
                    log.info("outbox: re-sent %d unconfirmed commands", n)
                if time.monotonic() - last_prune > 3600:
                    await outbox.prune(self._pool)
                    last_prune = time.monotonic()
            except TRANSIENT as exc:
                log.warning("outbox relay: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), RELAY_TICK_S)

    async def _publish(self, messages: Sequence[outbox.Message]) -> None:
        assert self._producer is not None
        futures = [await self._producer.send(m.topic, key=m.key.encode(), value=m.value) for m in messages]
        await delivered(futures)

    async def _apply_fetch(
        self, service: IncidentService, batches: Mapping[Any, Sequence[ConsumerRecord]]
    ) -> None:
        """Apply one fetch's records in lanes by incident id, then wait for every send.
        If the broker fails some of them, each record is applied again and its events sent
        again one at a time (a replay changes nothing and answers with the same events)."""
        lanes = into_lanes(batches, self.settings.dispatcher_lanes)

        async def lane(records: list[ConsumerRecord]) -> list[Sent]:
            return [await self._handle(service, record, wait=False) for record in records]

        async with asyncio.TaskGroup() as group:
            running = [group.create_task(lane(records)) for records in lanes.values()]
        sent = [s for task in running for s in task.result()]
        try:
            await delivered(f for s in sent for f in s.futures)
        except BROKER_UNAVAILABLE as exc:
            log.warning("%d records' events not acknowledged (%r); sending them again", len(sent), exc)
            assert self._producer is not None
            self._producer.client.force_metadata_update()
            for records in lanes.values():
                for record in records:
                    await self._handle(service, record, wait=True)
            return
        forwards = [m for s in sent for m in s.forwards]
        if forwards:
            try:
                await outbox.mark_sent(self._pool, forwards)
            except DATABASE_UNAVAILABLE as exc:  # the relay sends them once more: harmless
                log.warning("could not mark %d forwards sent: %r", len(forwards), exc)

    async def _handle(self, service: IncidentService, record: ConsumerRecord, wait: bool) -> Sent:
        if record.topic == topics.INCIDENTS_COMMANDS:
            return await self._command(service, record, wait)
        return await self._enriched(service, record, wait)

    async def _command(self, service: IncidentService, record: ConsumerRecord, wait: bool) -> Sent:
        try:
            decode_object(record.value)  # null, oversized, not UTF-8, not JSON, not an object
            cmd = parse_command(record.value)
            check_key(record.key, "incident_id", cmd.incident_id)
        except ValueError as exc:
            await self._dead_letter(record, str(exc))
            return Sent()
        return await self._retrying(record, cmd.incident_id, lambda: service.handle(cmd), cmd, wait)

    async def _enriched(self, service: IncidentService, record: ConsumerRecord, wait: bool) -> Sent:
        try:
            rec = EnrichedIncident.model_validate(decode_object(record.value))
            check_key(record.key, "incident_id", rec.incident_id)
        except (BadRecord, ValidationError) as exc:
            reason = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
            await self._dead_letter(record, reason)
            return Sent()
        return await self._retrying(record, rec.incident_id, lambda: service.file(rec), None, wait)

    async def _retrying(
        self,
        record: ConsumerRecord,
        incident_id: str,
        apply: Callable[[], Awaitable[Result]],
        cmd: Command | None,
        wait: bool,
    ) -> Sent:
        """Apply, then hand what it produced to the producer (and, with `wait`, wait for the
        acknowledgements); transient failures and lost races retry, others dead-letter."""
        assert self._producer is not None
        delay, unexpected = 0.1, 0
        while True:
            try:
                result = await apply()
                futures = [
                    await self._producer.send(
                        topics.INCIDENTS_EVENTS, key=incident_id.encode(), value=orjson.dumps(m)
                    )
                    for m in result.messages
                ]
                if cmd is not None and result.refused is None and not result.messages:
                    # Applied, but changed nothing anyone sees: say so, so the console that
                    # queued it stops waiting for an answer.
                    done = events.command_done(cmd)
                    futures.append(
                        await self._producer.send(
                            topics.INCIDENTS_EVENTS, key=incident_id.encode(), value=orjson.dumps(done)
                        )
                    )
                if result.refused is not None and cmd is not None:
                    refusal = events.command_refused(cmd, result.refused)
                    futures.append(
                        await self._producer.send(
                            topics.INCIDENTS_EVENTS, key=incident_id.encode(), value=orjson.dumps(refusal)
                        )
                    )
                forwards = [outbox.command_message(f) for f in result.forwards]
                for m in forwards:  # already in the outbox: sent now, re-sent if lost
                    futures.append(await self._producer.send(m.topic, key=m.key.encode(), value=m.value))
                sent = Sent(futures, [m.message_id for m in forwards])
                if not wait:
                    return sent
                await delivered(futures)
                if forwards:
                    await outbox.mark_sent(self._pool, sent.forwards)
                return Sent()
            except CONFLICTS as exc:
                log.info("%s met another lane's transaction, applying it again: %r", incident_id, exc)
            except TRANSIENT as exc:
                if self._stopping.is_set():
                    raise
                log.warning("transient failure on %s, retrying in %.1fs: %r", incident_id, delay, exc)
                if isinstance(exc, BROKER_UNAVAILABLE):
                    self._producer.client.force_metadata_update()  # the broker may have changed
            except Exception as exc:
                unexpected += 1
                log.exception("unexpected failure on %s (%d/%d)", incident_id, unexpected, MAX_UNEXPECTED)
                if unexpected >= MAX_UNEXPECTED:
                    reason = f"internal error: {type(exc).__name__}: {exc}"
                    if cmd is not None:
                        return await self._refuse_command(record, cmd, reason, wait)
                    await self._dead_letter(record, reason)
                    return Sent()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _refuse_command(
        self, record: ConsumerRecord, cmd: Command, reason: str, wait: bool
    ) -> Sent:
        """A command that keeps failing for no transient reason is refused for good: the outbox
        stops re-sending it, the audit log says it failed, its sender is told (a
        `command.refused` its console shows), and it is dead-lettered for ops."""
        assert self._producer is not None and self._service is not None
        stuck = None
        try:
            await self._service.refuse_for_good(cmd, reason)
            stuck = f"command {cmd.command_id}: refused to its sender, not re-sent"
        except DATABASE_UNAVAILABLE as exc:  # the outbox re-sends it, and it is refused again
            log.warning("could not record command %s as failed: %r", cmd.command_id, exc)
        refusal = events.command_refused(cmd, "指挥系统无法执行该命令（已记录，请联系运维人员）")
        future = await self._producer.send(
            topics.INCIDENTS_EVENTS, key=cmd.incident_id.encode(), value=orjson.dumps(refusal)
        )
        await self._dead_letter(record, reason, stuck)
        if wait:
            await delivered([future])
            return Sent()
        return Sent([future])

    async def _dead_letter(self, record: ConsumerRecord, reason: str, stuck: str | None = None) -> None:
        assert self._producer is not None
        if stuck is None and record.topic == topics.INCIDENTS_ENRICHED:
            stuck = await refusals.refuse_report_of(
                self._pool, record.topic, record.key, "dispatcher", reason
            )
        producer = self._producer

        async def send(key: bytes | None, letter: bytes) -> Any:
            return await producer.send_and_wait(topics.DEADLETTER, key=key, value=letter)

        await send_dead_letter(send, "dispatcher", record, reason, stuck=stuck)


async def amain(settings: Settings) -> None:
    dispatcher = Dispatcher(settings)
    stop_on_signals(dispatcher.stop)
    await dispatcher.start()
    log.info("dispatcher running")
    try:
        await dispatcher.run()
    finally:
        await dispatcher.close()


def main() -> None:
    wiring.run(amain)


if __name__ == "__main__":
    main()
