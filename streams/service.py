"""The streams' service layer: what each agent does with one record.

Agents decode nothing and decide nothing; they hand each record to a method here and send
what it returns. Permanent problems raise `BadRecord` (the agent dead-letters the record);
anything else is treated as transient and retried by the agent.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import asyncpg
import orjson
import redis.asyncio as aioredis
from pydantic import ValidationError

from dispatcher.geo import Grid, GridIndex
from infra.settings import Settings
from streams.enrich import Enricher
from streams.livestate import LiveState
from streams.normalise import BadRecord, CameraInfo, decode_raw, describe_validation_error, normalise
from streams.records import (
    CameraAlarm,
    DeadLetter,
    EnrichedIncident,
    IncidentRecord,
    PositionFix,
    ResponderUpsert,
)

log = logging.getLogger(__name__)


async def load_grid_index(pool: asyncpg.Pool) -> GridIndex:
    rows = await pool.fetch(
        """SELECT g.grid_id, g.name, g.community_id, c.name AS community_name, g.polygon
             FROM grids g JOIN communities c USING (community_id)"""
    )
    return GridIndex(
        Grid.from_geojson(
            r["grid_id"], r["name"], r["community_id"], r["community_name"], orjson.loads(r["polygon"])
        )
        for r in rows
    )


def dead_letter(
    stage: str,
    reason: str,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    partition: int | None,
    offset: int | None,
) -> DeadLetter:
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key=None if key is None else key.decode("utf-8", "replace"),
        reason=reason,
        stage=stage,
        value="" if value is None else value.decode("utf-8", "replace"),
        at=datetime.now(UTC),
    )


def _json(value: bytes | None) -> object:
    if value is None:
        raise BadRecord("empty value")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"value is not JSON: {exc}") from None


class StreamService:
    """Holds the worker's connections; created by the composition root, started by the agents."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: asyncpg.Pool | None = None
        self._redis: aioredis.Redis | None = None
        self._live: LiveState | None = None
        self._grids: GridIndex | None = None
        self._enricher: Enricher | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Connect once, whichever agent asks first (they all start together)."""
        async with self._starting:
            if self._pool is None:
                await self._connect()

    async def _connect(self) -> None:
        pool = await asyncpg.create_pool(self.settings.database_url, min_size=1, max_size=4)
        assert pool is not None
        try:
            self._grids = await load_grid_index(pool)
        except BaseException:
            await pool.close()
            raise
        self._redis = aioredis.Redis.from_url(self.settings.redis_url)
        self._live = LiveState(self._redis)
        self._enricher = Enricher(self._live, self.settings.nearest_per_kind, self.settings.nearest_radius_m)
        self._pool = pool
        log.info("stream service ready: %d grids", len(self._grids))

    async def stop(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
        if self._pool is not None:
            await self._pool.close()
        self._pool = None

    @property
    def live(self) -> LiveState:
        assert self._live is not None, "StreamService.start() first"
        return self._live

    # --- reports.raw -> incidents.located ---------------------------------------------------
    async def camera(self, camera_id: str) -> CameraInfo | None:
        """Registry lookup: Redis first, PostgreSQL (the system of record) on a miss."""
        hit = await self.live.camera(camera_id)
        if hit is not None:
            return CameraInfo(camera_id, *hit)
        assert self._pool is not None
        row = await self._pool.fetchrow("SELECT name, lon, lat FROM cameras WHERE camera_id = $1", camera_id)
        if row is None:
            return None
        await self.live.put_camera(camera_id, row["name"], row["lon"], row["lat"])
        return CameraInfo(camera_id, row["name"], row["lon"], row["lat"])

    async def locate_report(self, value: bytes | None) -> IncidentRecord:
        raw = decode_raw(value)
        camera = None
        if raw.source == "camera":
            camera_id = raw.payload.get("camera_id")
            if isinstance(camera_id, str):
                camera = await self.camera(camera_id)
        assert self._grids is not None
        record = normalise(raw, self._grids, camera)
        return record

    # --- incidents.located -> incidents.enriched ---------------------------------------------
    async def enrich(self, value: bytes | None) -> EnrichedIncident:
        data = _json(value)
        try:
            record = IncidentRecord.model_validate(data)
        except ValidationError as exc:
            raise BadRecord(describe_validation_error(exc)) from None
        assert self._enricher is not None
        return await self._enricher.enrich(record)

    # --- positions.raw / responders.changes -> Redis ------------------------------------------
    async def apply_position(self, value: bytes | None) -> int:
        data = _json(value)
        try:
            fix = PositionFix.model_validate(data)
        except ValidationError as exc:
            raise BadRecord(describe_validation_error(exc)) from None
        at_ms = int(fix.at.timestamp() * 1000)
        result = await self.live.apply_position(fix.responder_id, fix.lon, fix.lat, at_ms, fix.accuracy_m)
        if result == -1:
            # Live state lost the roster entry (Redis restarted?): restore it from the registry.
            if not await self._restore_roster(fix.responder_id):
                raise BadRecord(f"responder_id: unknown responder {fix.responder_id!r}")
            result = await self.live.apply_position(fix.responder_id, fix.lon, fix.lat, at_ms, fix.accuracy_m)
        return result

    async def _restore_roster(self, responder_id: str) -> bool:
        assert self._pool is not None
        row = await self._pool.fetchrow("SELECT * FROM responders WHERE responder_id = $1", responder_id)
        if row is None:
            return False
        await self.live.apply_roster(responder_id, dict(row))
        return True

    async def apply_roster(self, value: bytes | None) -> None:
        data = _json(value)
        if not isinstance(data, dict) or not isinstance(data.get("responder_id"), str):
            raise BadRecord("responder_id: missing")
        responder_id = data.pop("responder_id")
        data.pop("updated_at", None)
        try:
            upsert = ResponderUpsert.model_validate(data)
        except ValidationError as exc:
            raise BadRecord(describe_validation_error(exc)) from None
        await self.live.apply_roster(responder_id, upsert.model_dump())


__all__ = ["BadRecord", "CameraAlarm", "StreamService", "dead_letter"]
