"""Who is calling: intake sources and administrators by API key, operators by session.

Keys are stored as SHA-256 hashes; operator sessions are random tokens in Redis whose expiry
is pushed back on every use (idle sessions expire).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import asyncpg
import orjson
from redis.asyncio import Redis

from console.passwords import verify_password
from streams import topics


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


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


class Sessions:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, ttl_s: int) -> None:
        self._pool = pool
        self._redis = redis
        self._ttl = ttl_s

    async def login(self, username: str, password: str) -> tuple[str, User] | None:
        row = await self._pool.fetchrow(
            "SELECT username, display_name, role, password_hash, responder_id FROM users WHERE username = $1",
            username,
        )
        if row is None or not verify_password(password, row["password_hash"]):
            return None
        user = User(row["username"], row["display_name"], row["role"], row["responder_id"])
        token = secrets.token_urlsafe(32)
        payload = orjson.dumps(
            {"u": user.username, "n": user.display_name, "r": user.role, "p": user.responder_id}
        )
        await self._redis.set(topics.session_key(token), payload, ex=self._ttl)
        return token, user

    async def user(self, token: str | None) -> User | None:
        if not token or len(token) > 100:
            return None
        key = topics.session_key(token)
        raw = await self._redis.getex(key, ex=self._ttl)
        if raw is None:
            return None
        data = orjson.loads(raw)
        return User(data["u"], data["n"], data["r"], data.get("p"))

    async def logout(self, token: str) -> None:
        await self._redis.delete(topics.session_key(token))

    @property
    def ttl_s(self) -> int:
        return self._ttl
