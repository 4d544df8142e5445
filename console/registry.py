"""The registry: responders and cameras written (PostgreSQL first, then live state follows), and
the street's grids and responders read for the map.

A responder change is published to `responders.changes` so the streams' roster agent brings
live state (duty, kind, grid) up to date; a camera goes straight into the Redis registry
cache that locating camera alarms reads.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from console.intake import NotDurable, UnknownReference
from contracts import topics
from contracts.registry import CameraUpsert, ResponderUpsert, responder_change
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
        value = responder_change(responder_id, body)
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

    async def grids_geojson(self) -> dict[str, Any]:
        """The street's grids as a GeoJSON FeatureCollection, with their communities' names."""
        rows = await self._pool.fetch(
            """SELECT g.grid_id, g.name, g.community_id, c.name AS community_name, g.polygon
                 FROM grids g JOIN communities c USING (community_id) ORDER BY g.grid_id"""
        )
        return {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "geometry": r["polygon"],
                    "properties": {
                        "grid_id": r["grid_id"],
                        "name": r["name"],
                        "community_id": r["community_id"],
                        "community_name": r["community_name"],
                    },
                }
                for r in rows
            ],
        }

    async def responder_ids(self) -> list[str]:
        return [r["responder_id"] for r in await self._pool.fetch("SELECT responder_id FROM responders")]
