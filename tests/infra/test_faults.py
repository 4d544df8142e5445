"""Which failures count as the infrastructure being away: what a real server that is down, restarting
or cut off raises is transient, and what a bug or a bad statement raises is not."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from devtools.stack import free_port
from infra.faults import BROKER_UNAVAILABLE, CACHE_UNAVAILABLE, DATABASE_UNAVAILABLE, TRANSIENT


async def test_postgresql_refusing_connections_is_transient() -> None:
    with pytest.raises(DATABASE_UNAVAILABLE):
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/x", timeout=2)


async def test_a_terminated_backend_and_a_query_timeout_are_transient(
    pg: asyncpg.Pool, database_url: str
) -> None:
    victim = await asyncpg.connect(database_url)
    try:
        pid = await victim.fetchval("SELECT pg_backend_pid()")
        assert await pg.fetchval("SELECT pg_terminate_backend($1)", pid)  # what a fast shutdown does
        for _ in range(100):  # once the client has seen it (a query racing it is not covered here)
            if victim.is_closed():
                break
            await asyncio.sleep(0.01)
        with pytest.raises(DATABASE_UNAVAILABLE):
            await victim.fetchval("SELECT 1")
    finally:
        victim.terminate()
    # a query racing the termination may find asyncpg's protocol mid-operation instead
    mid_operation = asyncpg.exceptions._base.InternalClientError("cannot switch to state 11")
    assert isinstance(mid_operation, DATABASE_UNAVAILABLE)
    with pytest.raises(DATABASE_UNAVAILABLE):
        await pg.fetchval("SELECT pg_sleep(2)", timeout=0.1)


@pytest.mark.parametrize(
    "sql",
    ["SELECT 1/0", "SELECT * FROM no_such_table", "SELEC 1", "SELECT '2026-13-45'::date", "SELECT 'x'::int"],
)
async def test_a_bad_statement_is_a_bug_not_an_outage(pg: asyncpg.Pool, sql: str) -> None:
    with pytest.raises(asyncpg.PostgresError) as exc:
        await pg.fetchval(sql)
    assert not isinstance(exc.value, TRANSIENT)


async def test_redis_away_is_transient_and_a_wrong_command_is_not(redis: aioredis.Redis) -> None:
    away = aioredis.Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(CACHE_UNAVAILABLE):
            await away.ping()
    finally:
        await away.aclose()
    await redis.set("faults:string", "x")
    with pytest.raises(ResponseError) as exc:  # WRONGTYPE
        await redis.hget("faults:string", "field")
    assert not isinstance(exc.value, TRANSIENT)
    await redis.delete("faults:string")


async def test_a_broker_that_is_away_is_transient() -> None:
    producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{free_port()}", request_timeout_ms=2000)
    try:
        with pytest.raises(BROKER_UNAVAILABLE):
            await producer.start()
    finally:
        await producer.stop()


@pytest.mark.parametrize("error", [ValueError("x"), KeyError("k"), TypeError("t"), asyncio.CancelledError()])
def test_plain_programming_errors_and_cancellation_are_not_transient(error: BaseException) -> None:
    assert not isinstance(error, TRANSIENT)


def test_transient_is_exactly_the_three_kinds_of_outage() -> None:
    assert set(TRANSIENT) == {*DATABASE_UNAVAILABLE, *CACHE_UNAVAILABLE, *BROKER_UNAVAILABLE}
