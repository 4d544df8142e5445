"""The composition roots' shared wiring against the real servers: a database created and migrated
on first use, a pool whose jsonb travels as Python objects, live state on Redis, a started producer."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from infra.db import drop_database
from infra.settings import Settings
from infra.wiring import open_database, open_live_state, open_producer


async def test_open_database_creates_migrates_and_decodes_jsonb(settings: Settings) -> None:
    name = f"centre_wiring_{uuid.uuid4().hex[:8]}"
    fresh = dataclasses.replace(settings, database_url=settings.database_url.rsplit("/", 1)[0] + f"/{name}")
    pool = await open_database(fresh, max_size=2)
    try:
        assert await pool.fetchval("SELECT count(*) FROM schema_migrations") > 0
        assert await pool.fetchval("""SELECT '{"a": [1]}'::jsonb""") == {"a": [1]}
        again = await open_database(fresh, max_size=1)  # a second process: nothing to apply, no error
        await again.close()
    finally:
        await pool.close()
        await drop_database(fresh.database_url)


async def test_live_state_and_producer_open_on_the_real_servers(settings: Settings) -> None:
    redis, live = open_live_state(settings)
    try:
        assert await redis.ping()
        assert live is not None
    finally:
        await redis.aclose()
    producer = await open_producer(dataclasses.replace(settings, kafka_idempotence=False))  # Tansu
    try:
        sent = await producer.send_and_wait("deadletter", key=b"wiring", value=b"{}")
        assert sent.offset >= 0
    finally:
        await producer.stop()


def test_run_is_the_services_main(monkeypatch: pytest.MonkeyPatch) -> None:
    from infra import wiring

    seen: list[Settings] = []

    async def amain(s: Settings) -> None:
        seen.append(s)

    monkeypatch.setenv("HTTP_PORT", "18080")
    wiring.run(amain)
    assert seen and seen[0].http_port == 18080
