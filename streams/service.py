"""The streams' service layer: what each agent does with one record.

Agents decode nothing and decide nothing; they hand each record (key and value) to a method
here and send what it returns. Permanent problems raise `BadRecord` (the agent dead-letters the
record with its reason, see `contracts.validation`); anything else is retried by the agent.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import orjson
import redis.asyncio as aioredis

from contracts.deadletters import dead_letter
from contracts.geo import Grid, GridIndex
from contracts.incidents import EnrichedIncident, IncidentRecord
from contracts.positions import PositionFix
from contracts.registry import ResponderChange
from contracts.reports import CameraAlarm, RawReport
from contracts.validation import BadRecord, check_key, decode_object, validated
from infra.db import create_pool
from infra.fixes import checked_fix, fix_value, read_fixes
from infra.livestate import LiveState
from infra.refusals import refuse_report_of
from infra.settings import Settings
from infra.wiring import open_live_state
from streams.enrich import Enricher
from streams.normalise import CameraInfo, normalise, parse_payload

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter to send for record `index` of a batch: why, and the value to show (the
    record's own when None; one fix's when a batch held it)."""

    index: int
    reason: str
    value: bytes | None = None


async def load_grid_index(pool: asyncpg.Pool) -> GridIndex:
    rows = await pool.fetch(
        """SELECT g.grid_id, g.name, g.community_id, c.name AS community_name, g.polygon
             FROM grids g JOIN communities c USING (community_id)"""
    )
    return GridIndex(
        Grid.from_geojson(
            r["grid_id"], r["name"], r["community_id"], r["community_name"], r["polygon"]
        )
        for r in rows
    )


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
        pool = await create_pool(self.settings.database_url, max_size=4)
        try:
            self._grids = await load_grid_index(pool)
        except BaseException:
            await pool.close()
            raise
        self._redis, self._live = open_live_state(self.settings)
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

    async def refuse_report(self, topic: str, key: bytes | None, stage: str, reason: str) -> str | None:
        """A report's record was refused for good: mark the report stuck (the intake stops
        re-publishing it; its public status says so). Returns what the dead letter says is
        stuck. If the database is away the mark is left undone: the report is re-published
        later, refused again, and marked then."""
        return await refuse_report_of(self._pool, topic, key, stage, reason)

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

    async def locate_report(self, key: bytes | None, value: bytes | None) -> IncidentRecord:
        raw: RawReport = validated(RawReport, decode_object(value))
        check_key(key, "tracking_no", raw.tracking_no)
        report = parse_payload(raw)  # the contract first: no registry lookup with a malformed id
        camera = await self.camera(report.camera_id) if isinstance(report, CameraAlarm) else None
        assert self._grids is not None
        return normalise(raw, self._grids, camera)

    # --- incidents.located -> incidents.enriched ---------------------------------------------
    async def enrich(self, key: bytes | None, value: bytes | None) -> EnrichedIncident:
        record: IncidentRecord = validated(IncidentRecord, decode_object(value))
        check_key(key, "incident_id", record.incident_id)
        assert self._enricher is not None
        return await self._enricher.enrich(record)

    # --- positions.raw / responders.changes -> Redis ------------------------------------------
    async def apply_positions(self, records: list[tuple[bytes | None, bytes | None]]) -> list[Letter]:
        """The fixes of a batch of records (a record holds one fix or many, see
        `infra.fixes`) in one Redis round trip. Returns what to dead-letter: a record that is
        unusable as a whole, or one bad fix of a batch (the rest applied). A fix older than
        what live state holds changes nothing. A store failure raises, and the whole batch is
        tried again (applying a fix twice changes nothing)."""
        letters: list[Letter] = []
        fixes: list[tuple[int, PositionFix]] = []
        now = datetime.now(UTC)
        for i, (key, value) in enumerate(records):
            try:
                good, bad = read_fixes(key, value, now, self.settings.time_window)
            except BadRecord as exc:
                letters.append(Letter(i, str(exc)))
                continue
            fixes += [(i, f) for f in good]
            letters += [Letter(i, b.reason, b.value) for b in bad]
        results = await self.live.apply_positions(
            [(f.responder_id, f.lon, f.lat, int(f.at.timestamp() * 1000), f.accuracy_m) for _, f in fixes]
        )
        for (i, fix), result in zip(fixes, results, strict=True):
            if result == -1:  # live state lost the roster entry: the one-by-one path restores it
                try:
                    await self.apply_fix(fix)
                except BadRecord as exc:
                    letters.append(Letter(i, str(exc), orjson.dumps(fix_value(fix))))
        return letters

    async def apply_position(self, key: bytes | None, value: bytes | None) -> int:
        """A record of one fix, keyed by its responder id."""
        fix = checked_fix(decode_object(value), datetime.now(UTC), self.settings.time_window)
        check_key(key, "responder_id", fix.responder_id)
        return await self.apply_fix(fix)

    async def apply_fix(self, fix: PositionFix) -> int:
        """One fix; a responder live state lost is restored from the registry first."""
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

    async def apply_roster(self, key: bytes | None, value: bytes | None) -> None:
        change: ResponderChange = validated(ResponderChange, decode_object(value))
        check_key(key, "responder_id", change.responder_id)
        roster = change.model_dump(exclude={"responder_id", "updated_at"})
        await self.live.apply_roster(change.responder_id, roster)


__all__ = ["BadRecord", "CameraAlarm", "StreamService", "dead_letter"]
