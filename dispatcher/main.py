"""Entry point of the dispatcher: `python -m dispatcher.main`. Several may run (one group).

Consumes enriched incidents, persists them, publishes state-change events keyed by incident
id, and commits offsets only after both (at-least-once; effects are idempotent).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from dispatcher.service import IncidentService
from dispatcher.store import create_pool
from infra.db import ensure_database, migrate
from infra.settings import Settings
from streams import topics
from streams.kafka import make_consumer, make_producer, start_producer, stop_on_signals
from streams.normalise import describe_validation_error
from streams.records import DeadLetter, EnrichedIncident

log = logging.getLogger("dispatcher")
MAX_UNEXPECTED = 3  # a record that keeps failing for no transient reason is dead-lettered
TRANSIENT = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    KafkaError,
)


class Dispatcher:
    """Owns the consumer, producer and pool; `run` until `stop` is called."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stopping = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def start(self) -> None:
        await ensure_database(self.settings.database_url)
        self._pool = await create_pool(self.settings.database_url)
        async with self._pool.acquire() as conn:
            await migrate(conn)
        self._producer = make_producer(self.settings)
        await start_producer(self._producer)
        self._consumer = make_consumer(
            self.settings, topics.INCIDENTS_ENRICHED, group_id=topics.DISPATCHER_GROUP
        )
        await self._consumer.start()

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._pool is not None:
            await self._pool.close()

    async def run(self) -> None:
        assert self._consumer is not None and self._pool is not None
        service = IncidentService(self._pool)
        while not self._stopping.is_set():
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    await self._handle(service, record)
            if batches:
                await self._consumer.commit()

    async def _handle(self, service: IncidentService, record: ConsumerRecord) -> None:
        assert self._producer is not None
        try:
            rec = EnrichedIncident.model_validate(orjson.loads(record.value or b""))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            reason = (
                describe_validation_error(exc)
                if isinstance(exc, ValidationError)
                else f"value is not JSON: {exc}"
            )
            await self._dead_letter(record, reason)
            return
        delay, unexpected = 0.1, 0
        while True:
            try:
                messages = await service.file(rec)
                futures = [
                    await self._producer.send(
                        topics.INCIDENTS_EVENTS, key=rec.incident_id.encode(), value=orjson.dumps(m)
                    )
                    for m in messages
                ]
                for fut in futures:
                    await fut
                return
            except TRANSIENT as exc:
                if self._stopping.is_set():
                    raise
                log.warning("transient failure on %s, retrying in %.1fs: %r", rec.incident_id, delay, exc)
            except Exception as exc:
                unexpected += 1
                log.exception("unexpected failure on %s (%d/%d)", rec.incident_id, unexpected, MAX_UNEXPECTED)
                if unexpected >= MAX_UNEXPECTED:
                    await self._dead_letter(record, f"internal error: {type(exc).__name__}: {exc}")
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        assert self._producer is not None
        letter = DeadLetter(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=None if record.key is None else record.key.decode("utf-8", "replace"),
            reason=reason,
            stage="dispatcher",
            value=(record.value or b"").decode("utf-8", "replace"),
            at=datetime.now(UTC),
        )
        log.warning("dead-lettered %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason)
        await self._producer.send_and_wait(
            topics.DEADLETTER, key=record.key, value=letter.model_dump_json().encode()
        )


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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(amain(Settings.from_env()))


if __name__ == "__main__":
    main()
