"""Shared fixtures: a real Tansu broker, a fresh PostgreSQL database and a Redis database.

Each test session gets its own broker on a free port and its own database, so tests never
touch the demo centre's data and can run while it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from devtools.broker import start_tansu
from devtools.stack import free_port
from infra.db import create_pool, drop_database, ensure_database, migrate
from infra.settings import Settings

STATE = Path(__file__).resolve().parent.parent / ".state" / "test"


@contextlib.contextmanager
def tansu() -> Iterator[str]:
    """A fresh, empty Tansu broker on a free port, stopped afterwards."""
    port = free_port()
    proc = start_tansu("127.0.0.1", port, STATE / f"tansu-{port}.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap address of a fresh, empty Tansu broker for this session's integration tests."""
    with tansu() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def database_url() -> str:
    base = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432")
    return f"{base.rstrip('/')}/centre_test_{os.getpid()}"


@pytest.fixture(scope="session")
async def pg(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a freshly created, fully migrated database (dropped after the session)."""
    await drop_database(database_url)
    await ensure_database(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    assert pool is not None
    async with pool.acquire() as conn:
        await migrate(conn)
    yield pool
    await pool.close()
    await drop_database(database_url)


@pytest.fixture
async def pool(pg: asyncpg.Pool, database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool the way the services make one (jsonb as Python objects) on the migrated database."""
    p = await create_pool(database_url, max_size=4)
    yield p
    await p.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture(scope="session")
def settings(broker: str, database_url: str, redis_url: str) -> Settings:
    return Settings(
        kafka_bootstrap=broker,
        database_url=database_url,
        redis_url=redis_url,
        http_port=free_port(),
        ws_port=free_port(),
        faust_web_port=free_port(),
        faust_app_id=f"centre-test-{os.getpid()}",
        state_dir=str(STATE),
        topic_partitions=4,
    )


@pytest.fixture(autouse=True)
async def fail_on_loop_errors() -> AsyncIterator[None]:
    """Any exception the event loop reports (a task that died unobserved, a failing callback)
    fails the test that was running."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield
    await asyncio.sleep(0)
    loop.set_exception_handler(previous)
    assert not errors, f"unhandled exceptions in the event loop: {errors}"
