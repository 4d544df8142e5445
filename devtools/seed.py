"""Write the demo city into PostgreSQL (the registry) and Redis (live state), idempotently.

Seeding is an upsert: rows are written only where they differ, so a second run changes
nothing (not even `updated_at`) and rows added by other means are left alone. Run it as
`python -m devtools.seed` against the configured stack.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import asyncpg
import orjson
import redis.asyncio as aioredis
from redis.asyncio import Redis

from console.passwords import hash_password
from contracts import topics
from contracts.kinds import KINDS
from devtools.city import City, generate_city
from infra.db import ensure_database, migrate
from infra.livestate import LiveState
from infra.settings import Settings

DEMO_API_KEYS: Final = {
    "camera": "demo-camera-key",
    "hotline": "demo-hotline-key",
    "app": "demo-app-key",
    "positions": "demo-positions-key",
    "admin": "demo-admin-key",
}
API_KEY_LABELS: Final = {
    "camera": "雪亮工程视频告警（演示）",
    "hotline": "12345热线（演示）",
    "app": "随手拍（演示）",
    "positions": "定位上报（演示）",
    "admin": "管理员（演示）",
}
# (username, display name, role, password)
DEMO_USERS: Final = [
    ("duty", "值班员张伟", "operator", "duty-demo-2026"),
    ("commander", "指挥长李强", "commander", "commander-demo-2026"),
    ("viewer", "观察员", "viewer", "viewer-demo-2026"),
    ("admin", "系统管理员", "admin", "admin-demo-2026"),  # registry, accounts, audit log
]

DEMO_RESPONDER_PASSWORD: Final = "responder-demo-2026"

_UPSERT_COMMUNITIES = """
INSERT INTO communities (community_id, name)
SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT (community_id) DO UPDATE SET name = EXCLUDED.name
WHERE communities.name IS DISTINCT FROM EXCLUDED.name"""

_UPSERT_GRIDS = """
INSERT INTO grids (grid_id, name, community_id, polygon, min_lon, min_lat, max_lon, max_lat)
SELECT id, name, cid, poly::jsonb, x0, y0, x1, y1
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
              $5::float8[], $6::float8[], $7::float8[], $8::float8[])
       AS t(id, name, cid, poly, x0, y0, x1, y1)
ON CONFLICT (grid_id) DO UPDATE SET
    name = EXCLUDED.name, community_id = EXCLUDED.community_id, polygon = EXCLUDED.polygon,
    min_lon = EXCLUDED.min_lon, min_lat = EXCLUDED.min_lat,
    max_lon = EXCLUDED.max_lon, max_lat = EXCLUDED.max_lat
WHERE (grids.name, grids.community_id, grids.polygon,
       grids.min_lon, grids.min_lat, grids.max_lon, grids.max_lat)
      IS DISTINCT FROM
      (EXCLUDED.name, EXCLUDED.community_id, EXCLUDED.polygon,
       EXCLUDED.min_lon, EXCLUDED.min_lat, EXCLUDED.max_lon, EXCLUDED.max_lat)"""

_UPSERT_CAMERAS = """
INSERT INTO cameras (camera_id, name, lon, lat)
SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[])
ON CONFLICT (camera_id) DO UPDATE SET
    name = EXCLUDED.name, lon = EXCLUDED.lon, lat = EXCLUDED.lat, updated_at = now()
WHERE (cameras.name, cameras.lon, cameras.lat) IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.lon, EXCLUDED.lat)"""

# Skills travel comma-joined (a ragged text[][] cannot be unnested); no skill contains a comma.
_UPSERT_RESPONDERS = """
INSERT INTO responders (responder_id, name, kind, org, skills, on_duty, grid_id)
SELECT id, name, kind, org, string_to_array(skills, ','), on_duty, grid_id
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::text[])
       AS t(id, name, kind, org, skills, on_duty, grid_id)
ON CONFLICT (responder_id) DO UPDATE SET
    name = EXCLUDED.name, kind = EXCLUDED.kind, org = EXCLUDED.org, skills = EXCLUDED.skills,
    on_duty = EXCLUDED.on_duty, grid_id = EXCLUDED.grid_id, updated_at = now()
WHERE (responders.name, responders.kind, responders.org, responders.skills, responders.on_duty,
       responders.grid_id)
      IS DISTINCT FROM
      (EXCLUDED.name, EXCLUDED.kind, EXCLUDED.org, EXCLUDED.skills, EXCLUDED.on_duty, EXCLUDED.grid_id)"""

_UPSERT_API_KEYS = """
INSERT INTO api_keys (key_hash, role, name)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
ON CONFLICT (key_hash) DO UPDATE SET role = EXCLUDED.role, name = EXCLUDED.name
WHERE (api_keys.role, api_keys.name) IS DISTINCT FROM (EXCLUDED.role, EXCLUDED.name)"""

# An existing user's password is never overwritten (it may have been changed on purpose).
_UPSERT_USER = """
INSERT INTO users (username, display_name, role, password_hash) VALUES ($1, $2, $3, $4)
ON CONFLICT (username) DO UPDATE SET display_name = EXCLUDED.display_name, role = EXCLUDED.role
WHERE (users.display_name, users.role) IS DISTINCT FROM (EXCLUDED.display_name, EXCLUDED.role)"""


def api_key_hash(key: str) -> str:
    """How api_keys stores a key: sha256 hex, so a database leak reveals no usable key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _rows_written(status: str) -> int:
    """Rows inserted or updated, from a command tag such as "INSERT 0 12"."""
    return int(status.rsplit(" ", 1)[-1])


