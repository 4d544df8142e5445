"""Intake: accept a report durably, publish it, and give the sender a tracking number.

The report is first recorded in PostgreSQL (unique on the source's own id, which makes intake
idempotent), then published to `reports.raw` by an idempotent acks=all producer; only then is
it acknowledged. A report recorded but not yet published (the broker was away) is published
by the next retry of the same report, or by the reconciler.
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

from streams import topics
from streams.records import SOURCE_ID_FIELD, CameraAlarm, PositionBatch, RawReport

log = logging.getLogger(__name__)
BEIJING = timezone(timedelta(hours=8))
_PREFIX = {"camera": "C", "hotline": "H", "app": "A"}


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
        if isinstance(report, CameraAlarm):
            known = await self._pool.fetchval("SELECT 1 FROM cameras WHERE camera_id = $1", report.camera_id)
            if not known:
                raise UnknownReference("camera_id", f"unknown camera {report.camera_id!r}")
        source_id = getattr(report, SOURCE_ID_FIELD[source])
        payload = report.model_dump(mode="json")
        now = datetime.now(UTC)
        tracking_no = new_tracking_no(source, now)
        try:
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
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            raise NotDurable(f"database unavailable: {exc}") from exc
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

    async def _publish(
        self, tracking_no: str, source: str, payload: dict[str, Any], received_at: datetime
    ) -> None:
        raw = RawReport.model_validate(
            {
                "tracking_no": tracking_no,
                "source": source,
                "received_at": received_at,
                "payload": payload,
                "intake_ns": time.time_ns(),
            }
        )
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(
                    topics.REPORTS_RAW, key=tracking_no.encode(), value=raw.model_dump_json().encode()
                ),
                self._timeout,
            )
        except Exception as exc:
            log.warning("could not publish %s: %r", tracking_no, exc)
            raise NotDurable(f"event backbone unavailable: {exc}") from exc
        await self._pool.execute(
            "UPDATE reports SET published_at = now() WHERE tracking_no = $1", tracking_no
        )

    async def republish_pending(self, older_than_s: float = 5.0, limit: int = 500) -> int:
        """Publish reports recorded but never published (the reconciler's job)."""
        rows = await self._pool.fetch(
            """SELECT tracking_no, source, payload, received_at FROM reports
                WHERE published_at IS NULL AND received_at < now() - make_interval(secs => $1)
                ORDER BY received_at LIMIT $2""",
            older_than_s,
            limit,
        )
        for r in rows:
            await self._publish(r["tracking_no"], r["source"], r["payload"], r["received_at"])
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
            await asyncio.wait_for(asyncio.gather(*futures), self._timeout)
        except Exception as exc:
            raise NotDurable(f"event backbone unavailable: {exc}") from exc
        return len(batch.positions)
