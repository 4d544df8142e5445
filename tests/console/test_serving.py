"""The HTTP server as console.main runs it (uvicorn with console.serving's config), from outside:
slow-header clients are let go, no redirect reflects a Host, every page carries its
Content-Security-Policy, the API docs load nothing from a CDN, and no answer names an internal
exception."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn

from console.auth import Sessions
from console.serving import http_config
from devtools.stack import free_port
from infra.db import init_connection
from infra.settings import Settings
from tests.console.http.test_access import make_app

HEADER_TIMEOUT_S = 1.0


@contextlib.contextmanager
def _no_signals() -> Iterator[None]:
    yield


@pytest.fixture(scope="module")
async def served(pg: asyncpg.Pool, redis: aioredis.Redis, settings: Settings) -> AsyncIterator[Settings]:
    s = replace(settings, http_port=free_port())
    pool = await asyncpg.create_pool(s.database_url, min_size=1, max_size=3, init=init_connection)
    assert pool is not None
    server = uvicorn.Server(http_config(make_app(pool, redis, s, Sessions(pool, 3600)), s, HEADER_TIMEOUT_S))
    server.capture_signals = _no_signals  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        yield s
    finally:
        server.should_exit = True
        await serving
        await pool.close()


async def test_a_client_that_trickles_its_headers_is_let_go(served: Settings) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.http_port)
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    closed = False
    for _ in range(40):  # a header byte every 0.1 s, never finishing
        try:
            writer.write(b"X")
            await writer.drain()
        except ConnectionError:
            closed = True
            break
        with contextlib.suppress(TimeoutError):
            if await asyncio.wait_for(reader.read(1024), 0.1) == b"":
                closed = True
                break
    writer.close()
    assert closed and time.monotonic() - started < HEADER_TIMEOUT_S + 1.5
    # a well-behaved client on a kept-alive connection is unaffected
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.http_port}") as http:
        for _ in range(3):
            assert (await http.get("/healthz")).status_code == 200
            await asyncio.sleep(HEADER_TIMEOUT_S * 0.6)


async def test_no_redirect_reflects_the_host_it_was_sent(served: Settings) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.http_port}") as http:
        r = await http.get("/api/v1/incidents/", headers={"Host": "evil.example"})
    assert r.status_code == 404 and "location" not in r.headers


async def test_pages_carry_a_content_security_policy_and_the_docs_load_nothing_from_elsewhere(
    served: Settings,
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.http_port}") as http:
        for path in ("/", "/responder", "/docs", "/openapi.json"):
            csp = (await http.get(path)).headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, (path, csp)
            assert served.ws_url in csp  # the live socket is allowed, nothing else is
        docs = (await http.get("/docs")).text
        assert not re.search(r"https?://", docs) and "/vendor/swagger-ui/swagger-ui-bundle.js" in docs
        assert "<script>" not in docs  # no inline script: the policy would refuse it
        assert (await http.get("/vendor/swagger-ui/swagger-ui-bundle.js")).status_code == 200


async def test_no_answer_names_an_internal_exception(served: Settings) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.http_port}") as http:
        r = await http.post("/api/v1/auth/login", content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 413, 422), r.text
    assert "Error" not in r.json()["message"], r.text
