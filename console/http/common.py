"""What every router of the console's HTTP side shares: its services, the error it raises, who is
calling (`Caller`) and the guards a route declares to say who may call it.

Every route declares exactly one guard (`Guards.needs_key`, `needs_user`, `needs_key_or_user`, or
`PUBLIC`); `access_rules` reads them back, and the app refuses to start with a route that declares
none. The table of who may do what is docs/security.md.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

import asyncpg
from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from console.addresses import Networks, client_address, trusted_networks
from console.audit import AuditLog
from console.auth import ApiKeys, Sessions, User
from console.intake import IntakeService, InvalidField
from console.permissions import Perm, key_allows, user_allows
from console.ratelimit import KeyedLimiter
from console.registry import RegistryService
from contracts.states import ACTIVE_TASK_STATES, TaskState
from dispatcher.core.plan import PlanBook, load_plans
from infra.livestate import LiveState
from infra.settings import Settings

# Bursts allowed by the request limits (PUBLIC_REQUESTS_PER_S, ACCOUNT_REQUESTS_PER_S), in
# seconds' worth of the rate: a page's first load, a resident refreshing a few times.
PUBLIC_BURST_S, ACCOUNT_BURST_S = 30.0, 10.0
NO_STORE: Final = {"Cache-Control": "no-store"}
# Task states in which a responder "holds" a task: they may read its incident and its photos.
HELD_TASK_STATES: Final = ACTIVE_TASK_STATES | {TaskState.DONE}
# Documented on every route that checks credentials (the fuzz and clients read them).
AUTH_ANSWERS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, invalid or expired credentials"},
    403: {"description": "this role may not do this (or not to this object)"},
}


class HttpError(Exception):
    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.headers = status, error, message, headers or {}


@dataclass
class ConsoleServices:
    settings: Settings
    pool: asyncpg.Pool
    api_keys: ApiKeys
    sessions: Sessions
    intake: IntakeService
    registry: RegistryService
    send_command: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    plans: PlanBook = field(default_factory=load_plans)
    live: LiveState | None = None
    audit: AuditLog | None = None  # default: one on `pool`


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, once checked: a user's session or an API key's role, and from where."""

    origin: str | None
    user: User | None = None
    key_role: str | None = None

    @property
    def actor(self) -> str:
        return self.user.actor if self.user is not None else f"key:{self.key_role}"


def bearer(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


def client_ip(request: Request, trusted_proxies: Networks) -> str | None:
    """The caller's address (console.addresses: only a trusted proxy names another)."""
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.get("x-forwarded-for"), trusted_proxies)


def limited(limiter: KeyedLimiter, key: str, chinese: str, english: str) -> None:
    """Count one request against `key`; over the rate, 429 with Retry-After (whole seconds)."""
    wait = limiter.take(key, asyncio.get_running_loop().time())
    if wait:
        seconds = max(1, math.ceil(wait))  # never early: a client retrying on time is let in
        message = f"{chinese}，请{seconds}秒后再试 / {english}: retry in {seconds} s"
        raise HttpError(429, "rate_limited", message, {"Retry-After": str(seconds)})


def unprocessable(exc: InvalidField) -> JSONResponse:
    return JSONResponse(
        {
            "error": "invalid",
            "message": f"{exc.field}: {exc}",
            "fields": [{"field": exc.field, "reason": str(exc)}],
        },
        422,
    )


def _rule(check: Callable[..., Awaitable[Any]], rule: str) -> Any:
    """Mark an access dependency with its rule, for the start-up check and the docs."""
    check.__access_rule__ = rule  # type: ignore[attr-defined]
    return Depends(check)


async def _public() -> None:
    """No credentials: the reporter's progress, the pages, health."""


_public.__access_rule__ = "public"  # type: ignore[attr-defined]
PUBLIC = Depends(_public)


def access_rules(app: FastAPI) -> dict[tuple[str, str], str]:
    """(method, path) -> the access rule each route declares. Raises if one declares none."""
    found: dict[tuple[str, str], str] = {}
    missing = []
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue  # docs, openapi.json and the static mounts: public by nature
        rules = _declared(route.dependant)
        for method in sorted(route.methods or ()):
            if len(rules) != 1:
                missing.append(f"{method} {route.path}: {rules or 'no rule'}")
            else:
                found[(method, route.path)] = rules[0]
    if missing:
        raise RuntimeError("every route needs exactly one access rule: " + "; ".join(missing))
    return found


