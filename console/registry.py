"""Registry writes: responders and cameras. PostgreSQL first, then live state follows.

A responder change is published to `responders.changes` so the streams' roster agent brings
live state (duty, kind, grid) up to date; a camera goes straight into the Redis registry
cache that locating camera alarms reads.
"""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from console.intake import NotDurable, UnknownReference
from contracts import topics
from contracts.registry import CameraUpsert, ResponderUpsert
from infra.livestate import LiveState


class RegistryService:
    def __init__(self, pool: asyncpg.Pool, producer: AIOKafkaProducer, live: LiveState) -> None:
        self._pool = pool
        self._producer = producer
        self._live = live

    async def put_responder(self, responder_id: str, body: ResponderUpsert) -> bool:
        """Create or replace; True if created."""
        if body.grid_id is not None:
            if not await self._pool.fetchval("SELECT 1 FROM grids WHERE grid_id = $1", body.grid_id):
                raise UnknownReference("grid_id", f"unknown grid {body.grid_id!r}")
        created = await self._pool.fetchval(
            """INSERT INTO responders (responder_id, name, kind, org, skills, on_duty, grid_id, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, now())
               ON CONFLICT (responder_id) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
                   org = EXCLUDED.org, skills = EXCLUDED.skills, on_duty = EXCLUDED.on_duty,
                   grid_id = EXCLUDED.grid_id, updated_at = now()
               RETURNING (xmax = 0)""",
            responder_id,
            body.name,
            body.kind,
            body.org,
            body.skills,
            body.on_duty,
            body.grid_id,
        )
        value = orjson.dumps({"responder_id": responder_id, **body.model_dump()})
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(
                    topics.RESPONDERS_CHANGES, key=responder_id.encode(), value=value
                ),
                10,
            )
        except Exception as exc:
            raise NotDurable(f"event backbone unavailable: {exc}") from exc
        return bool(created)

    async def put_camera(self, camera_id: str, body: CameraUpsert) -> bool:
        created = await self._pool.fetchval(
            """INSERT INTO cameras (camera_id, name, lon, lat, updated_at) VALUES ($1, $2, $3, $4, now())
               ON CONFLICT (camera_id) DO UPDATE SET name = EXCLUDED.name, lon = EXCLUDED.lon,
                   lat = EXCLUDED.lat, updated_at = now()
               RETURNING (xmax = 0)""",
            camera_id,
            body.name,
            body.lon,
            body.lat,
        )
        await self._live.put_camera(camera_id, body.name, body.lon, body.lat)
        return bool(created)
