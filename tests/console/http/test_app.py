"""The app as a whole (console.http.app): every route declares one access rule and the app will not
build without, and every refusal — ours or the framework's — answers in one shape,
{"error", "message"[, "fields"]}, naming the problem, with the security headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from fastapi.routing import APIRoute

from console.auth import ApiKeys, Sessions
from console.http import create_http_app, pages
from console.http.common import ConsoleServices, Guards
from console.intake import IntakeService
from console.registry import RegistryService
from infra.livestate import LiveState
from infra.settings import Settings
from tests.console.http.test_access import client

# What a rule may say besides "public": a session with a permission, a key, or either.
GUARDED = ("user:", "key:", "key|user:")


@pytest.fixture
async def services(pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings) -> ConsoleServices:
    live = LiveState(redis)
    unstarted = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")  # these tests publish nothing
    return ConsoleServices(
        settings=settings,
        pool=pool,
        api_keys=ApiKeys(pool),
        sessions=Sessions(pool, 3600),
        intake=IntakeService(pool, unstarted),
        registry=RegistryService(pool, unstarted, live),
        live=live,
    )


@pytest.fixture
def app(services: ConsoleServices) -> FastAPI:
    return create_http_app(services)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app) as c:
        yield c


def refusal(r: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """The one shape of every refusal; its body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert body["error"] == error and body["message"], body
    assert set(body) <= {"error", "message", "fields"}, body
    assert r.headers["x-content-type-options"] == "nosniff" and "content-security-policy" in r.headers
    return body


def test_every_route_declares_exactly_one_access_rule(app: FastAPI) -> None:
    rules: dict[tuple[str, str], str] = app.state.access_rules
    routes = {(m, r.path) for r in app.routes if isinstance(r, APIRoute) for m in r.methods}
    assert len(routes) >= 25  # the whole route table was read, not a part
    assert set(rules) == routes
    assert all(rule == "public" or rule.startswith(GUARDED) for rule in rules.values()), rules
    # The rules say what the areas mean: residents and pages need nothing, the rest need someone.
    public = {path for (_, path), rule in rules.items() if rule == "public"}
    assert public == {
        "/",
        "/responder",
        "/docs",
        "/favicon.ico",
        "/healthz",
        "/api/v1/config",
        "/api/v1/auth/login",
        "/api/v1/reports/{tracking_no}",
        "/api/v1/reports/{tracking_no}/feedback",
    }
    assert all(
        rules[("POST", p)].startswith("key:intake.") for (_, p) in rules if p.startswith("/api/v1/intake")
    )


def test_the_app_refuses_to_build_with_an_unguarded_route(
    services: ConsoleServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An area that adds a route and forgets its guard stops the server from starting."""
    real = pages.add_routes

    def with_a_forgotten_guard(target: FastAPI, svc: ConsoleServices, guard: Guards) -> None:
        real(target, svc, guard)

        @target.get("/api/v1/forgotten")
        async def forgotten() -> dict[str, str]:
            return {}

    monkeypatch.setattr(pages, "add_routes", with_a_forgotten_guard)
    with pytest.raises(RuntimeError, match="GET /api/v1/forgotten: no rule"):
        create_http_app(services)


async def test_malformed_json_is_400_malformed_json(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/api/v1/auth/login", content=b'{"username": "duty", ', headers={"Content-Type": "application/json"}
    )
    body = refusal(r, 400, "malformed_json")
    assert body["message"].startswith("body is not valid JSON")
    # not UTF-8 at all: named as such, with where
    r = await http.post(
        "/api/v1/auth/login", content=b'{"username": "\xff"}', headers={"Content-Type": "application/json"}
    )
    assert refusal(r, 400, "malformed_json")["message"].startswith("body is not valid JSON: not UTF-8")


async def test_an_invalid_field_is_422_naming_it(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/v1/auth/login", json={"username": "duty"})
    body = refusal(r, 422, "invalid")
    assert [f["field"] for f in body["fields"]] == ["password"]
    assert body["message"].startswith("password: ")


async def test_an_unknown_path_is_404_not_found_in_the_same_shape(http: httpx.AsyncClient) -> None:
    body = refusal(await http.get("/api/v1/nothing-here"), 404, "not_found")
    assert body == {"error": "not_found", "message": "no such path: /api/v1/nothing-here"}
    # a trailing slash is another path, not a redirect (which would reflect the Host header)
    r = await http.get("/api/v1/incidents/")
    assert refusal(r, 404, "not_found")["message"] == "no such path: /api/v1/incidents/"
    assert "location" not in r.headers


async def test_a_wrong_method_is_405_method_not_allowed(http: httpx.AsyncClient) -> None:
    r = await http.delete("/api/v1/incidents")
    body = refusal(r, 405, "method_not_allowed")
    assert body["message"] == "DELETE is not allowed on /api/v1/incidents"
    assert "GET" in r.headers["allow"]
    body = refusal(await http.get("/api/v1/auth/login"), 405, "method_not_allowed")
    assert body["message"] == "GET is not allowed on /api/v1/auth/login"
