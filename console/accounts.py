"""The console's accounts (users: operators, the commander, viewers, administrators, responders'
phone logins) as the administrator's screen changes them. Sessions and logins are `console.auth`.
"""

from __future__ import annotations

import asyncpg


async def locked_account(conn: asyncpg.Connection, username: str) -> asyncpg.Record | None:
    """The account's role and state, locked until the caller's transaction ends (None: new)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT role, disabled FROM users WHERE username = $1 FOR UPDATE", username
    )
    return row


async def responder_exists(conn: asyncpg.Connection, responder_id: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM responders WHERE responder_id = $1", responder_id))


async def upsert_account(
    conn: asyncpg.Connection,
    username: str,
    display_name: str,
    role: str,
    new_hash: str | None,
    responder_id: str | None,
    disabled: bool,
) -> None:
    """Create the account or change it; `new_hash` None keeps the password it has."""
    await conn.execute(
        """INSERT INTO users (username, display_name, role, password_hash, responder_id, disabled)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (username) DO UPDATE SET
               display_name = EXCLUDED.display_name, role = EXCLUDED.role,
               password_hash = COALESCE($7, users.password_hash),
               responder_id = EXCLUDED.responder_id, disabled = EXCLUDED.disabled,
               updated_at = now()""",
        username,
        display_name,
        role,
        new_hash or "",
        responder_id,
        disabled,
        new_hash,
    )
