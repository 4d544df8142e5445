"""Intake: accept a report durably, publish it, and give the sender a tracking number.

The report is first recorded in PostgreSQL (unique on the source's own id, which makes intake
idempotent), then published to `reports.raw` by an acks=all producer; only then is it
acknowledged. If it cannot be recorded, intake refuses it (503 with Retry-After) rather than
acknowledge it. The inbox is reconciled against the incidents: a report recorded but not
published (the broker was away), or published but not in an incident a while later (the
broker came back empty, a worker lost it), is published again, with back-off, until the
dispatcher files it; every stage is idempotent by tracking number, so re-sends are harmless.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from dispatcher.outbox import give_up_on, redelivery_due
from infra.faults import DATABASE_UNAVAILABLE
from streams import topics
from streams.kafka import delivered
from streams.records import SOURCE_ID_FIELD, CameraAlarm, PositionBatch, RawReport

log = logging.getLogger(__name__)
BEIJING = timezone(timedelta(hours=8))
_PREFIX = {"camera": "C", "hotline": "H", "app": "A"}
UNPUBLISHED_GRACE_S = 5.0


class UnknownReference(ValueError):
    """The report names something we do not know (a camera, a responder): 422 with the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class NotDurable(RuntimeError):
    """The report could not be made durable now: the sender should retry (503)."""


def new_tracking_no(source: str, now: datetime) -> str:
    """e.g. H20261122-5F3A9C1D: channel letter, Beijing date, random part."""
    return f"{_PREFIX[source]}{now.astimezone(BEIJING):%Y%m%d}-{secrets.token_hex(4).upper()}"


@dataclass(frozen=True, slots=True)
class Accepted:
    tracking_no: str
    created: bool  # False: the same source id was accepted before


class IntakeService:
    def __init__(
        self, pool: asyncpg.Pool, producer: AIOKafkaProducer, publish_timeout_s: float = 10.0
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._timeout = publish_timeout_s

    async def accept(self, source: str, report: Any) -> Accepted:
        try:
            return await self._accept(source, report)
        except DATABASE_UNAVAILABLE as exc:
            raise NotDurable(f"database unavailable: {exc!r}") from exc

    async def _accept(self, source: str, report: Any) -> Accepted:
        if isinstance(report, CameraAlarm):
            known = await self._pool.fetchval("SELECT 1 FROM cameras WHERE camera_id = $1", report.camera_id)
            if not known:
                raise UnknownReference("camera_id", f"unknown camera {report.camera_id!r}")
        source_id = getattr(report, SOURCE_ID_FIELD[source])
        payload = report.model_dump(mode="json")
        now = datetime.now(UTC)
        tracking_no = new_tracking_no(source, now)
        row = await self._pool.fetchrow(
            """INSERT INTO reports (tracking_no, source, source_id, payload, received_at)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (source, source_id) DO NOTHING RETURNING tracking_no""",
            tracking_no,
            source,
            source_id,
            payload,
            now,
        )
        if row is None:
            existing = await self._pool.fetchrow(
                """SELECT tracking_no, payload, received_at, published_at FROM reports
                    WHERE source = $1 AND source_id = $2""",
                source,
                source_id,
            )
            assert existing is not None
            if existing["published_at"] is None:
                await self._publish(
                    existing["tracking_no"], source, existing["payload"], existing["received_at"]
                )
            return Accepted(existing["tracking_no"], created=False)
        await self._publish(tracking_no, source, payload, now)
        return Accepted(tracking_no, created=True)

    @staticmethod
    def _raw(tracking_no: str, source: str, payload: dict[str, Any], received_at: datetime) -> bytes:
        raw = RawReport.model_validate(
            {
                "tracking_no": tracking_no,
                "source": source,
                "received_at": received_at,
                "payload": payload,
                "intake_ns": time.time_ns(),
            }
        )
        return raw.model_dump_json().encode()

    async def _publish(
        self, tracking_no: str, source: str, payload: dict[str, Any], received_at: datetime
    ) -> None:
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(
                    topics.REPORTS_RAW,
                    key=tracking_no.encode(),
                    value=self._raw(tracking_no, source, payload, received_at),
                ),
                self._timeout,
            )
        except Exception as exc:
            log.warning("could not publish %s: %r", tracking_no, exc)
            raise NotDurable(f"event backbone unavailable: {exc}") from exc
        await self._pool.execute(
            "UPDATE reports SET published_at = now(), attempts = attempts + 1 WHERE tracking_no = $1",
            tracking_no,
        )

    async def reconcile(self, redeliver_after_s: float, max_attempts: int, limit: int = 500) -> int:
        """Publish again every acknowledged report that is not in an incident yet: never
        published (first after a short grace, which the request publishing it may still be in),
        or published longer ago than its back-off (redeliver_after_s, doubling per attempt).
        Rows are locked while sent, so several console servers never send one twice at once."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"""SELECT tracking_no, source, payload, received_at, attempts FROM reports
                     WHERE incident_id IS NULL AND {redelivery_due("published_at", "received_at")}
                     ORDER BY received_at LIMIT $4 FOR UPDATE SKIP LOCKED""",
                UNPUBLISHED_GRACE_S,
                float(redeliver_after_s),
                max_attempts,
                limit,
            )
            if not rows:
                return 0
            futures = []
            for r in rows:
                raw = self._raw(r["tracking_no"], r["source"], r["payload"], r["received_at"])
                futures.append(
                    await self._producer.send(topics.REPORTS_RAW, key=r["tracking_no"].encode(), value=raw)
                )
            await asyncio.wait_for(delivered(futures), self._timeout)
            await conn.execute(
                """UPDATE reports SET published_at = now(), attempts = attempts + 1
                    WHERE tracking_no = ANY($1::text[])""",
                [r["tracking_no"] for r in rows],
            )
        give_up_on(
            [(r["tracking_no"], r["attempts"] + 1) for r in rows], max_attempts, "never reached an incident"
        )
        return len(rows)

    async def accept_positions(self, batch: PositionBatch) -> int:
        ids = sorted({p.responder_id for p in batch.positions})
        known = {
            r["responder_id"]
            for r in await self._pool.fetch(
                "SELECT responder_id FROM responders WHERE responder_id = ANY($1::text[])", ids
            )
        }
        for i, fix in enumerate(batch.positions):
            if fix.responder_id not in known:
                raise UnknownReference(
                    f"positions.{i}.responder_id", f"unknown responder {fix.responder_id!r}"
                )
        try:
            futures = [
                await self._producer.send(
                    topics.POSITIONS_RAW,
                    key=fix.responder_id.encode(),
                    value=orjson.dumps(fix.model_dump(mode="json")),
                )
                for fix in batch.positions
            ]
            await asyncio.wait_for(delivered(futures), self._timeout)
        except Exception as exc:
            raise NotDurable(f"event backbone unavailable: {exc}") from exc
        return len(batch.positions)
