"""The audit log of commands against the real PostgreSQL: one row per command id, a replay adds none."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from contracts.commands import Command
from dispatcher.adapters import audit


def command(reason: str | None = "误报", **data: object) -> Command:
    tag = uuid.uuid4().hex[:8]
    return Command(
        "cancel",
        f"INC-AU-{tag}",
        f"operator:duty:{tag}",
        "operator:duty",
        datetime.now(UTC),
        reason=reason,
        data=dict(data),
        origin="10.1.2.3",
    )


async def rows_of(pool: asyncpg.Pool, command_id: str) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT * FROM audit_log WHERE command_id = $1", command_id))


async def test_a_command_is_recorded_with_who_what_when_where_and_its_outcome(pool: asyncpg.Pool) -> None:
    cmd = command(reason="居民已自行处理", text="补充说明")
    async with pool.acquire() as conn:
        await audit.record(conn, cmd, "refused", "cannot cancel a closed incident")
    [row] = await rows_of(pool, cmd.command_id)
    assert (row["incident_id"], row["action"], row["actor"], row["at"]) == (
        cmd.incident_id,
        "cancel",
        "operator:duty",
        cmd.at,
    )
    assert (row["outcome"], row["detail"], row["origin"]) == (
        "refused",
        "cannot cancel a closed incident",
        "10.1.2.3",
    )
    # the reason travels with the command's data
    assert row["data"] == {"reason": "居民已自行处理", "text": "补充说明"}


async def test_a_replayed_command_adds_no_row_and_keeps_the_first_outcome(pool: asyncpg.Pool) -> None:
    cmd = command()
    async with pool.acquire() as conn:
        await audit.record(conn, cmd, "applied", None)
        await audit.record(conn, cmd, "applied", None)  # the same command delivered again
        await audit.record(conn, cmd, "failed", "dead-lettered")  # a later outcome never rewrites it
    rows = await rows_of(pool, cmd.command_id)
    assert [(r["outcome"], r["detail"]) for r in rows] == [("applied", None)]


async def test_each_command_id_gets_its_own_row(pool: asyncpg.Pool) -> None:
    first, second = command(), command()
    second = Command(
        second.action, first.incident_id, second.command_id, second.actor, second.at, None, {}, None
    )
    async with pool.acquire() as conn:
        await audit.record(conn, first, "applied", None)
        await audit.record(conn, second, "refused", "already cancelled")
    rows = await pool.fetch(
        "SELECT command_id, outcome, origin, data FROM audit_log WHERE incident_id = $1 ORDER BY outcome",
        first.incident_id,
    )
    assert [(r["command_id"], r["outcome"]) for r in rows] == [
        (first.command_id, "applied"),
        (second.command_id, "refused"),
    ]
    assert rows[1]["origin"] is None and rows[1]["data"] == {"reason": None}


async def test_the_record_belongs_to_the_callers_transaction(pool: asyncpg.Pool) -> None:
    """Recorded with the decision: a decision rolled back leaves no audit row behind."""
    cmd = command()
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await audit.record(conn, cmd, "applied", None)
        assert len(await conn.fetch("SELECT 1 FROM audit_log WHERE command_id = $1", cmd.command_id)) == 1
        await tx.rollback()
    assert await rows_of(pool, cmd.command_id) == []
