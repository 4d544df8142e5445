"""Durable timers (clocks' warnings and deadlines, offers' expiry) firing: each due timer becomes a
command on its incident, written to the outbox in the same transaction that marks it fired, so
a crash neither loses nor double-fires one. (Timers are scheduled and cancelled with the case
they belong to: `casestore`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from contracts.commands import Command
from infra import outbox


def timer_command(r: Mapping[str, Any]) -> Command:
    """A due timer as a command on its incident (its id makes a second firing change nothing)."""
    return Command(
        action="timer",
        incident_id=r["incident_id"],
        command_id=f"timer:{r['timer_id']}",
        actor="system:timer",
        at=r["fire_at"],
        data={k: r[k] for k in ("timer_id", "kind", "clock_id", "task_id")},
    )


async def fire_due(conn: asyncpg.Connection, limit: int = 200) -> list[outbox.Message]:
    """Inside the caller's transaction: the due timers (locked: several dispatchers fire each
    once), as outbox messages already queued, and marked fired. The caller publishes them."""
    rows = await conn.fetch(
        """SELECT * FROM timers WHERE fired_at IS NULL AND cancelled_at IS NULL
              AND fire_at <= now() ORDER BY fire_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
        limit,
    )
    due = [outbox.command_message(timer_command(r)) for r in rows]
    await outbox.enqueue(conn, due)
    if rows:
        fired = [r["timer_id"] for r in rows]
        await conn.execute("UPDATE timers SET fired_at = now() WHERE timer_id = ANY($1::text[])", fired)
    return due
