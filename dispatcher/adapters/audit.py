"""The audit log of commands: who asked what of which incident, from where, and what came of it
(applied, refused with the reason, failed for good). One row per command id (a replay adds none).
"""

from __future__ import annotations

import asyncpg

from contracts.commands import Command


async def record(conn: asyncpg.Connection, cmd: Command, outcome: str, detail: str | None) -> None:
    await conn.execute(
        """INSERT INTO audit_log (command_id, incident_id, action, actor, at, outcome, detail, data,
                                  origin)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (command_id) DO NOTHING""",
        cmd.command_id,
        cmd.incident_id,
        cmd.action,
        cmd.actor,
        cmd.at,
        outcome,
        detail,
        {"reason": cmd.reason, **cmd.data},
        cmd.origin,
    )
