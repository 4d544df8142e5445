"""The WebSocket's defences on the running centre: pages from other origins are refused at the
handshake, a logged-out session's socket is closed and its page shows the login screen, a flood
is cut off, and a healthy console keeps getting incidents throughout."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from playwright.async_api import Browser
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from infra.settings import Settings
from tests.e2e.conftest import KEYS, Console, app_report, incident_id

pytestmark = pytest.mark.e2e


async def _new_incident(http: httpx.AsyncClient) -> str:
    r = await http.post(
        "/api/v1/intake/app-reports",
        headers={"X-Api-Key": KEYS["app"]},
        json=app_report(f"SSP-ws-{uuid.uuid4().hex[:8]}"),
    )
    assert r.status_code == 202, r.text
    return incident_id(r.json()["tracking_no"])


async def test_only_the_consoles_own_pages_may_open_the_socket(
    stack: Settings, http: httpx.AsyncClient, console: Console, token: str
) -> None:
    url = f"ws://{stack.http_host}:{stack.ws_port}"
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, origin="http://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    page_origin = f"http://{stack.http_host}:{stack.http_port}"
    async with connect(url, origin=page_origin) as ws:  # type: ignore[arg-type]
        await ws.send(orjson.dumps({"type": "auth", "id": "h", "token": token}).decode())
        assert orjson.loads(await ws.recv())["type"] == "ack"
    await console.wait_incident(await _new_incident(http))


async def test_a_flood_is_cut_off_and_others_are_served(
    stack: Settings, http: httpx.AsyncClient, console: Console, token: str
) -> None:
    flooder = await Console.open(stack, token)
    with pytest.raises(ConnectionClosed):
        for i in range(500):
            await flooder.ws.send(orjson.dumps({"type": "ping", "id": f"f{i}"}).decode())
        while True:
            await flooder.next_frame(5)
    closed = flooder.ws.close_code
    assert closed == 1008, closed
    assert any(f.get("code") == "rate_limited" for f in flooder.frames)
    await console.wait_incident(await _new_incident(http))


async def test_a_logged_out_page_is_shown_the_login_screen(
    stack: Settings, http: httpx.AsyncClient, browser: Browser, console: Console
) -> None:
    page = await browser.new_page(locale="zh-CN")
    await page.goto(f"http://{stack.http_host}:{stack.http_port}/")
    await page.fill("input[name=username]", "commander")
    await page.fill("input[name=password]", "commander-demo-2026")
    await page.click("button[type=submit]")
    await page.wait_for_selector("#conn[data-state=on]")
    page_token = await page.evaluate("sessionStorage.getItem('token')")
    # Logged out elsewhere (another tab, an administrator): the socket is closed at the next
    # session check or, as here, at the page's next command.
    r = await http.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {page_token}"})
    assert r.status_code == 204, r.text
    await page.evaluate("state.ws.send(JSON.stringify({type: 'snapshot', id: 'after-logout'}))")
    await page.wait_for_selector("#login-view:not([hidden])", timeout=10_000)
    assert "登录已过期" in await page.inner_text("#login-error")
    await page.screenshot(
        path=str(Path(stack.state_dir).parent / "screenshots" / "console-session-expired.png")
    )
    await page.close()
    await console.wait_incident(await _new_incident(http))
