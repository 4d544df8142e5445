"""Who is calling: intake sources and administrators by API key, people by session.

Keys are stored as SHA-256 hashes. Sessions live in PostgreSQL (table `sessions`), so a Redis
restart logs nobody out; only the SHA-256 of each bearer token is stored. A session ends when
idle for `ttl_s` (the idle deadline slides on use, written at most every `touch_every_s`), at an
absolute lifetime whatever the use, on logout, or when an administrator disables the account.
Failed logins slow guessing with growing delays in lanes (console/throttle.py): a browser or
phone that logged in before has a lane of its own, so no one guessing elsewhere, or behind the
same address, can lock the people entitled to log in out.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import time
from dataclasses import dataclass
from typing import Final, Literal

import asyncpg

from console.audit import AuditLog
from console.passwords import dummy_verify, hash_password, needs_rehash, verify_password
from console.throttle import Count, Lane, LoginPolicy, Scope, lanes


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


token_hash = key_hash  # bearer tokens are stored the same way as API keys


class ApiKeys:
    """Resolves an X-Api-Key to its role, caching answers briefly to keep intake fast."""

    def __init__(self, pool: asyncpg.Pool, ttl_s: float = 30.0) -> None:
        self._pool = pool
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def role(self, key: str | None) -> str | None:
        if not key or len(key) > 200:
            return None
        digest = key_hash(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        role = await self._pool.fetchval("SELECT role FROM api_keys WHERE key_hash = $1", digest)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self._ttl, role)
        return str(role) if role is not None else None


@dataclass(frozen=True, slots=True)
class User:
    username: str
    display_name: str
    role: str
    responder_id: str | None = None  # set for responders (their phone's login)

    @property
    def actor(self) -> str:
        """How commands name who issued them (operator:duty, responder:P-0007, ...)."""
        if self.role == "responder" and self.responder_id:
            return f"responder:{self.responder_id}"
        return f"{self.role}:{self.username}"


@dataclass(frozen=True, slots=True)
class LoginRefused:
    """Why a login failed: bad credentials, or a lane that must wait (console/throttle.py)."""

    reason: Literal["invalid", "delayed", "too_frequent"]
    retry_after_s: int = 0
    lane: Scope | None = None  # the lane that is waiting, when delayed


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """A new session: its bearer token, its user, and the device token that puts this browser
    or phone's later attempts in a lane of its own (new, or the one it showed)."""

    token: str
    user: User
    device_token: str


DEFAULT_MAX_AGE_S: Final = 24 * 3600
TOUCH_EVERY_S: Final = 30.0

_SESSION_USER = """
SELECT u.username, u.display_name, u.role, u.responder_id,
       now() - s.last_seen >= $2 * interval '1 second' AS stale
  FROM sessions s JOIN users u USING (username)
 WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND NOT u.disabled
   AND s.idle_deadline > now() AND s.expires_at > now()"""

_FAIL = """
INSERT INTO login_throttle (scope, subject, failures, window_start) VALUES ($1, $2, 1, now())
ON CONFLICT (scope, subject) DO UPDATE SET
    failures = CASE WHEN login_throttle.window_start < now() - $3 * interval '1 second'
                    THEN 1 ELSE login_throttle.failures + 1 END,
    window_start = now()
RETURNING failures, extract(epoch FROM now())::float8 AS now_s"""

MAX_DEVICES: Final = 20  # device tokens kept per user (the oldest beyond are forgotten)
# One account's logins: at most this many sessions opened a minute (each login costs a password
# hash: 300 logins of one viewer at 25/s slowed every operator's login tenfold), and at most this
# many live at once (a new one ends the oldest).
LOGINS_PER_MINUTE: Final = 10
SESSIONS_PER_USER: Final = 50
# How the audit log names a lane (UI text: Chinese).
LANE_WORDS: Final = {
    "device": "本设备：",
    "pair": "账号+地址：",
    "user": "账号（任意地址）：",
    "ip": "地址（任意账号）：",
}


