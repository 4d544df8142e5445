"""`python -m infra.migrate`: create the database if missing and apply pending migrations."""

from __future__ import annotations

import asyncio

import asyncpg

from infra.db import ensure_database, migrate
from infra.settings import Settings


async def run(settings: Settings) -> list[int]:
    await ensure_database(settings.database_url)
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


if __name__ == "__main__":
    applied = asyncio.run(run(Settings.from_env()))
    print("applied:", ", ".join(f"{v:04d}" for v in applied) or "nothing (up to date)")
