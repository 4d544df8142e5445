"""What every process's composition root does the same way, in one place: logging, settings from
the environment, the event loop, the database (created, migrated, pooled), Redis live state and a
started producer. Each process (`streams.worker`, `dispatcher.main`, `console.main`) wires its own
services on top and owns their shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from infra import eventloop, livestate
from infra.db import create_pool, ensure_database, migrate
from infra.kafka import make_producer, start_producer
from infra.livestate import LiveState
from infra.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)


def run(amain: Callable[[Settings], Coroutine[Any, Any, None]]) -> None:
    """A service's `main`: log, read the settings, run `amain` on the services' event loop."""
    setup_logging()
    eventloop.run(amain(Settings.from_env()))


async def open_database(settings: Settings, max_size: int = 10) -> asyncpg.Pool:
    """The pool, once the database exists and its schema is current (migrations are idempotent:
    every process may apply them; the first does)."""
    await ensure_database(settings.database_url)
    pool = await create_pool(settings.database_url, max_size=max_size)
    async with pool.acquire() as conn:
        await migrate(conn)
    return pool


def open_live_state(settings: Settings) -> tuple[Redis, LiveState]:
    """The Redis client (the caller closes it) and live state on it."""
    redis = livestate.connect(settings.redis_url)
    return redis, LiveState(redis)


async def open_producer(settings: Settings) -> AIOKafkaProducer:
    producer = make_producer(settings)
    await start_producer(producer)
    return producer
