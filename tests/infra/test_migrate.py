"""`python -m infra.migrate` against the real PostgreSQL: a missing database is created and fully
migrated, a second run (or a racing one) applies nothing twice."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from itertools import count
from pathlib import Path

import asyncpg
import pytest

from infra import migrate
from infra.db import drop_database, load_migrations
from infra.settings import Settings

BASE = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
ROOT = Path(__file__).resolve().parents[2]
VERSIONS = [m.version for m in load_migrations()]
_names = count()


@pytest.fixture
async def fresh(settings: Settings) -> AsyncIterator[Settings]:
    """The session's settings pointing at a database that does not exist yet (dropped afterwards)."""
    url = f"{BASE}/centre_migrate_{os.getpid()}_{next(_names)}"
    await drop_database(url)
    yield replace(settings, database_url=url)
    await drop_database(url)


async def applied(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        return [
            r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        ]
    finally:
        await conn.close()


async def test_a_missing_database_is_created_and_migrated_once(fresh: Settings) -> None:
    assert await migrate.run(fresh) == VERSIONS
    assert await applied(fresh.database_url) == VERSIONS
    assert await migrate.run(fresh) == []  # idempotent
    conn = await asyncpg.connect(fresh.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM incidents") == 0  # the schema is usable
    finally:
        await conn.close()


async def test_racing_migrators_apply_each_version_exactly_once(fresh: Settings) -> None:
    """Several services starting together on a server without the database: one creates it (the
    others lose the race without an error), one applies each migration."""
    results = await asyncio.gather(*(migrate.run(fresh) for _ in range(4)))
    assert sorted(v for r in results for v in r) == VERSIONS
    assert await applied(fresh.database_url) == VERSIONS


async def test_the_command_reports_what_it_applied(fresh: Settings) -> None:
    env = {**os.environ, "DATABASE_URL": fresh.database_url}

    def main() -> str:
        cmd = [sys.executable, "-m", "infra.migrate"]
        return subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    assert await asyncio.to_thread(main) == "applied: " + ", ".join(f"{v:04d}" for v in VERSIONS) + "\n"
    assert await asyncio.to_thread(main) == "applied: nothing (up to date)\n"
