"""The pages area over HTTP: the console, the responders' page and the API docs are served with the
pages' Content-Security-Policy, the pages' config names the live socket, health answers, and the
browser's favicon request costs nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from console.auth import Sessions
from console.http.middleware import content_security_policy
from infra.settings import Settings
from tests.console.http.test_access import client, make_app

# Each page and its <title>: that page, not another one (nor an error page).
PAGES = {
    "/": "街道基层治理指挥中心 · 值班台",
    "/responder": "基层治理 · 任务",
    "/docs": "街道基层治理指挥中心 · 接口文档",
}


@pytest.fixture
async def http(
    pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    async with client(make_app(pool, redis, settings, Sessions(pool, 3600))) as c:
        yield c


@pytest.mark.parametrize("path", list(PAGES))
async def test_each_page_is_served_with_the_content_security_policy(
    http: httpx.AsyncClient, settings: Settings, path: str
) -> None:
    r = await http.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert f"<title>{PAGES[path]}</title>" in r.text
    csp = r.headers["content-security-policy"]
    assert csp == content_security_policy(settings)
    directives = dict(d.split(" ", 1) for d in csp.split("; "))
    # scripts only from this server, the live socket allowed, and never framed
    assert directives["script-src"] == "'self'"
    assert settings.ws_url in directives["connect-src"].split()
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"


async def test_the_pages_config_names_the_live_socket(http: httpx.AsyncClient, settings: Settings) -> None:
    r = await http.get("/api/v1/config")
    assert r.status_code == 200
    assert r.json() == {"ws_url": settings.ws_url}


async def test_a_public_socket_url_reaches_the_config_and_the_policy(
    pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings
) -> None:
    """Behind a proxy the pages must open the socket the proxy publishes, and the CSP must let them."""
    public = replace(settings, ws_public_url="wss://centre.example.cn/live")
    async with client(make_app(pool, redis, public, Sessions(pool, 3600))) as http:
        assert (await http.get("/api/v1/config")).json() == {"ws_url": "wss://centre.example.cn/live"}
        csp = (await http.get("/")).headers["content-security-policy"]
        assert "connect-src 'self' wss://centre.example.cn/live" in csp
        assert f"ws://{settings.http_host}:{settings.ws_port}" not in csp


async def test_health_answers_ok_from_the_database(http: httpx.AsyncClient) -> None:
    r = await http.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_health_fails_when_the_database_is_gone(redis: aioredis.Redis, settings: Settings) -> None:
    gone = await asyncpg.create_pool(settings.database_url, min_size=0, max_size=1)
    assert gone is not None
    app = make_app(gone, redis, settings, Sessions(gone, 3600))
    await gone.close()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as http:
        r = await http.get("/healthz")
    # a load balancer takes this server out; people read why, in the usual shape
    assert r.status_code == 503 and r.json()["error"] == "unavailable" and r.headers["Retry-After"] == "5"


async def test_the_favicon_is_an_empty_204(http: httpx.AsyncClient) -> None:
    r = await http.get("/favicon.ico")
    assert r.status_code == 204 and r.content == b""
