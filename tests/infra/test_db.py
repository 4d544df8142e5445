"""Database bootstrap against the real PostgreSQL: create, migrate in order, refuse drift."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from itertools import count
from pathlib import Path

import asyncpg
import pytest

from infra.db import (
    MIGRATIONS_DIR,
    Migration,
    drop_database,
    ensure_database,
    load_migrations,
    migrate,
)

BASE = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
ADMIN = f"{BASE}/postgres"
_names = count()


async def exists(dbname: str) -> bool:
    conn = await asyncpg.connect(ADMIN)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dbname))
    finally:
        await conn.close()


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    """A throwaway database name (not created yet); dropped afterwards whatever happens."""
    name = f"centre_migtest_{os.getpid()}_{next(_names)}"
    url = f"{BASE}/{name}"
    await drop_database(url)
    yield url
    await drop_database(url)
    assert not await exists(name)


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    await ensure_database(dsn)
    c = await asyncpg.connect(dsn)
    yield c
    await c.close()


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql, encoding="utf-8")
    return directory


async def tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def recorded(conn: asyncpg.Connection) -> list[tuple[int, str, str]]:
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
    return [(r["version"], r["name"], r["checksum"]) for r in rows]


# --- ensure / drop --------------------------------------------------------------------------------


async def test_ensure_database_creates_once_and_drop_removes(dsn: str) -> None:
    name = dsn.rsplit("/", 1)[1]
    assert not await exists(name)
    await ensure_database(dsn)
    assert await exists(name)
    await ensure_database(dsn)  # idempotent
    c = await asyncpg.connect(dsn)
    assert await c.fetchval("SELECT current_database()") == name
    await c.close()
    await drop_database(dsn)
    assert not await exists(name)
    await drop_database(dsn)  # dropping a missing database is fine


async def test_drop_database_with_open_connections(dsn: str) -> None:
    await ensure_database(dsn)
    c = await asyncpg.connect(dsn)
    try:
        await drop_database(dsn)  # WITH (FORCE): a lingering service does not block a reset
        assert not await exists(dsn.rsplit("/", 1)[1])
    finally:
        await c.close()


async def test_ensure_database_without_a_name_is_a_no_op() -> None:
    conn = await asyncpg.connect(ADMIN)
    try:
        before = await conn.fetchval("SELECT count(*) FROM pg_database")
        await ensure_database(BASE)  # nothing to create
        assert await conn.fetchval("SELECT count(*) FROM pg_database") == before
    finally:
        await conn.close()
    # ... and it does not even connect: a server nobody answers on is no error without a name
    await ensure_database("postgresql://postgres@127.0.0.1:9")


def test_the_production_migration_command_creates_and_migrates_then_has_nothing_to_do(dsn: str) -> None:
    """`python -m infra.migrate` (what a deployment runs before the services start)."""

    def run() -> str:
        env = {**os.environ, "DATABASE_URL": dsn}
        done = subprocess.run(
            [sys.executable, "-m", "infra.migrate"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    versions = ", ".join(f"{m.version:04d}" for m in load_migrations())
    assert run() == f"applied: {versions}"
    assert run() == "applied: nothing (up to date)"


# --- load_migrations --------------------------------------------------------------------------------


def test_project_migrations_load_in_order() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    assert migrations[0].version == 1 and migrations[0].name == "registry"
    assert len({m.version for m in migrations}) == len(migrations) == len(list(MIGRATIONS_DIR.glob("*.sql")))
    assert all(len(m.checksum) == 64 for m in migrations)


def test_load_sorts_by_version_and_ignores_other_files(tmp_path: Path) -> None:
    write(tmp_path, {"0010_ten.sql": "SELECT 10", "0002_two.sql": "SELECT 2", "0001_one.sql": "SELECT 1"})
    (tmp_path / "README.md").write_text("not a migration")
    migrations = load_migrations(tmp_path)
    assert [(m.version, m.name, m.sql) for m in migrations] == [
        (1, "one", "SELECT 1"),
        (2, "two", "SELECT 2"),
        (10, "ten", "SELECT 10"),
    ]


@pytest.mark.parametrize(
    "bad", ["1_init.sql", "0001-init.sql", "0001_Init.sql", "00001_init.sql", "init.sql"]
)
def test_bad_file_name_raises(tmp_path: Path, bad: str) -> None:
    write(tmp_path, {"0001_ok.sql": "SELECT 1", bad: "SELECT 2"})
    with pytest.raises(ValueError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)


def test_duplicate_versions_raise(tmp_path: Path) -> None:
    write(tmp_path, {"0001_one.sql": "SELECT 1", "0001_uno.sql": "SELECT 1"})
    with pytest.raises(ValueError, match="duplicate"):
        load_migrations(tmp_path)


def test_checksum_follows_content() -> None:
    assert Migration(1, "a", "SELECT 1").checksum == Migration(2, "b", "SELECT 1").checksum
    assert Migration(1, "a", "SELECT 1").checksum != Migration(1, "a", "SELECT 1;").checksum


# --- migrate ------------------------------------------------------------------------------------------


async def test_project_migrations_apply_and_record(conn: asyncpg.Connection) -> None:
    migrations = load_migrations()
    assert await migrate(conn) == [m.version for m in migrations]
    assert await recorded(conn) == [(m.version, m.name, m.checksum) for m in migrations]
    assert {"grids", "responders", "incidents", "reports"} <= await tables(conn)
    assert await migrate(conn) == []  # second run applies nothing


async def test_applies_in_order_and_only_pending(conn: asyncpg.Connection, tmp_path: Path) -> None:
    d = write(
        tmp_path,
        {
            "0001_base.sql": "CREATE TABLE t (id int PRIMARY KEY);",
            "0002_column.sql": "ALTER TABLE t ADD COLUMN label text;",  # needs 0001 first
        },
    )
    assert await migrate(conn, load_migrations(d)) == [1, 2]
    write(d, {"0003_index.sql": "CREATE INDEX t_label_idx ON t (label); INSERT INTO t VALUES (1, 'x');"})
    assert await migrate(conn, load_migrations(d)) == [3]
    assert await migrate(conn, load_migrations(d)) == []
    assert [v for v, _, _ in await recorded(conn)] == [1, 2, 3]
    assert await conn.fetchval("SELECT label FROM t WHERE id = 1") == "x"
    applied_at = await conn.fetch("SELECT applied_at FROM schema_migrations ORDER BY version")
    assert all(r["applied_at"] is not None for r in applied_at)


async def test_changed_applied_migration_raises(conn: asyncpg.Connection, dsn: str) -> None:
    await migrate(conn, [Migration(1, "base", "CREATE TABLE t (id int);")])
    changed = [
        Migration(1, "base", "CREATE TABLE t (id bigint);"),
        Migration(2, "more", "CREATE TABLE u ();"),
    ]
    with pytest.raises(RuntimeError, match="0001_base changed"):
        await migrate(conn, changed)
    assert "u" not in await tables(conn)  # nothing after the drift is applied
    # The advisory lock was released: another migrator can proceed.
    other = await asyncpg.connect(dsn)
    try:
        assert (
            await asyncio.wait_for(migrate(other, [Migration(1, "base", "CREATE TABLE t (id int);")]), 5)
            == []
        )
    finally:
        await other.close()


async def test_failing_migration_rolls_back_alone(conn: asyncpg.Connection) -> None:
    migrations = [
        Migration(1, "good", "CREATE TABLE good (id int);"),
        Migration(2, "bad", "CREATE TABLE half (id int); SELECT no_such_function();"),
        Migration(3, "later", "CREATE TABLE later (id int);"),
    ]
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate(conn, migrations)
    assert [v for v, _, _ in await recorded(conn)] == [1]
    assert {"good"} <= await tables(conn) and not {"half", "later"} & await tables(conn)
    fixed = [migrations[0], Migration(2, "bad", "CREATE TABLE half (id int);"), migrations[2]]
    assert await migrate(conn, fixed) == [2, 3]


async def test_concurrent_migrators_apply_each_migration_once(dsn: str) -> None:
    """Several services starting together on an existing bookkeeping table: one applies, others wait."""
    await ensure_database(dsn)
    first = await asyncpg.connect(dsn)
    await migrate(first, [])  # the bookkeeping table exists; the race below is on the lock only
    migrations = [Migration(1, "slow", "SELECT pg_sleep(0.2); CREATE TABLE slow (id int);")]
    conns = [first, *[await asyncpg.connect(dsn) for _ in range(3)]]
    try:
        results = await asyncio.gather(*(migrate(c, migrations) for c in conns))
        assert sorted(results) == [[], [], [], [1]]
    finally:
        for c in conns:
            await c.close()


async def test_migrator_waits_for_another_that_is_creating_the_bookkeeping_table(dsn: str) -> None:
    """Deterministic form of the race: another migrator holds the lock mid-way through creating it."""
    await ensure_database(dsn)
    other = await asyncpg.connect(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await other.execute("SELECT pg_advisory_lock(7261001)")
        tx = other.transaction()
        await tx.start()
        await other.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        task = asyncio.create_task(migrate(conn, [Migration(1, "one", "CREATE TABLE one (id int);")]))
        await asyncio.sleep(0.3)  # the migrator is now blocked behind `other`
        await tx.commit()
        await other.execute("SELECT pg_advisory_unlock(7261001)")
        assert await asyncio.wait_for(task, 10) == [1]
    finally:
        await conn.close()
        await other.close()


async def test_pg_fixture_is_fully_migrated(pg: asyncpg.Pool) -> None:
    migrations = load_migrations()
    async with pg.acquire() as c:
        assert await recorded(c) == [(m.version, m.name, m.checksum) for m in migrations]
        assert await migrate(c) == []


# The queries that run on every report, every few seconds or every minute, and the index each
# must search: at a million stored incidents (bench.memory) any scan costs tenths of a second.
HOT_QUERIES = {
    # the duplicate check: the open incidents near the place (not the whole hour's incidents)
    "incidents_open_place_idx": """SELECT incident_id FROM incidents
        WHERE point(lon, lat) <@ box(point(106.5, 29.6), point(106.6, 29.7)) AND incident_id <> 'x'
        AND occurred_at BETWEEN now() - interval '1 hour' AND now() + interval '1 hour'
        AND status NOT IN ('closed', 'cancelled', 'merged')""",
    "timers_pending_clock_idx": """UPDATE timers SET cancelled_at = now()
        WHERE clock_id = ANY(ARRAY['c-1']) AND fired_at IS NULL AND cancelled_at IS NULL""",
    "incidents_created_idx": """SELECT incident_id, status FROM incidents
        WHERE created_at >= now() - interval '7 days' AND created_at < now()""",
    "incidents_updated_idx": """SELECT incident_id, version FROM incidents
        WHERE updated_at > now() - make_interval(secs => 120.0)""",
    # a command's events: the part of the timeline after the version it started from
    "incident_events_incident_id_version_key": """SELECT * FROM incident_events
        WHERE incident_id = 'INC-1' AND version > 41 AND starts_with(event_id, 'cmd-1#') ORDER BY version""",
    "tasks_one_active_per_responder": """SELECT DISTINCT responder_id FROM tasks
        WHERE state IN ('offered', 'accepted', 'en_route', 'on_scene')""",
    # the intake's reconciler: how far the pipeline has got (its last filing)
    "reports_filed_at_idx": """SELECT published_at, filed_at FROM reports WHERE filed_at IS NOT NULL
        ORDER BY filed_at DESC LIMIT 1""",
    # the outbox relay: how far the dispatcher has got (its last confirmation)
    "outbox_done_at_idx": """SELECT sent_at, done_at FROM outbox WHERE done_at IS NOT NULL
        ORDER BY done_at DESC LIMIT 1""",
}


# Rows (rolled back with the test) where an empty table would leave two indexes costed alike.
HOT_SETUP = {
    "timers_pending_clock_idx": """INSERT INTO timers (timer_id, incident_id, clock_id, kind, fire_at)
        SELECT 't-' || g, 'i-' || g, 'c-' || g, 'warning', now() + interval '1 hour'
          FROM generate_series(1, 5000) g; ANALYZE timers""",
}


@pytest.mark.parametrize("index", sorted(HOT_QUERIES))
async def test_hot_queries_search_an_index(pg: asyncpg.Pool, index: str) -> None:
    """With sequential scans priced out, as they are on a large table, each query searches its
    index (a walk through another index, filtering every row, does not count)."""
    async with pg.acquire() as c, c.transaction():
        if index in HOT_SETUP:
            await c.execute(HOT_SETUP[index])
        await c.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in await c.fetch(f"EXPLAIN {HOT_QUERIES[index]}"))
    assert index in plan, plan


async def test_history_newest_first_reads_an_index_in_order(pg: asyncpg.Pool) -> None:
    async with pg.acquire() as c, c.transaction():
        await c.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0] for r in await c.fetch("EXPLAIN SELECT * FROM incidents ORDER BY occurred_at DESC LIMIT 200")
        )
    assert "Index Scan Backward using incidents_occurred_idx" in plan and "Sort" not in plan, plan
