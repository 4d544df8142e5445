"""Sessions in PostgreSQL, idle expiry, lockout and IP throttling, against the real database."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest

from console.auth import Lockout, LoginRefused, Sessions, token_hash
from console.passwords import hash_password, needs_rehash, verify_password

PASSWORD = "right-horse-battery"
_HASH: list[str] = []


async def make_user(pg: asyncpg.Pool, role: str = "operator") -> str:
    if not _HASH:
        _HASH.append(hash_password(PASSWORD))
    username = f"u-{uuid.uuid4().hex[:8]}"
    await pg.execute(
        "INSERT INTO users (username, display_name, role, password_hash) VALUES ($1, $2, $3, $4)",
        username,
        "测试用户",
        role,
        _HASH[0],
    )
    return username


def ip() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


async def test_a_session_is_stored_hashed_and_survives_without_redis(pg: asyncpg.Pool) -> None:
    username = await make_user(pg)
    sessions = Sessions(pg, 3600)
    result = await sessions.login(username, PASSWORD, "10.0.0.1")
    assert result is not None
    token, user = result
    assert user.username == username and user.role == "operator"
    row = await pg.fetchrow("SELECT * FROM sessions WHERE username = $1", username)
    assert row["token_hash"] == token_hash(token) and token not in str(dict(row))
    assert row["origin"] == "10.0.0.1"
    # A second server (or the same after a restart) knows the session: nothing is held in memory.
    other = Sessions(pg, 3600)
    assert await other.peek(token) == user and await other.user(token) == user
    assert await other.user("forged") is None and await other.user(None) is None
    assert await sessions.logout(token, "10.0.0.1")
    assert await sessions.user(token) is None and await sessions.peek(token) is None
    assert not await sessions.logout(token)
    kinds = [
        r["outcome"]
        for r in await pg.fetch(
            "SELECT outcome FROM audit_log WHERE actor = $1 AND kind IN ('login', 'logout') ORDER BY seq",
            f"operator:{username}",
        )
    ]
    assert kinds == ["ok", "ok"]


async def test_idle_sessions_expire_and_use_slides_the_deadline(pg: asyncpg.Pool) -> None:
    username = await make_user(pg)
    sessions = Sessions(pg, 2)  # 2 s idle TTL; the deadline is rewritten at most every 0.5 s
    result = await sessions.login(username, PASSWORD)
    assert result is not None
    token, _ = result
    started = time.monotonic()
    for _ in range(5):  # used every 0.7 s for 3.5 s: well past the 2 s TTL, still alive
        await asyncio.sleep(0.7)
        assert await sessions.user(token) is not None, time.monotonic() - started
    # peek does not count as use: the session still dies 2 s after the last real use.
    for _ in range(2):
        await asyncio.sleep(0.7)
        assert await sessions.peek(token) is not None
    await asyncio.sleep(1.0)
    assert await sessions.peek(token) is None and await sessions.user(token) is None


async def test_absolute_lifetime_ends_even_a_busy_session(pg: asyncpg.Pool) -> None:
    username = await make_user(pg)
    sessions = Sessions(pg, 1, max_age_s=2, touch_every_s=0.1)
    result = await sessions.login(username, PASSWORD)
    assert result is not None
    for _ in range(6):
        await asyncio.sleep(0.3)
        assert await sessions.user(result[0]) is not None
    await asyncio.sleep(0.6)
    assert await sessions.user(result[0]) is None


async def test_five_failures_lock_the_username_then_it_unlocks(pg: asyncpg.Pool) -> None:
    username = await make_user(pg)
    sessions = Sessions(pg, 3600, lockout=Lockout(user_failures=5, ip_failures=100, lock_s=2))
    for n in range(4):
        refused = await sessions.attempt(username, "wrong", ip())
        assert refused == LoginRefused("invalid"), n
    fifth = await sessions.attempt(username, "wrong", ip())
    assert isinstance(fifth, LoginRefused) and fifth.reason == "locked" and fifth.retry_after_s == 2
    # Locked: even the right password is refused, from anywhere, without checking it.
    locked = await sessions.attempt(username, PASSWORD, ip())
    assert isinstance(locked, LoginRefused) and locked.reason == "locked" and locked.retry_after_s >= 1
    outcomes = [
        r["outcome"]
        for r in await pg.fetch(
            "SELECT outcome FROM audit_log WHERE kind = 'login' AND actor = $1 ORDER BY seq",
            f"user:{username}",
        )
    ]
    assert outcomes == ["wrong_credentials"] * 5 + ["locked"]
    await asyncio.sleep(2.1)
    assert not isinstance(await sessions.attempt(username, PASSWORD, ip()), LoginRefused)
    # A success resets the count: four more failures do not lock.
    for _ in range(4):
        assert await sessions.attempt(username, "wrong") == LoginRefused("invalid")


async def test_one_ip_spraying_many_usernames_is_throttled(pg: asyncpg.Pool) -> None:
    victims = [await make_user(pg) for _ in range(4)]
    attacker = ip()
    sessions = Sessions(pg, 3600, lockout=Lockout(user_failures=5, ip_failures=6))
    answers = [await sessions.attempt(v, "guess", attacker) for v in victims + victims[:2]]
    assert answers[:5] == [LoginRefused("invalid")] * 5
    assert isinstance(answers[5], LoginRefused) and answers[5].reason == "throttled"
    # Throttled IP: refused before any password check; the victims are not locked by it.
    again = await sessions.attempt(victims[3], PASSWORD, attacker)
    assert isinstance(again, LoginRefused) and again.reason == "throttled" and again.retry_after_s > 0
    assert not isinstance(await sessions.attempt(victims[3], PASSWORD, ip()), LoginRefused)


async def test_unknown_usernames_cost_a_hash_and_count_like_known_ones(pg: asyncpg.Pool) -> None:
    sessions = Sessions(pg, 3600, lockout=Lockout(user_failures=2, ip_failures=100))
    known = await make_user(pg)
    t0 = time.perf_counter()
    await sessions.attempt(known, "wrong", ip())
    t_known = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = await sessions.attempt("nobody-" + uuid.uuid4().hex, "wrong", ip())
    t_unknown = time.perf_counter() - t0
    assert first == LoginRefused("invalid")
    assert t_unknown > t_known / 3, (t_known, t_unknown)  # scrypt was run, not skipped
    ghost = "ghost-" + uuid.uuid4().hex
    await sessions.attempt(ghost, "x")
    second = await sessions.attempt(ghost, "x")
    assert isinstance(second, LoginRefused) and second.reason == "locked"  # no existence oracle


async def test_a_disabled_user_cannot_log_in_and_loses_sessions(pg: asyncpg.Pool) -> None:
    username = await make_user(pg)
    sessions = Sessions(pg, 3600)
    result = await sessions.login(username, PASSWORD)
    assert result is not None
    await pg.execute("UPDATE users SET disabled = true WHERE username = $1", username)
    assert await sessions.user(result[0]) is None  # checked on every request
    assert await sessions.login(username, PASSWORD) is None
    assert await sessions.revoke_user(username) == 1


def test_password_hashes_are_salted_scrypt_with_sane_costs() -> None:
    a, b = hash_password("pw"), hash_password("pw")
    assert a != b and a.startswith("scrypt$16384$8$1$")
    assert verify_password("pw", a) and not verify_password("pW", a)
    assert not needs_rehash(a) and needs_rehash("scrypt$1024$8$1$x$y") and needs_rehash("plain")
    assert not verify_password("pw", "scrypt$1048577$8$1$AAAA$AAAA")  # absurd costs refused


@pytest.mark.parametrize("token", ["", "x" * 101])
async def test_odd_tokens_are_refused_without_a_query(pg: asyncpg.Pool, token: str) -> None:
    assert await Sessions(pg, 60).user(token) is None
