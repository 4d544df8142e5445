"""Durable timers fire once: a due timer becomes its command in the outbox in the transaction that
marks it fired; one not due, cancelled or fired already does not; two firers never share one.

Every firing here is rolled back: the database is the session's, and other tests' timers may be
due in it (a firing kept would take them from the dispatchers those tests run)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from contracts.commands import parse_command
from dispatcher.adapters.timers import fire_due, timer_command
from tests.db import rolled_back

INSERT = """INSERT INTO timers (timer_id, incident_id, clock_id, task_id, kind, fire_at, fired_at,
                                cancelled_at)
            VALUES ($1, $2, $3, NULL, 'overdue', $4, $5, $6)"""


async def _timer(conn: asyncpg.Connection | asyncpg.Pool, fire_at: datetime, **state: datetime) -> str:
    timer_id = f"TM-{uuid.uuid4().hex[:10]}"
    args = (f"INC-{timer_id}", f"CLK-{timer_id}", fire_at, state.get("fired_at"), state.get("cancelled_at"))
    await conn.execute(INSERT, timer_id, *args)
    return timer_id


async def _fired(conn: asyncpg.Connection) -> set[str]:
    return {m.message_id for m in await fire_due(conn, limit=10_000)}


async def test_a_due_timer_fires_once_as_its_command_in_the_outbox(pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    async with rolled_back(pool) as conn:
        due = await _timer(conn, now - timedelta(seconds=1))
        later = await _timer(conn, now + timedelta(hours=1))
        cancelled = await _timer(conn, now - timedelta(seconds=1), cancelled_at=now)
        fired = await _timer(conn, now - timedelta(seconds=1), fired_at=now)
        first = await _fired(conn)
        assert f"timer:{due}" in first
        assert not {f"timer:{t}" for t in (later, cancelled, fired)} & first
        assert f"timer:{due}" not in await _fired(conn)  # fired: never again
        value = await conn.fetchval("SELECT value FROM outbox WHERE message_id = $1", f"timer:{due}")
        cmd = parse_command(bytes(value))
        assert (cmd.action, cmd.incident_id, cmd.actor) == ("timer", f"INC-{due}", "system:timer")
        assert cmd.data == {"timer_id": due, "kind": "overdue", "clock_id": f"CLK-{due}", "task_id": None}


async def test_a_rolled_back_firing_leaves_the_timer_due(pool: asyncpg.Pool) -> None:
    due = await _timer(pool, datetime.now(UTC) - timedelta(seconds=1))
    try:
        async with rolled_back(pool) as conn:  # the process died before its commit
            assert f"timer:{due}" in await _fired(conn)
        async with rolled_back(pool) as conn:
            assert f"timer:{due}" in await _fired(conn)
    finally:
        await pool.execute("DELETE FROM timers WHERE timer_id = $1", due)


async def test_two_firers_never_fire_one_timer_twice(pool: asyncpg.Pool) -> None:
    ids = [await _timer(pool, datetime.now(UTC) - timedelta(seconds=1)) for _ in range(20)]
    try:
        async with rolled_back(pool) as a, rolled_back(pool) as b, rolled_back(pool) as c:
            fired = await asyncio.gather(_fired(a), _fired(b), _fired(c))
            mine = [m for batch in fired for m in batch if m.removeprefix("timer:") in ids]
            assert sorted(mine) == sorted(f"timer:{t}" for t in ids)  # each once, none lost
    finally:
        await pool.execute("DELETE FROM timers WHERE timer_id = ANY($1::text[])", ids)


def test_a_timer_command_carries_its_timer() -> None:
    at = datetime(2026, 12, 5, 20, 0, tzinfo=UTC)
    row = {"timer_id": "T1", "incident_id": "INC-1", "fire_at": at, "kind": "warning", "clock_id": "C1"}
    cmd = timer_command({**row, "task_id": "TASK-1"})
    assert (cmd.command_id, cmd.incident_id, cmd.at) == ("timer:T1", "INC-1", at)
    assert orjson.loads(orjson.dumps(cmd.data)) == {
        "timer_id": "T1",
        "kind": "warning",
        "clock_id": "C1",
        "task_id": "TASK-1",
    }
