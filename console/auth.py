"""Who is calling: intake sources and administrators by API key, people by session.

Keys are stored as SHA-256 hashes. Sessions live in PostgreSQL (table `sessions`), so a Redis
restart logs nobody out; only the SHA-256 of each bearer token is stored. A session ends when
idle for `ttl_s` (the idle deadline slides on use, written at most every `touch_every_s`), at an
absolute lifetime whatever the use, on logout, or when an administrator disables the account.
Repeated failed logins lock the username, and many failures from one client IP throttle that
IP, so guessing is slow and one attacker cannot cheaply lock everyone out.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Final, Literal

import asyncpg

from console.audit import AuditLog
from console.passwords import dummy_verify, hash_password, needs_rehash, verify_password


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
    """Why a login failed: bad credentials, the username locked, or the client IP throttled."""

    reason: Literal["invalid", "locked", "throttled"]
    retry_after_s: int = 0


@dataclass(frozen=True, slots=True)
class Lockout:
    """Failed-login limits. Per username: `user_failures` within `window_s` lock it for `lock_s`.
    Per client IP: `ip_failures` within `window_s` refuse every login from it for `lock_s`."""

    user_failures: int = 5
    ip_failures: int = 20
    window_s: int = 15 * 60
    lock_s: int = 15 * 60


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
    window_start = CASE WHEN login_throttle.window_start < now() - $3 * interval '1 second'
                        THEN now() ELSE login_throttle.window_start END
RETURNING failures"""


class Sessions:
    def __init__(
        self,
        pool: asyncpg.Pool,
        ttl_s: int,
        *,
        max_age_s: int = DEFAULT_MAX_AGE_S,
        touch_every_s: float = TOUCH_EVERY_S,
        lockout: Lockout | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._pool = pool
        self._ttl = ttl_s
        self._max_age = max(max_age_s, ttl_s)
        # A short TTL (tests, drills) still slides: never wait longer than a quarter of it.
        self._touch = min(touch_every_s, ttl_s / 4)
        self._lockout = lockout or Lockout()
        self._audit = audit or AuditLog(pool)

    @property
    def ttl_s(self) -> int:
        return self._ttl

    async def login(self, username: str, password: str, origin: str | None = None) -> tuple[str, User] | None:
        """A new session token and its user, or None (see `attempt` for why)."""
        result = await self.attempt(username, password, origin)
        return None if isinstance(result, LoginRefused) else result

    async def attempt(
        self, username: str, password: str, origin: str | None = None
    ) -> tuple[str, User] | LoginRefused:
        """Check the password (unless locked or throttled), audit the outcome, open a session."""
        actor = f"user:{username}"
        for scope, subject, reason in (("ip", origin, "throttled"), ("user", username, "locked")):
            wait = await self._locked_for(scope, subject)
            if wait:
                await self._audit.record("login", "login", actor, reason, origin=origin)
                return LoginRefused(reason, wait)  # type: ignore[arg-type]
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
            return await self._failed(username, origin, "disabled" if ok else "wrong_credentials")
        user = User(row["username"], row["display_name"], row["role"], row["responder_id"])
        token = secrets.token_urlsafe(32)
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
            await conn.execute(
                "DELETE FROM login_throttle WHERE scope = 'user' AND subject = $1", user.username
            )
            # Housekeeping: sessions that ended a day ago are of no more use.
            await conn.execute(
                """DELETE FROM sessions WHERE idle_deadline < now() - interval '1 day'
                      OR expires_at < now() - interval '1 day' OR revoked_at < now() - interval '1 day'"""
            )
            await self._audit.record(
                "login", "login", user.actor, "ok", origin=origin, data={"role": user.role}, conn=conn
            )
        if needs_rehash(row["password_hash"]):  # cost parameters were raised since it was stored
            new_hash = await asyncio.to_thread(hash_password, password)
            await self._pool.execute(
                "UPDATE users SET password_hash = $2 WHERE username = $1", user.username, new_hash
            )
        return token, user

    async def _locked_for(self, scope: str, subject: str | None) -> int:
        """Seconds left of a lock on this username or IP (0: not locked)."""
        if not subject:
            return 0
        left = await self._pool.fetchval(
            """SELECT ceil(extract(epoch FROM locked_until - now()))::int FROM login_throttle
                WHERE scope = $1 AND subject = $2 AND locked_until > now()""",
            scope,
            subject,
        )
        return int(left or 0)

    async def _failed(self, username: str, origin: str | None, outcome: str) -> LoginRefused:
        """Count a failure against the username and the IP; lock whichever went over its limit."""
        policy = self._lockout
        locked: LoginRefused | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            for scope, subject, limit, reason in (
                ("user", username, policy.user_failures, "locked"),
                ("ip", origin, policy.ip_failures, "throttled"),
            ):
                if not subject:
                    continue
                failures = await conn.fetchval(_FAIL, scope, subject, policy.window_s)
                if failures >= limit:
                    await conn.execute(
                        """UPDATE login_throttle
                              SET locked_until = now() + $3 * interval '1 second', failures = 0,
                                  window_start = now()
                            WHERE scope = $1 AND subject = $2""",
                        scope,
                        subject,
                        policy.lock_s,
                    )
                    locked = locked or LoginRefused(reason, policy.lock_s)  # type: ignore[arg-type]
            await self._audit.record(
                "login",
                "login",
                f"user:{username}",
                outcome,
                origin=origin,
                detail=f"now {locked.reason} for {locked.retry_after_s}s" if locked else None,
                conn=conn,
            )
        return locked or LoginRefused("invalid")

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
        """Lift a username's lockout (an administrator vouched for the user)."""
        await (conn or self._pool).execute(
            "DELETE FROM login_throttle WHERE scope = 'user' AND subject = $1", username
        )
