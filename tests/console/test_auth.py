"""Sessions in PostgreSQL, idle expiry, and the login lanes' growing waits, against the real database."""

from __future__ import annotations

import time
import uuid

import asyncpg
import pytest

from console.auth import LOGINS_PER_MINUTE, SESSIONS_PER_USER, LoggedIn, LoginRefused, Sessions, token_hash
from console.passwords import hash_password, needs_rehash, verify_password
from console.throttle import Backoff, LoginPolicy

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


async def elapse(pg: asyncpg.Pool, token: str, seconds: float) -> None:
    """`seconds` pass for one session: every time it holds moves that far into the past (the
    rules are PostgreSQL's now() against them: tested without sleeping, on no margin)."""
    await pg.execute(
        """UPDATE sessions SET created_at = created_at - $2 * interval '1 second',
                  last_seen = last_seen - $2 * interval '1 second',
                  idle_deadline = idle_deadline - $2 * interval '1 second',
                  expires_at = expires_at - $2 * interval '1 second'
            WHERE token_hash = $1""",
        token_hash(token),
        seconds,
    )


async def test_idle_sessions_expire_and_use_slides_the_deadline(pg: asyncpg.Pool) -> None:
    username = await make_user(pg)
    sessions = Sessions(pg, 60)  # a minute's idle TTL; the deadline is rewritten at most every 15 s
    result = await sessions.login(username, PASSWORD)
    assert result is not None
    token, _ = result
    for _ in range(5):  # used every 40 s for 200 s: well past the TTL, still alive
        await elapse(pg, token, 40)
        assert await sessions.user(token) is not None
    # peek does not count as use: the session dies a minute after the last real use.
    await elapse(pg, token, 40)
    assert await sessions.peek(token) is not None
    await elapse(pg, token, 21)
    assert await sessions.peek(token) is None and await sessions.user(token) is None


async def test_absolute_lifetime_ends_even_a_busy_session(pg: asyncpg.Pool) -> None:
    username = await make_user(pg)
    sessions = Sessions(pg, 60, max_age_s=300, touch_every_s=1)
    result = await sessions.login(username, PASSWORD)
    assert result is not None
    for _ in range(9):  # used every 30 s: never idle
        await elapse(pg, result[0], 30)
        assert await sessions.user(result[0]) is not None
    await elapse(pg, result[0], 31)  # 301 s after the login
    assert await sessions.user(result[0]) is None


POLICY = LoginPolicy(
    device=Backoff(free=3, first_s=2.0, most_s=60),
    pair=Backoff(free=3, first_s=2.0, most_s=60),
    user=Backoff(free=6, first_s=2.0, most_s=30),
    ip=Backoff(free=10, first_s=1.0, most_s=20),
)


async def later(pg: asyncpg.Pool, seconds: float) -> None:
    """Move every lane's last failure `seconds` into the past: time passing, without sleeping."""
    await pg.execute(
        "UPDATE login_throttle SET window_start = window_start - $1 * interval '1 second'", seconds
    )


async def test_guessing_slows_the_guesser_with_growing_waits_not_a_lock(pg: asyncpg.Pool) -> None:
    username, attacker = await make_user(pg), ip()
    sessions = Sessions(pg, 3600, policy=POLICY)
    for n in range(3):  # free failures
        assert await sessions.attempt(username, "wrong", attacker) == LoginRefused("invalid"), n
    waits = []
    for _ in range(4):
        delayed = await sessions.attempt(username, "wrong", attacker)  # at once: must wait
        assert isinstance(delayed, LoginRefused) and delayed.reason == "delayed" and delayed.lane == "pair"
        waits.append(delayed.retry_after_s)
        await later(pg, delayed.retry_after_s)
        assert await sessions.attempt(username, "wrong", attacker) == LoginRefused("invalid")
    assert waits == [2, 4, 8, 16]  # doubling, from the first wait on
    # While waiting, even the right password is not checked; when the wait is over, it works,
    # and the success clears the lane it was made in.
    refused = await sessions.attempt(username, PASSWORD, attacker)
    assert isinstance(refused, LoginRefused) and refused.reason == "delayed"
    await later(pg, POLICY.pair.most_s)
    assert isinstance(await sessions.attempt(username, PASSWORD, attacker), LoggedIn)
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM login_throttle WHERE scope = 'pair' AND subject = $1",
            f"{username}\n{attacker}",
        )
        == 0
    )
    outcomes = [
        r["outcome"]
        for r in await pg.fetch(
            "SELECT outcome FROM audit_log WHERE kind = 'login' AND actor = $1 ORDER BY seq",
            f"user:{username}",
        )
    ]
    assert outcomes.count("delayed") == 5 and outcomes.count("wrong_credentials") == 7


