"""Accounts as the administrator's screen changes them, on the real PostgreSQL: created, changed
with or without a new password, and locked for the length of the caller's transaction."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from console.accounts import locked_account, responder_exists, upsert_account


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_an_account_is_created_then_changed_keeping_its_password(pool: asyncpg.Pool) -> None:
    username = uid("acct")
    async with pool.acquire() as conn:
        assert await locked_account(conn, username) is None  # new
        await upsert_account(conn, username, "值班员", "operator", "scrypt$first", None, False)
        row = await locked_account(conn, username)
        assert row is not None and (row["role"], row["disabled"]) == ("operator", False)
        await upsert_account(conn, username, "观察员", "viewer", None, None, True)  # no new password
    after = await pool.fetchrow("SELECT * FROM users WHERE username = $1", username)
    assert after["password_hash"] == "scrypt$first"
    assert (after["display_name"], after["role"], after["disabled"]) == ("观察员", "viewer", True)
    assert after["updated_at"] > after["created_at"]
    async with pool.acquire() as conn:
        await upsert_account(conn, username, "观察员", "viewer", "scrypt$second", None, False)
    assert await pool.fetchval("SELECT password_hash FROM users WHERE username = $1", username) == (
        "scrypt$second"
    )


async def test_a_responder_account_names_a_known_responder(pool: asyncpg.Pool) -> None:
    rid = uid("P")
    async with pool.acquire() as conn:
        assert not await responder_exists(conn, rid)
        await conn.execute(
            """INSERT INTO responders (responder_id, name, kind, org)
               VALUES ($1, '网格员', 'grid_worker', '社区')""",
            rid,
        )
        assert await responder_exists(conn, rid)
        await upsert_account(conn, rid, "网格员", "responder", "scrypt$x", rid, False)
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await upsert_account(conn, uid("P"), "无名", "responder", "scrypt$x", uid("P"), False)
    assert await pool.fetchval("SELECT responder_id FROM users WHERE username = $1", rid) == rid


async def test_the_account_stays_locked_until_the_callers_transaction_ends(pool: asyncpg.Pool) -> None:
    username = uid("acct")
    async with pool.acquire() as conn:
        await upsert_account(conn, username, "指挥长", "commander", "scrypt$x", None, False)
    async with pool.acquire() as holder, pool.acquire() as other:
        async with holder.transaction():
            assert (await locked_account(holder, username))["role"] == "commander"  # type: ignore[index]
            with pytest.raises(asyncpg.LockNotAvailableError):
                await other.execute("SELECT 1 FROM users WHERE username = $1 FOR UPDATE NOWAIT", username)
        async with other.transaction():  # released with the transaction
            assert await locked_account(other, username) is not None
