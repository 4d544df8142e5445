"""The database: the one way every process opens its pool, and the bootstrap (create the
database if missing, apply versioned migrations in order).

Each file `infra/migrations/NNNN_name.sql` runs once, in its own transaction, and is recorded
in `schema_migrations` with a checksum; an applied file that has since changed is an error
rather than silently diverging schemas.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 30.0


async def init_connection(conn: asyncpg.Connection) -> None:
    """jsonb columns travel as Python objects."""
    await conn.set_type_codec(
        "jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
    )


async def create_pool(dsn: str, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        # A server that is restarting must fail a connection or a query fast (it is retried),
        # never hold a consumer for asyncpg's default 60 s connect wait or forever on a query.
        timeout=CONNECT_TIMEOUT_S,
        command_timeout=COMMAND_TIMEOUT_S,
    )
    assert pool is not None
    return pool


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ValueError(f"migration file name {path.name!r} is not NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {directory}")
    return found


async def ensure_database(dsn: str) -> None:
    """Create the database named in `dsn` if it does not exist (needs a server-level login)."""
    parts = urlsplit(dsn)
    dbname = parts.path.lstrip("/")
    if not dbname:
        return
    admin = urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dbname)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{dbname}"')
            # Several services starting on a fresh server race to create it: the losers see
            # either error, depending on how far the winner's CREATE had got.
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                pass
    finally:
        await conn.close()


async def drop_database(dsn: str) -> None:
    parts = urlsplit(dsn)
    dbname = parts.path.lstrip("/")
    conn = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    finally:
        await conn.close()


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Apply pending migrations; returns the versions applied now."""
    migrations = load_migrations() if migrations is None else migrations
    # One migrator at a time, even with several services starting together on a fresh database:
    # the lock comes first, before the bookkeeping table exists.
    await conn.execute("SELECT pg_advisory_lock(7261001)")
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {r["version"]: r["checksum"] for r in await conn.fetch("SELECT * FROM schema_migrations")}
        done: list[int] = []
        for mig in sorted(migrations, key=lambda m: m.version):
            if mig.version in applied:
                if applied[mig.version] != mig.checksum:
                    raise RuntimeError(f"migration {mig.version:04d}_{mig.name} changed after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    mig.version,
                    mig.name,
                    mig.checksum,
                )
            done.append(mig.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock(7261001)")


async def ping(pool: asyncpg.Pool) -> None:
    """Raises unless the database answers (health checks)."""
    await pool.fetchval("SELECT 1")
