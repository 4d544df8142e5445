"""How the console's HTTP app is served (uvicorn): what the server itself must refuse.

- No proxy headers: uvicorn believed X-Forwarded-For from loopback whatever TRUSTED_PROXIES
  said, before the app's own rule (console.addresses) ran, so a forged header changed the
  address the login lanes key on and the audit log records.
- A request's headers must arrive in time: uvicorn waits for them for ever, so a client that
  trickles a header byte every few seconds (slowloris) held a connection, and enough of them
  every connection the process could take. `HeadersInTime` closes such a connection.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from infra.settings import Settings

HEADER_TIMEOUT_S: Final = 10.0  # from a connection (or a request's first byte) to its last header


class HeadersInTime(HttpToolsProtocol):
    """uvicorn's HTTP protocol (httptools), closing a connection whose request headers do not
    arrive within `timeout_s` of the connection or of the request's first byte."""

    timeout_s: float = HEADER_TIMEOUT_S
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def http_config(app: Any, settings: Settings, header_timeout_s: float = HEADER_TIMEOUT_S) -> uvicorn.Config:
    """uvicorn as the console serves the HTTP app (see the module's docstring)."""
    protocol = type("HeadersInTime", (HeadersInTime,), {"timeout_s": header_timeout_s})
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        http=protocol,
    )


__all__ = ["HEADER_TIMEOUT_S", "HeadersInTime", "http_config"]
