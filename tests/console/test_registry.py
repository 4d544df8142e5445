"""The registry on the real PostgreSQL, Redis and broker: responders written then announced,
cameras written then cached for locating alarms, and the grids and responders read for the map."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from console.intake import NotDurable, UnknownReference
from console.registry import RegistryService
from contracts import topics
from contracts.registry import CameraUpsert, ResponderUpsert
from infra.livestate import LiveState
from infra.settings import Settings
from tests.console.test_intake import raw_records


class DownProducer:
    """A backbone that is down: every send fails at once."""

    async def send_and_wait(self, *args: Any, **kwargs: Any) -> None:
        raise KafkaConnectionError("broker unreachable")


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def registry(pool: asyncpg.Pool, redis: aioredis.Redis, producer: Any = None) -> RegistryService:
    return RegistryService(pool, producer or DownProducer(), LiveState(redis))


async def announced(bootstrap: str, key: str) -> list[dict[str, Any]]:
    """Every record on responders.changes under `key`."""
    return await raw_records(bootstrap, key, topics.RESPONDERS_CHANGES)


async def grid(pool: asyncpg.Pool) -> tuple[str, dict[str, Any]]:
    community, gid = uid("C"), uid("G")
    # Far from the demo street: the session's database is shared, and a grid over the demo city
    # would take its points from the demo's own grids in other tests.
    polygon = {
        "type": "Polygon",
        "coordinates": [[[-150.5, -40.6], [-150.4, -40.6], [-150.4, -40.5], [-150.5, -40.6]]],
    }
    await pool.execute("INSERT INTO communities (community_id, name) VALUES ($1, '龙溪社区')", community)
    await pool.execute(
        """INSERT INTO grids (grid_id, name, community_id, polygon, min_lon, min_lat, max_lon, max_lat)
           VALUES ($1, '第一网格', $2, $3, -150.5, -40.6, -150.4, -40.5)""",
        gid,
        community,
        polygon,
    )
    return gid, {"community_id": community, "polygon": polygon}


async def test_a_responder_is_written_then_announced_for_the_live_roster(
    pool: asyncpg.Pool, redis: aioredis.Redis, feed_producer: AIOKafkaProducer, feed_settings: Settings
) -> None:
    svc, rid = registry(pool, redis, feed_producer), uid("P")
    gid, _ = await grid(pool)
    body = ResponderUpsert(
        name="张警官", kind="police", org="派出所", skills=["traffic"], on_duty=True, grid_id=gid
    )
    assert await svc.put_responder(rid, body) is True
    moved = body.model_copy(update={"on_duty": False, "grid_id": None})
    assert await svc.put_responder(rid, moved) is False  # replaced, not created
    row = await pool.fetchrow(
        "SELECT name, kind, org, skills, on_duty, grid_id FROM responders WHERE responder_id = $1", rid
    )
    assert dict(row) == {
        "name": "张警官",
        "kind": "police",
        "org": "派出所",
        "skills": ["traffic"],
        "on_duty": False,
        "grid_id": None,
    }
    assert rid in await svc.responder_ids()
    changes = await announced(feed_settings.kafka_bootstrap, rid)
    assert [(c["responder_id"], c["on_duty"], c["grid_id"]) for c in changes] == [
        (rid, True, gid),
        (rid, False, None),
    ]


async def test_an_unknown_grid_is_refused_by_name_and_nothing_is_written(
    pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    rid = uid("P")
    body = ResponderUpsert(name="志愿者", kind="volunteer", org="志愿队", on_duty=True, grid_id=uid("G"))
    with pytest.raises(UnknownReference) as refused:
        await registry(pool, redis).put_responder(rid, body)
    assert refused.value.field == "grid_id" and "unknown grid" in str(refused.value)
    assert rid not in await registry(pool, redis).responder_ids()


async def test_a_responder_change_the_backbone_cannot_take_is_not_durable(
    pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    rid = uid("P")
    body = ResponderUpsert(name="网格员", kind="grid_worker", org="社区", on_duty=True)
    with pytest.raises(NotDurable, match="event backbone unavailable"):
        await registry(pool, redis).put_responder(rid, body)
    # PostgreSQL first: the sender's retry (503) replays the change and announces it.
    assert rid in await registry(pool, redis).responder_ids()


async def test_a_camera_is_written_and_cached_for_locating_alarms(
    pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    svc, live, cid = registry(pool, redis), LiveState(redis), uid("CAM")
    assert await svc.put_camera(cid, CameraUpsert(name="路口一号", lon=106.51, lat=29.61)) is True
    assert await live.camera(cid) == ("路口一号", 106.51, 29.61)
    assert await svc.put_camera(cid, CameraUpsert(name="路口一号(迁)", lon=106.52, lat=29.62)) is False
    assert await live.camera(cid) == ("路口一号(迁)", 106.52, 29.62)
    row = await pool.fetchrow("SELECT name, lon, lat FROM cameras WHERE camera_id = $1", cid)
    assert tuple(row) == ("路口一号(迁)", 106.52, 29.62)


async def test_the_grids_are_a_feature_collection_with_their_communities(
    pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    gid, made = await grid(pool)
    collection = await registry(pool, redis).grids_geojson()
    assert collection["type"] == "FeatureCollection"
    ids = [f["properties"]["grid_id"] for f in collection["features"]]
    assert ids == sorted(ids)
    [feature] = [f for f in collection["features"] if f["properties"]["grid_id"] == gid]
    assert feature == {
        "type": "Feature",
        "geometry": made["polygon"],
        "properties": {
            "grid_id": gid,
            "name": "第一网格",
            "community_id": made["community_id"],
            "community_name": "龙溪社区",
        },
    }