async def test_a_known_device_logs_in_while_someone_guesses_at_the_account_from_its_own_address(
    pg: asyncpg.Pool,
) -> None:
    """The duty operator's console and the guesser share one address (a command room's NAT):
    the console shows its device token and is never slowed; a hard lock used to shut it out."""
    username, shared = await make_user(pg), ip()
    sessions = Sessions(pg, 3600, policy=POLICY)
    first = await sessions.attempt(username, PASSWORD, shared)
    assert isinstance(first, LoggedIn) and first.device_token
    for _ in range(40):  # every lane without a device is waiting after this
        await later(pg, 60)
        await sessions.attempt(username, "guess", shared)
    stranger = await sessions.attempt(username, PASSWORD, shared)  # no device token: waits
    assert isinstance(stranger, LoginRefused) and stranger.reason == "delayed"
    again = await sessions.attempt(username, PASSWORD, shared, first.device_token)
    assert isinstance(again, LoggedIn) and again.device_token == first.device_token
    # A device token is this user's only: shown with another username it is no device at all.
    other = await make_user(pg)
    assert await sessions._known_device(other, first.device_token) is None
    # The administrator sees who is being guessed at, and from where.
    lanes = {(t["lane"], t["username"], t["address"]) for t in await sessions.throttles()}
    assert {("pair", username, shared), ("user", username, None), ("ip", None, shared)} <= lanes


async def test_one_address_spraying_unknown_ids_slows_only_strangers_from_that_address(
    pg: asyncpg.Pool,
) -> None:
    """Twenty failures as responder ids with no account, from one address, used to refuse
    every login from it for 15 minutes: the duty operator and every phone behind it."""
    known, newcomer, nat = await make_user(pg), await make_user(pg), ip()
    sessions = Sessions(pg, 3600, policy=POLICY)
    device = await sessions.attempt(known, PASSWORD, nat)
    assert isinstance(device, LoggedIn)
    for n in range(POLICY.ip.free - 1):  # within the address's free failures: nobody is slowed
        assert await sessions.attempt(f"V-NOBODY-{n}", PASSWORD, nat) == LoginRefused("invalid")
    assert isinstance(await sessions.attempt(newcomer, PASSWORD, nat), LoggedIn)
    for n in range(20):
        await sessions.attempt(f"V-NOBODY-{n}", PASSWORD, nat)
    slowed = await sessions.attempt(await make_user(pg), PASSWORD, nat)  # a stranger here: a short wait
    assert isinstance(slowed, LoginRefused) and slowed.lane == "ip"
    assert slowed.retry_after_s <= POLICY.ip.most_s
    assert isinstance(await sessions.attempt(known, PASSWORD, nat, device.device_token), LoggedIn)
    assert isinstance(await sessions.attempt(newcomer, PASSWORD, ip()), LoggedIn)  # elsewhere: at once


async def test_unknown_usernames_cost_a_hash_and_count_like_known_ones(pg: asyncpg.Pool) -> None:
    sessions = Sessions(pg, 3600, policy=POLICY)
    known = await make_user(pg)
    t0 = time.perf_counter()
    await sessions.attempt(known, "wrong", ip())
    t_known = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = await sessions.attempt("nobody-" + uuid.uuid4().hex, "wrong", ip())
    t_unknown = time.perf_counter() - t0
    assert first == LoginRefused("invalid")
    assert t_unknown > t_known / 3, (t_known, t_unknown)  # scrypt was run, not skipped
    ghost, where = "ghost-" + uuid.uuid4().hex, ip()
    answers = [await sessions.attempt(ghost, "x", where) for _ in range(POLICY.pair.free + 1)]
    assert isinstance(answers[-1], LoginRefused) and answers[-1].reason == "delayed"  # no existence oracle


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


async def test_one_accounts_logins_are_bounded_before_any_password_is_hashed(pg: asyncpg.Pool) -> None:
    """300 logins of one viewer at 25/s each cost a password hash and slowed every operator's
    login tenfold: an account opens at most LOGINS_PER_MINUTE sessions a minute."""
    username, other = await make_user(pg, "viewer"), await make_user(pg)
    sessions = Sessions(pg, 3600, policy=POLICY)
    for _ in range(LOGINS_PER_MINUTE):
        assert isinstance(await sessions.attempt(username, PASSWORD, ip()), LoggedIn)
    refused = await sessions.attempt(username, PASSWORD, ip())
    assert isinstance(refused, LoginRefused) and refused.reason == "too_frequent"
    assert 1 <= refused.retry_after_s <= 60
    last = await pg.fetchrow(
        "SELECT outcome FROM audit_log WHERE kind = 'login' AND actor = $1 ORDER BY seq DESC LIMIT 1",
        f"user:{username}",
    )
    assert last["outcome"] == "too_frequent"
    assert isinstance(await sessions.attempt(other, PASSWORD, ip()), LoggedIn)  # others unaffected
    await pg.execute(  # a minute on
        "UPDATE sessions SET created_at = created_at - interval '61 seconds' WHERE username = $1", username
    )
    assert isinstance(await sessions.attempt(username, PASSWORD, ip()), LoggedIn)


async def test_an_account_keeps_at_most_so_many_live_sessions_the_oldest_end(pg: asyncpg.Pool) -> None:
    username = await make_user(pg)
    sessions = Sessions(pg, 3600, policy=POLICY)
    tokens = []
    for _ in range(SESSIONS_PER_USER + 2):
        await pg.execute(  # logins spread over time, not a burst
            "UPDATE sessions SET created_at = created_at - interval '61 seconds' WHERE username = $1",
            username,
        )
        result = await sessions.attempt(username, PASSWORD, ip())
        assert isinstance(result, LoggedIn)
        tokens.append(result.token)
    alive = [await sessions.peek(t) is not None for t in tokens]
    assert alive == [False, False] + [True] * SESSIONS_PER_USER