async def seed_postgres(conn_or_pool: Any, city: City) -> dict[str, int]:
    """Upsert the city, demo API keys and demo users in one transaction.

    Returns rows written per table (all zero when the database already holds the city).
    """
    if isinstance(conn_or_pool, asyncpg.Pool):
        async with conn_or_pool.acquire() as conn:
            return await seed_postgres(conn, city)
    conn = conn_or_pool
    written: dict[str, int] = {}
    grids = city.grids
    bboxes = [g.bbox for g in grids]
    rs = city.responders
    async with conn.transaction():
        written["communities"] = _rows_written(
            await conn.execute(
                _UPSERT_COMMUNITIES,
                [c.community_id for c in city.communities],
                [c.name for c in city.communities],
            )
        )
        written["grids"] = _rows_written(
            await conn.execute(
                _UPSERT_GRIDS,
                [g.grid_id for g in grids],
                [g.name for g in grids],
                [g.community_id for g in grids],
                [orjson.dumps(g.polygon).decode() for g in grids],
                *([b[k] for b in bboxes] for k in range(4)),
            )
        )
        written["cameras"] = _rows_written(
            await conn.execute(
                _UPSERT_CAMERAS,
                [c.camera_id for c in city.cameras],
                [c.name for c in city.cameras],
                [c.lon for c in city.cameras],
                [c.lat for c in city.cameras],
            )
        )
        written["responders"] = _rows_written(
            await conn.execute(
                _UPSERT_RESPONDERS,
                [r.responder_id for r in rs],
                [r.name for r in rs],
                [r.kind for r in rs],
                [r.org for r in rs],
                [",".join(r.skills) for r in rs],
                [r.on_duty for r in rs],
                [r.grid_id for r in rs],
            )
        )
        roles = list(DEMO_API_KEYS)
        written["api_keys"] = _rows_written(
            await conn.execute(
                _UPSERT_API_KEYS,
                [api_key_hash(DEMO_API_KEYS[r]) for r in roles],
                roles,
                [API_KEY_LABELS[r] for r in roles],
            )
        )
        existing = {r["username"] for r in await conn.fetch("SELECT username FROM users")}
        written["users"] = 0
        for username, display, role, password in DEMO_USERS:
            # scrypt is deliberately slow: hash only for users that will actually be inserted.
            pw_hash = "" if username in existing else hash_password(password)
            written["users"] += _rows_written(
                await conn.execute(_UPSERT_USER, username, display, role, pw_hash)
            )
        # Every demo responder logs in on the phone page as their id with one demo password;
        # one scrypt hash serves them all (a demo convenience, never for real accounts).
        missing = [r for r in city.responders if r.responder_id not in existing]
        if missing:
            shared = hash_password(DEMO_RESPONDER_PASSWORD)
            written["responder_accounts"] = _rows_written(
                await conn.execute(
                    """INSERT INTO users (username, display_name, role, password_hash, responder_id)
                       SELECT id, name, 'responder', $3, id FROM unnest($1::text[], $2::text[]) AS t(id, name)
                       ON CONFLICT (username) DO NOTHING""",
                    [r.responder_id for r in missing],
                    [r.name for r in missing],
                    shared,
                )
            )
    return written


async def seed_redis(
    redis: Redis, city: City, *, at_ms: int | None = None, workers: int = 8
) -> dict[str, int]:
    """Live state for every responder (roster, then a position fix at `at_ms`) and camera.

    Goes through `LiveState` itself rather than a hand-written bulk copy of its Lua, so the
    seed can never drift from what the live pipeline writes (busy statuses kept, newer fixes
    winning, grid-worker sets). A few concurrent workers bring 3,500 responders to ~0.5 s;
    each responder's two calls stay in order within one worker.
    """
    at_ms = int(time.time() * 1000) if at_ms is None else at_ms
    live = LiveState(redis)
    responders = iter(city.responders)
    cameras = iter(city.cameras)

    async def worker() -> None:
        # Workers share the iterators, so each item is taken by exactly one of them.
        for r in responders:
            await live.apply_roster(r.responder_id, r.registry_fields())
            await live.apply_position(r.responder_id, r.lon, r.lat, at_ms, None)
        for c in cameras:
            await live.put_camera(c.camera_id, c.name, c.lon, c.lat)

    await asyncio.gather(*(worker() for _ in range(max(1, workers))))
    await live.mark_populated()
    counts = {"responders": len(city.responders), "cameras": len(city.cameras)}
    for kind in KINDS:
        counts[f"available_{kind}"] = int(await redis.zcard(topics.available_key(kind)))
    return counts


async def seed_all(settings: Settings, seed: int = 2026) -> tuple[dict[str, int], dict[str, int], float]:
    """Create and migrate the database, then seed both stores; returns counts and seconds taken."""
    started = time.perf_counter()
    city = generate_city(seed)
    await ensure_database(settings.database_url)
    conn = await asyncpg.connect(settings.database_url)
    try:
        await migrate(conn)
        pg_counts = await seed_postgres(conn, city)
    finally:
        await conn.close()
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        redis_counts = await seed_redis(redis, city)
    finally:
        await redis.aclose()
    return pg_counts, redis_counts, time.perf_counter() - started


def _format(title: str, counts: Mapping[str, int]) -> str:
    return f"{title}: " + ", ".join(f"{k}={v}" for k, v in counts.items())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Seed the demo street into PostgreSQL and Redis (idempotent)."
    )
    parser.add_argument("--seed", type=int, default=2026, help="city generator seed (default 2026)")
    args = parser.parse_args(argv)
    pg_counts, redis_counts, seconds = asyncio.run(seed_all(Settings.from_env(), args.seed))
    print(_format("postgres rows written", pg_counts))
    print(_format("redis", redis_counts))
    print(f"seeded in {seconds:.2f}s")


if __name__ == "__main__":
    main()
