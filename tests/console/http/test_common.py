"""What the console's routers share: bearer tokens read from the header, every route's one access
rule, the guards' answers (401, 403 naming what is needed, 429 with Retry-After) on real
sessions and API keys in PostgreSQL."""

from __future__ import annotations

import uuid
from dataclasses import replace

import asyncpg
import pytest
from fastapi import Depends, FastAPI
from starlette.requests import Request

from console.auth import ApiKeys, Sessions, User
from console.http.common import (
    PUBLIC,
    Caller,
    ConsoleServices,
    Guards,
    HttpError,
    access_rules,
    bearer,
    limited,
)
from console.passwords import hash_password
from console.permissions import Perm
from console.ratelimit import KeyedLimiter
from devtools.seed import api_key_hash
from infra.settings import Settings

PASSWORD = "common-test-2026"


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.DEF-1", "abc.DEF-1"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Bearer ", None),
        ("Bearer    ", None),
        ("Bearerabc", None),
        ("Basic dXNlcjpwdw==", None),
        ("abc", None),
        ("", None),
        (None, None),
    ],
)
def test_the_bearer_token_is_read_from_the_header(header: str | None, token: str | None) -> None:
    assert bearer(header) == token


def guards(pool: asyncpg.Pool, settings: Settings) -> Guards:
    # The guards use the settings, the pool, the keys and the sessions only.
    services = ConsoleServices(settings, pool, ApiKeys(pool), Sessions(pool, 3600), None, None)  # type: ignore[arg-type]
    return Guards(services)


def request(ip: str = "10.7.0.1") -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "client": (ip, 40000)})


async def test_every_route_needs_exactly_one_access_rule(pool: asyncpg.Pool, settings: Settings) -> None:
    g, app = guards(pool, settings), FastAPI()

    dispatching = g.needs_user(Perm.DISPATCH)

    async def nested(caller: Caller = dispatching) -> Caller:
        return caller

    async def answer() -> dict[str, str]:
        return {}

    app.get("/public", dependencies=[PUBLIC])(answer)
    app.put("/registry", dependencies=[g.needs_key_or_user(Perm.REGISTRY_WRITE)])(answer)
    app.post("/intake", dependencies=[g.needs_key(Perm.INTAKE_APP)])(answer)
    app.get("/board", dependencies=[g.needs_user(Perm.BOARD_READ, Perm.OWN_TASKS_READ)])(answer)
    app.post("/command", dependencies=[Depends(nested)])(answer)  # a rule inside another dependency counts
    assert access_rules(app) == {
        ("GET", "/public"): "public",
        ("PUT", "/registry"): "key|user:registry.write",
        ("POST", "/intake"): "key:intake.app",
        ("GET", "/board"): "user:board.read|own_tasks.read",
        ("POST", "/command"): "user:dispatch",
    }
    app.get("/naked")(answer)
    app.get("/twice", dependencies=[PUBLIC, g.needs_user(Perm.SESSION)])(answer)
    with pytest.raises(RuntimeError, match="every route needs exactly one access rule") as refused:
        access_rules(app)
    assert "GET /naked: no rule" in str(refused.value)
    assert "GET /twice: ['public', 'user:session']" in str(refused.value)


def test_a_role_without_the_permission_is_told_what_is_needed() -> None:
    with pytest.raises(HttpError) as refused:
        Guards.permitted(User("v", "观察员", "viewer"), (Perm.DISPATCH,))
    assert (refused.value.status, refused.value.error) == (403, "forbidden")
    assert refused.value.message == "role 'viewer' may not do this (needs dispatch)"
    with pytest.raises(HttpError, match=r"role 'admin' may not do this \(needs reveal or dispatch\)"):
        Guards.permitted(User("a", "管理员", "admin"), (Perm.REVEAL, Perm.DISPATCH))
    Guards.permitted(
        User("r", "网格员", "responder", "P-1"), (Perm.BOARD_READ, Perm.OWN_TASKS_READ)
    )  # any one


async def test_over_the_rate_is_429_with_whole_seconds_to_wait() -> None:
    limiter = KeyedLimiter(rate=0.4, burst=1)  # a token every 2.5 s
    limited(limiter, "10.0.0.1", "查询过于频繁", "too many lookups")
    with pytest.raises(HttpError) as refused:
        limited(limiter, "10.0.0.1", "查询过于频繁", "too many lookups")
    assert (refused.value.status, refused.value.error) == (429, "rate_limited")
    assert refused.value.headers == {"Retry-After": "3"}  # rounded up, never early
    assert refused.value.message == "查询过于频繁，请3秒后再试 / too many lookups: retry in 3 s"
    limited(limiter, "10.0.0.2", "查询过于频繁", "too many lookups")  # another key: its own allowance


async def test_the_guards_check_keys_sessions_and_the_accounts_rate(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    admin_key, camera_key = uuid.uuid4().hex, uuid.uuid4().hex
    await pool.executemany(
        "INSERT INTO api_keys (key_hash, role, name) VALUES ($1, $2, $2)",
        [(api_key_hash(admin_key), "admin"), (api_key_hash(camera_key), "camera")],
    )
    tokens = {}
    for role in ("admin", "viewer"):
        username = f"{role}-{uuid.uuid4().hex[:8]}"
        await pool.execute(
            "INSERT INTO users (username, display_name, role, password_hash) VALUES ($1, $1, $2, $3)",
            username,
            role,
            hash_password(PASSWORD),
        )
        logged_in = await Sessions(pool, 3600).login(username, PASSWORD, "10.7.0.1")
        assert logged_in is not None
        tokens[role] = f"Bearer {logged_in[0]}"
    g = guards(pool, replace(settings, account_requests_per_s=0.2))  # a burst of 2
    check = g.needs_key_or_user(Perm.REGISTRY_WRITE).dependency

    async def refusal(**headers: str | None) -> HttpError:
        with pytest.raises(HttpError) as refused:
            await check(request(), **{"x_api_key": None, "authorization": None, **headers})
        return refused.value

    machine = await check(request("10.7.0.9"), x_api_key=admin_key, authorization=None)
    assert (machine.key_role, machine.user, machine.origin, machine.actor) == (
        "admin",
        None,
        "10.7.0.9",
        "key:admin",
    )
    person = await check(request(), x_api_key=None, authorization=tokens["admin"])
    assert person.user is not None and person.user.role == "admin" and person.key_role is None
    nobody = await refusal()
    assert nobody.status == 401 and nobody.headers == {"WWW-Authenticate": "ApiKey"}
    assert "needs registry.write" in nobody.message
    assert (await refusal(x_api_key=camera_key)).status == 401  # a key, but not this endpoint's
    # With a key, the key decides (a session beside it does not help).
    assert (await refusal(x_api_key=camera_key, authorization=tokens["admin"])).status == 401
    viewer = await refusal(authorization=tokens["viewer"])
    assert viewer.status == 403 and "role 'viewer'" in viewer.message
    expired = await refusal(authorization="Bearer not-a-session")
    assert expired.status == 401 and expired.headers == {"WWW-Authenticate": "Bearer"}
    # The viewer has been counted once above: one more passes, then the account waits.
    assert (await g.session(tokens["viewer"])).role == "viewer"
    with pytest.raises(HttpError) as slowed:
        await g.session(tokens["viewer"])
    assert slowed.value.status == 429 and "此账户请求过于频繁" in slowed.value.message
    assert (await g.session(tokens["admin"])).role == "admin"  # another account is not slowed
