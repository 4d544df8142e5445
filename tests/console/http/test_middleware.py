"""The console's ASGI middleware, called the raw ASGI way: bodies over the limit refused with 413
(by their header, or while they stream in), a NUL in the path or a query refused with 422 naming
where, and the security headers on every answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console.http.middleware import BodyLimit, RefuseNul, SecurityHeaders, content_security_policy
from console.http.photos import MAX_PHOTO_BYTES
from infra.settings import Settings


@dataclass
class Echo:
    """An app that reads the whole body and answers it back (200), noting what it saw."""

    bodies: list[bytes] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        self.bodies.append(body)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": body})


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    read: int  # body messages the server handed over

    def json(self) -> Any:
        return orjson.loads(self.body)


async def call(
    app: ASGIApp,
    path: str = "/api/v1/x",
    chunks: tuple[bytes, ...] = (b"",),
    length: bool = True,
    query: bytes = b"",
) -> Answer:
    headers = [(b"content-length", str(sum(map(len, chunks))).encode())] if length else []
    scope = {"type": "http", "method": "POST", "path": path, "query_string": query, "headers": headers}
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    sent: list[Message] = []

    total = len(pending)

    async def receive() -> Message:
        return pending.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    return Answer(sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"], total - len(pending))


async def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    echo = Echo()
    r = await call(BodyLimit(echo, limit=10), chunks=(b"x" * 11,))
    assert r.status == 413 and r.json() == {"error": "too_large", "message": "body larger than 10 bytes"}
    assert echo.bodies == [] and r.read == 0  # refused before a byte of it was read
    assert (await call(BodyLimit(echo, limit=10), chunks=(b"x" * 10,))).status == 200


async def test_a_streamed_body_is_cut_off_once_it_passes_the_limit() -> None:
    echo = Echo()
    r = await call(BodyLimit(echo, limit=10), chunks=(b"a" * 6, b"b" * 6), length=False)
    assert r.status == 413 and "10 bytes" in r.json()["message"]
    assert echo.bodies == []  # it never got the whole body, nor answered
    r = await call(BodyLimit(echo, limit=10), chunks=(b"a" * 6, b"b" * 4), length=False)
    assert r.status == 200 and echo.bodies == [b"a" * 6 + b"b" * 4]


async def test_photos_have_their_own_larger_limit() -> None:
    echo = Echo()
    ok = await call(BodyLimit(echo, limit=10), path="/api/v1/photos", chunks=(b"p" * 1000,))
    assert ok.status == 200
    r = await call(BodyLimit(echo, limit=10), path="/api/v1/photos", chunks=(b"p" * (MAX_PHOTO_BYTES + 1),))
    assert r.status == 413 and str(MAX_PHOTO_BYTES) in r.json()["message"]


@pytest.mark.parametrize(
    ("path", "query", "where"),
    [
        ("/api/v1/incidents/INC\x001", b"", ["path"]),
        ("/api/v1/incidents", b"status=open%00&q=fine", ["status"]),
        ("/api/v1/x\x00", b"a=%00&b=ok&c=x%00y", ["path", "a", "c"]),
        ("/api/v1/x", b"=%00", ["query"]),  # a value with no name
    ],
)
async def test_a_nul_is_refused_naming_where_it_is(path: str, query: bytes, where: list[str]) -> None:
    echo = Echo()
    r = await call(RefuseNul(echo), path=path, query=query)
    assert r.status == 422 and echo.bodies == []
    body = r.json()
    assert body["error"] == "invalid" and [f["field"] for f in body["fields"]] == where
    assert body["message"].startswith(f"{where[0]}: must not contain the NUL character (U+0000)")


async def test_text_without_nul_passes_through() -> None:
    echo = Echo()
    r = await call(
        RefuseNul(echo), path="/api/v1/incidents/中文", query="q=油烟%20扰民".encode(), chunks=(b"{}",)
    )
    assert r.status == 200 and echo.bodies == [b"{}"]


async def test_every_answer_carries_the_security_headers() -> None:
    csp = content_security_policy(Settings(ws_public_url="wss://console.example.cn/live"))
    assert "connect-src 'self' wss://console.example.cn/live" in csp
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
    # As the app stacks them: the refusals of the inner middleware carry the headers too.
    app = SecurityHeaders(RefuseNul(BodyLimit(Echo(), limit=10)), csp=csp)
    for r in (await call(app), await call(app, path="/\x00"), await call(app, chunks=(b"x" * 11,))):
        assert r.headers[b"x-content-type-options"] == b"nosniff"
        assert r.headers[b"x-frame-options"] == b"DENY" and r.headers[b"referrer-policy"] == b"no-referrer"
        assert r.headers[b"content-security-policy"] == csp.encode()
        assert b"content-type" in r.headers  # the app's own headers are kept
    assert [r.status for r in (await call(app), await call(app, path="/\x00"))] == [200, 422]


async def test_the_lifespan_passes_every_middleware_untouched() -> None:
    seen: list[Scope] = []
    sent: list[Message] = []

    async def server_app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await send({"type": "lifespan.startup.complete"})

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    await SecurityHeaders(RefuseNul(BodyLimit(server_app, limit=0)))(scope, receive, send)
    assert seen == [scope] and sent == [{"type": "lifespan.startup.complete"}]