class Sessions:
    def __init__(
        self,
        pool: asyncpg.Pool,
        ttl_s: int,
        *,
        max_age_s: int = DEFAULT_MAX_AGE_S,
        touch_every_s: float = TOUCH_EVERY_S,
        policy: LoginPolicy | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._pool = pool
        self._ttl = ttl_s
        self._max_age = max(max_age_s, ttl_s)
        # A short TTL (tests, drills) still slides: never wait longer than a quarter of it.
        self._touch = min(touch_every_s, ttl_s / 4)
        self._policy = policy or LoginPolicy()
        self._audit = audit or AuditLog(pool)

    @property
    def ttl_s(self) -> int:
        return self._ttl

    async def login(
        self, username: str, password: str, origin: str | None = None, device: str | None = None
    ) -> tuple[str, User] | None:
        """A new session token and its user, or None (see `attempt` for why)."""
        result = await self.attempt(username, password, origin, device)
        return None if isinstance(result, LoginRefused) else (result.token, result.user)

    async def attempt(
        self, username: str, password: str, origin: str | None = None, device: str | None = None
    ) -> LoggedIn | LoginRefused:
        """Check the password unless a lane this attempt counts in must wait; audit the
        outcome; open a session. `device`: the device token a browser or phone was given by an
        earlier successful login as this user, if it shows one."""
        actor = f"user:{username}"
        known = await self._known_device(username, device)
        my_lanes = lanes(username, origin, known)
        waiting = await self._waiting(my_lanes)
        if waiting is not None:
            lane, wait = waiting
            await self._audit.record(
                "login",
                "login",
                actor,
                "delayed",
                origin=origin,
                detail=f"{LANE_WORDS[lane.scope]}须等待{wait}秒",
            )
            return LoginRefused("delayed", wait, lane.scope)
        busy = await self._pool.fetchval(
            """SELECT ceil(60 - extract(epoch FROM now() - min(created_at)))::int FROM (
                   SELECT created_at FROM sessions WHERE username = $1
                      AND created_at > now() - interval '60 seconds'
                    ORDER BY created_at DESC LIMIT $2) recent
               HAVING count(*) >= $2""",
            username,
            LOGINS_PER_MINUTE,
        )
        if busy is not None:  # before the hash: a flood of good logins costs next to nothing
            await self._audit.record(
                "login",
                "login",
                actor,
                "too_frequent",
                origin=origin,
                detail=f"一分钟内登录已达{LOGINS_PER_MINUTE}次，须等待{busy}秒",
            )
            return LoginRefused("too_frequent", max(1, busy))
        row = await self._pool.fetchrow(
            """SELECT username, display_name, role, password_hash, responder_id, disabled
                 FROM users WHERE username = $1""",
            username,
        )
        if row is None:
            await asyncio.to_thread(dummy_verify, password)  # unknown users take as long as known ones
            ok = False
        else:
            ok = await asyncio.to_thread(verify_password, password, row["password_hash"])
        if not ok or row is None or row["disabled"]:
            return await self._failed(my_lanes, username, origin, "disabled" if ok else "wrong_credentials")
        user = User(row["username"], row["display_name"], row["role"], row["responder_id"])
        token = secrets.token_urlsafe(32)
        device_token = device if known is not None and device else secrets.token_urlsafe(32)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO sessions (token_hash, username, idle_deadline, expires_at, origin)
                   VALUES ($1, $2, now() + $3 * interval '1 second', now() + $4 * interval '1 second', $5)""",
                token_hash(token),
                user.username,
                self._ttl,
                self._max_age,
                origin,
            )
            # a success clears the lane it was made in (not the user's or the address's lanes:
            # a guesser elsewhere is still slowed)
            await conn.execute(
                "DELETE FROM login_throttle WHERE scope = $1 AND subject = $2",
                my_lanes[0].scope,
                my_lanes[0].subject,
            )
            await conn.execute(
                """INSERT INTO login_devices (username, device_hash) VALUES ($1, $2)
                   ON CONFLICT (username, device_hash) DO UPDATE SET last_ok = now()""",
                user.username,
                token_hash(device_token),
            )
            await conn.execute(
                """DELETE FROM login_devices WHERE username = $1 AND device_hash NOT IN (
                       SELECT device_hash FROM login_devices WHERE username = $1
                        ORDER BY last_ok DESC LIMIT $2)""",
                user.username,
                MAX_DEVICES,
            )
            # At most SESSIONS_PER_USER live sessions: the oldest beyond end now (their sockets
            # are closed at the next session check).
            await conn.execute(
                """UPDATE sessions SET revoked_at = now()
                    WHERE username = $1 AND revoked_at IS NULL AND token_hash IN (
                          SELECT token_hash FROM sessions WHERE username = $1 AND revoked_at IS NULL
                           ORDER BY created_at DESC OFFSET $2)""",
                user.username,
                SESSIONS_PER_USER,
            )
            # Housekeeping: sessions that ended a day ago are of no more use.
            await conn.execute(
                """DELETE FROM sessions WHERE idle_deadline < now() - interval '1 day'
                      OR expires_at < now() - interval '1 day' OR revoked_at < now() - interval '1 day'"""
            )
            await self._audit.record(
                "login",
                "login",
                user.actor,
                "ok",
                origin=origin,
                data={"role": user.role, "device": "known" if known else "new"},
                conn=conn,
            )
        if needs_rehash(row["password_hash"]):  # cost parameters were raised since it was stored
            new_hash = await asyncio.to_thread(hash_password, password)
            await self._pool.execute(
                "UPDATE users SET password_hash = $2 WHERE username = $1", user.username, new_hash
            )
        return LoggedIn(token, user, device_token)

    async def _known_device(self, username: str, device: str | None) -> str | None:
        """The digest of `device` if it is a device token this user was given, else None."""
        if not device or len(device) > 100:
            return None
        digest = token_hash(device)
        found = await self._pool.fetchval(
            "SELECT 1 FROM login_devices WHERE username = $1 AND device_hash = $2", username, digest
        )
        return digest if found else None

    async def _waiting(self, my_lanes: list[Lane]) -> tuple[Lane, int] | None:
        """The lane that must wait longest before it takes another attempt, and how long (whole
        seconds, rounded up), or None when every lane is ready."""
        rows = await self._pool.fetch(
            """SELECT scope, subject, failures, extract(epoch FROM window_start)::float8 AS last_s,
                      extract(epoch FROM now())::float8 AS now_s
                 FROM login_throttle
                WHERE (scope, subject) IN (SELECT * FROM unnest($1::text[], $2::text[]))""",
            [lane.scope for lane in my_lanes],
            [lane.subject for lane in my_lanes],
        )
        longest: tuple[Lane, int] | None = None
        for r in rows:
            lane = Lane(r["scope"], r["subject"])
            wait = Count(r["failures"], r["last_s"]).wait_s(self._policy, lane.scope, r["now_s"])
            if wait > 0 and (longest is None or wait > longest[1]):
                longest = (lane, math.ceil(wait))
        return longest

    async def _failed(
        self, my_lanes: list[Lane], username: str, origin: str | None, outcome: str
    ) -> LoginRefused:
        """Count a failure in each lane of the attempt; note when each may try again."""
        policy = self._policy
        longest: tuple[Lane, float] | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            for lane in my_lanes:
                row = await conn.fetchrow(_FAIL, lane.scope, lane.subject, policy.forget_s)
                wait = policy.backoff(lane.scope).delay(row["failures"])
                await conn.execute(
                    """UPDATE login_throttle SET locked_until = now() + $3 * interval '1 second'
                        WHERE scope = $1 AND subject = $2""",
                    lane.scope,
                    lane.subject,
                    wait,
                )
                if wait > 0 and (longest is None or wait > longest[1]):
                    longest = (lane, wait)
            await self._audit.record(
                "login",
                "login",
                f"user:{username}",
                outcome,
                origin=origin,
                detail=None
                if longest is None
                else f"{LANE_WORDS[longest[0].scope]}下次尝试须等待{math.ceil(longest[1])}秒",
                conn=conn,
            )
        return LoginRefused("invalid")

    async def throttles(self) -> list[dict[str, object]]:
        """Lanes with failures that still count, longest wait first (what the admin sees)."""
        rows = await self._pool.fetch(
            """SELECT scope, subject, failures, window_start, locked_until FROM login_throttle
                WHERE window_start > now() - $1 * interval '1 second'
                ORDER BY locked_until DESC NULLS LAST, failures DESC LIMIT 500""",
            self._policy.forget_s,
        )
        out: list[dict[str, object]] = []
        for r in rows:
            who, _, where = str(r["subject"]).partition("\n")
            user, address = {
                "device": (who, None),
                "pair": (who, where),
                "user": (who, None),
                "ip": (None, who),
            }[r["scope"]]
            out.append(
                {
                    "lane": r["scope"],
                    "username": user,
                    "address": address,
                    "failures": r["failures"],
                    "last_failure": r["window_start"].isoformat(),
                    "next_attempt": r["locked_until"].isoformat() if r["locked_until"] else None,
                }
            )
        return out

    async def user(self, token: str | None) -> User | None:
        """The session's user, pushing its idle deadline back (written at most every few seconds)."""
        return await self._lookup(token, refresh=True)

    async def peek(self, token: str | None) -> User | None:
        """The session's user without counting this as use (to close idle sockets)."""
        return await self._lookup(token, refresh=False)

    async def _lookup(self, token: str | None, refresh: bool) -> User | None:
        if not token or len(token) > 100:
            return None
        digest = token_hash(token)
        row = await self._pool.fetchrow(_SESSION_USER, digest, self._touch)
        if row is None:
            return None
        if refresh and row["stale"]:
            await self._pool.execute(
                """UPDATE sessions
                      SET last_seen = now(),
                          idle_deadline = least(now() + $2 * interval '1 second', expires_at)
                    WHERE token_hash = $1 AND revoked_at IS NULL""",
                digest,
                self._ttl,
            )
        return User(row["username"], row["display_name"], row["role"], row["responder_id"])

    async def logout(self, token: str | None, origin: str | None = None) -> bool:
        """End the session at once; True if it was live. Audited."""
        if not token or len(token) > 100:
            return False
        row = await self._pool.fetchrow(
            """UPDATE sessions s SET revoked_at = now()
                 FROM users u
                WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND u.username = s.username
            RETURNING u.username, u.display_name, u.role, u.responder_id""",
            token_hash(token),
        )
        if row is None:
            return False
        user = User(row["username"], row["display_name"], row["role"], row["responder_id"])
        await self._audit.record("logout", "logout", user.actor, "ok", origin=origin)
        return True

    async def revoke_user(self, username: str, conn: asyncpg.Connection | None = None) -> int:
        """End every session of a user (disabled, password or role changed); returns how many."""
        status = await (conn or self._pool).execute(
            "UPDATE sessions SET revoked_at = now() WHERE username = $1 AND revoked_at IS NULL", username
        )
        return int(status.rsplit(" ", 1)[-1])

    async def unlock(self, username: str, conn: asyncpg.Connection | None = None) -> None:
        """Clear every lane of a username (an administrator vouched for the user)."""
        await (conn or self._pool).execute(
            """DELETE FROM login_throttle
                WHERE (scope = 'user' AND subject = $1)
                   OR (scope IN ('pair', 'device') AND split_part(subject, E'\n', 1) = $1)""",
            username,
        )
