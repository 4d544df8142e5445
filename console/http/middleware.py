"""The console's ASGI middleware: body limits (413 before a large body is read), a NUL character
in a path or query refused by name (422), and the security headers with the pages' CSP.
"""

from __future__ import annotations

import urllib.parse
from typing import Final

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console.http.common import HttpError
from console.http.photos import MAX_PHOTO_BYTES
from infra.settings import Settings


class BodyLimit:
    """ASGI middleware: refuse bodies over the limit with 413 before reading them whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = MAX_PHOTO_BYTES if scope.get("path") == "/api/v1/photos" else self.limit  # phones' photos
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _too_large(limit, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HttpError(413, "too_large", f"body larger than {limit} bytes")
            return message

        try:
            await self.app(scope, limited, send)
        except HttpError:
            await _too_large(limit, send)


def content_security_policy(settings: Settings) -> str:
    """What the pages may load: scripts and styles from this server only (the map library and
    the docs page are served from npm, never a CDN), the live socket, and images from anywhere
    (camera snapshots and residents' photos live on the platforms that sent them)."""
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",  # Leaflet and Swagger UI set style attributes
            "img-src 'self' data: blob: http: https:",
            f"connect-src 'self' {settings.ws_url}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


class SecurityHeaders:
    """ASGI middleware: every answer forbids MIME sniffing, framing and leaking the URL onward,
    and carries the pages' Content-Security-Policy."""

    HEADERS: Final = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    ]

    def __init__(self, app: ASGIApp, csp: str = "default-src 'self'") -> None:
        self.app = app
        self._headers = [*self.HEADERS, (b"content-security-policy", csp.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self._headers]
            await send(message)

        await self.app(scope, receive, with_headers)


class RefuseNul:
    """ASGI middleware: a NUL character (U+0000) in the path or a query parameter is refused
    with 422 naming it; PostgreSQL text cannot hold one, so it would otherwise fail a query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"), True)
            where = ["path"] if "\x00" in scope.get("path", "") else []
            where += [name or "query" for name, value in query if "\x00" in value]
            if where:
                reason = "must not contain the NUL character (U+0000)"
                fields = [{"field": w, "reason": reason} for w in where]
                message = "; ".join(f"{w}: {reason}" for w in where)
                body = orjson.dumps({"error": "invalid", "message": message, "fields": fields})
                await send(
                    {
                        "type": "http.response.start",
                        "status": 422,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


async def _too_large(limit: int, send: Send) -> None:
    body = f'{{"error":"too_large","message":"body larger than {limit} bytes"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