def _declared(dependant: Any) -> list[str]:
    out: list[str] = []
    for dep in dependant.dependencies:
        rule = getattr(dep.call, "__access_rule__", None)
        if rule is not None:
            out.append(rule)
        out += _declared(dep)
    return out


class Guards:
    """The access dependencies of one app, with the request limits they count against (per
    console server): one account's requests, and the public pages' per address."""

    def __init__(self, svc: ConsoleServices) -> None:
        self.svc = svc
        self.audit = svc.audit or AuditLog(svc.pool)
        self._trusted = trusted_networks(svc.settings.trusted_proxies)
        # The public progress page (进度随时查) answers anyone with a tracking number: generous per
        # address (residents behind a carrier's NAT share one), bounded all the same.
        public_rate = svc.settings.public_requests_per_s
        self._public = KeyedLimiter(rate=public_rate, burst=public_rate * PUBLIC_BURST_S)
        # One account's requests (every session of it, on this server): a viewer's script reading
        # the whole board in a loop must not slow the operators' console; a page needs far less.
        account_rate = svc.settings.account_requests_per_s
        self._per_user = KeyedLimiter(rate=account_rate, burst=account_rate * ACCOUNT_BURST_S)

    def origin(self, request: Request) -> str | None:
        return client_ip(request, self._trusted)

    def limit_public(self, request: Request) -> None:
        limited(self._public, self.origin(request) or "?", "查询过于频繁", "too many lookups from here")

    def needs_key(self, perm: Perm) -> Any:
        """An intake source's or the administrator's X-Api-Key that grants `perm`."""
        svc, origin = self.svc, self.origin

        async def check(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> Caller:
            role = await svc.api_keys.role(x_api_key)
            if role is None:
                raise HttpError(
                    401, "unauthorized", "missing or invalid X-Api-Key", {"WWW-Authenticate": "ApiKey"}
                )
            if not key_allows(role, perm):
                # 401 as the intake contract says for a key that is not this endpoint's.
                raise HttpError(
                    401, "unauthorized", f"this X-Api-Key is not valid for this endpoint (needs {perm})"
                )
            return Caller(origin(request), key_role=role)

        return _rule(check, f"key:{perm}")

    async def session(self, authorization: str | None) -> User:
        user = await self.svc.sessions.user(bearer(authorization))
        if user is None:
            raise HttpError(
                401,
                "unauthorized",
                "log in first (Authorization: Bearer <token>); the session may have expired",
                {"WWW-Authenticate": "Bearer"},
            )
        limited(self._per_user, user.username, "此账户请求过于频繁", "too many requests for this account")
        return user

    @staticmethod
    def permitted(user: User, perms: tuple[Perm, ...]) -> None:
        if not any(user_allows(user.role, p) for p in perms):
            raise HttpError(
                403, "forbidden", f"role {user.role!r} may not do this (needs {' or '.join(perms)})"
            )

    def needs_user(self, *perms: Perm) -> Any:
        """A session (Authorization: Bearer) whose user's role grants any of `perms`."""
        session, origin = self.session, self.origin

        async def check(request: Request, authorization: Annotated[str | None, Header()] = None) -> Caller:
            user = await session(authorization)
            Guards.permitted(user, perms)
            return Caller(origin(request), user=user)

        return _rule(check, "user:" + "|".join(perms))

    def needs_key_or_user(self, perm: Perm) -> Any:
        """The administrator's X-Api-Key (machines) or an administrator's session (people)."""
        svc, session, origin = self.svc, self.session, self.origin

        async def check(
            request: Request,
            x_api_key: Annotated[str | None, Header()] = None,
            authorization: Annotated[str | None, Header()] = None,
        ) -> Caller:
            if x_api_key is not None or authorization is None:
                role = await svc.api_keys.role(x_api_key)
                if role is None or not key_allows(role, perm):
                    raise HttpError(
                        401,
                        "unauthorized",
                        f"missing or invalid X-Api-Key (needs {perm}), or log in as an administrator",
                        {"WWW-Authenticate": "ApiKey"},
                    )
                return Caller(origin(request), key_role=role)
            user = await session(authorization)
            Guards.permitted(user, (perm,))
            return Caller(origin(request), user=user)

        return _rule(check, f"key|user:{perm}")
