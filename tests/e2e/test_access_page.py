"""Access control on the running centre: reveal from the console page (audited), a viewer who
cannot reveal or dispatch, the administrator's demo login, logout, and masked read API answers."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Dialog, Page

from devtools.seed import DEMO_USERS
from infra.settings import Settings
from tests.e2e.conftest import KEYS, hotline_ticket, incident_id

pytestmark = pytest.mark.e2e
PASSWORDS = {u: pw for u, _, _, pw in DEMO_USERS}


SCREENSHOTS = Path(Settings().state_dir) / "screenshots"


async def login(http: httpx.AsyncClient, username: str) -> dict[str, str]:
    r = await http.post("/api/v1/auth/login", json={"username": username, "password": PASSWORDS[username]})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def hotline_incident(http: httpx.AsyncClient) -> str:
    """A new 12345 ticket (caller 李女士, 13800138000): its incident id."""
    r = await http.post(
        "/api/v1/intake/hotline-tickets",
        headers={"X-Api-Key": KEYS["hotline"]},
        json=hotline_ticket(f"12345-{uuid.uuid4().hex[:8]}"),
    )
    assert r.status_code == 202, r.text
    return incident_id(r.json()["tracking_no"])


async def open_incident(page: Page, stack: Settings, username: str, iid: str) -> str:
    """Log in on the console page and open the incident's panel; returns the row's selector."""
    await page.goto(f"http://{stack.http_host}:{stack.http_port}/")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", PASSWORDS[username])
    await page.click("button[type=submit]")
    await page.wait_for_selector("#conn[data-state=on]")
    row = f"tr[data-id='{iid}']"
    await page.wait_for_selector(row, timeout=20_000)
    await page.click(f"{row} td:nth-child(3)")
    await page.wait_for_selector("#panel:not([hidden])")
    return row


async def test_an_operator_reveals_a_callers_number_on_the_console_and_it_is_audited(
    stack: Settings, http: httpx.AsyncClient, browser: Browser, stack_pg: asyncpg.Pool
) -> None:
    iid = await hotline_incident(http)
    page = await browser.new_page(viewport={"width": 1600, "height": 900}, locale="zh-CN")
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    reasons: list[str] = []

    async def answer(dialog: Dialog) -> None:
        reasons.append(dialog.message)
        await dialog.accept("回访核实处理结果")

    page.on("dialog", answer)
    row = await open_incident(page, stack, "duty", iid)
    await page.wait_for_selector("#p-reveal:not([hidden])")
    assert "13800138000" not in await page.inner_text("#panel")
    await page.click("#p-reveal")
    await page.wait_for_selector("#p-reveal-result:has-text('13800138000')")
    assert "李女士" in await page.inner_text("#p-reveal-result") and "记录" in reasons[0]
    assert "138****8000" in await page.inner_text(row)  # the masked value stays everywhere else
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "console-reveal.png"))
    entry = await stack_pg.fetchrow(
        "SELECT * FROM audit_log WHERE kind = 'reveal' AND incident_id = $1 ORDER BY seq DESC LIMIT 1", iid
    )
    assert entry["actor"] == "operator:duty" and entry["detail"] == "回访核实处理结果"
    assert entry["origin"] == "127.0.0.1" and "caller_phone" in entry["data"]["fields"]
    # The audit card on the page lists it.
    await page.click("#audit-refresh")
    await page.wait_for_selector(f"#audit li:has-text('{iid}')")
    # Logging out ends the session on the server, not only in the tab.
    token = await page.evaluate("state.token")
    await page.click("#logout")
    await page.wait_for_selector("#login-view:not([hidden])")
    for _ in range(50):
        if (
            await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        ).status_code == 401:
            break
        await page.wait_for_timeout(100)
    assert (
        await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    ).status_code == 401
    assert not problems, problems


async def test_a_viewer_sees_the_board_masked_but_cannot_reveal_or_dispatch(
    stack: Settings, http: httpx.AsyncClient, browser: Browser
) -> None:
    iid = await hotline_incident(http)
    page = await browser.new_page(viewport={"width": 1600, "height": 900}, locale="zh-CN")
    row = await open_incident(page, stack, "viewer", iid)
    assert await page.locator(f"{row} button.dispatch").count() == 0
    assert await page.is_hidden("#p-reveal") and await page.is_hidden("#audit-card")
    auth = await login(http, "viewer")
    refused = await http.post(f"/api/v1/incidents/{iid}/reveal", json={"reason": "看看"}, headers=auth)
    assert refused.status_code == 403 and "13800138000" not in refused.text
    assert (await http.get("/api/v1/audit", headers=auth)).status_code == 403
    full = await http.get(f"/api/v1/incidents/{iid}", headers=auth)
    assert full.status_code == 200 and "13800138000" not in full.text and "李女士" not in full.text


async def test_the_demo_administrator_manages_the_registry_and_reads_the_audit_log(
    http: httpx.AsyncClient,
) -> None:
    auth = await login(http, "admin")
    camera = f"5001080000{uuid.uuid4().int % 10**10:010d}"
    r = await http.put(
        f"/api/v1/cameras/{camera}",
        json={"name": "管理员新增枪机", "lon": 106.53, "lat": 29.63},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    log = (await http.get("/api/v1/audit?kind=admin&actor=admin:admin", headers=auth)).json()
    assert any(e["data"].get("camera_id") == camera for e in log["entries"])
    # The administrator does not reveal; an operator's session cannot touch the registry.
    assert (
        await http.post("/api/v1/incidents/INC-x/reveal", json={"reason": "看看"}, headers=auth)
    ).status_code == 403
    duty = await login(http, "duty")
    assert (
        await http.put(
            f"/api/v1/cameras/{camera}", json={"name": "x", "lon": 106.5, "lat": 29.6}, headers=duty
        )
    ).status_code == 403
    # Intake keys reach only their own intake endpoint.
    assert (
        await http.put(
            f"/api/v1/cameras/{camera}",
            json={"name": "x", "lon": 106.5, "lat": 29.6},
            headers={"X-Api-Key": KEYS["camera"]},
        )
    ).status_code == 401


async def test_the_api_docs_page_renders_from_this_server_under_its_content_security_policy(
    stack: Settings, browser: Browser
) -> None:
    """`/docs` used to load Swagger UI from a CDN (and with an inline script): it is served from
    npm here, and renders with no request leaving the centre and no policy violation."""
    page = await browser.new_page(viewport={"width": 1366, "height": 900}, locale="zh-CN")
    problems: list[str] = []
    elsewhere: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    origin = f"http://{stack.http_host}:{stack.http_port}"
    page.on("request", lambda r: elsewhere.append(r.url) if not r.url.startswith(origin) else None)
    await page.goto(f"{origin}/docs")
    await page.wait_for_selector(
        ".swagger-ui .info .title:has-text('街道基层治理指挥中心 API')", timeout=20_000
    )
    await page.wait_for_selector("#operations-intake-camera_alarm_api_v1_intake_camera_alarms_post")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "api-docs.png"))
    assert not problems, problems
    assert not [u for u in elsewhere if not u.startswith("data:")], elsewhere
    await page.close()


async def test_the_administrator_sees_who_is_being_guessed_at_on_the_console(
    stack: Settings, http: httpx.AsyncClient, browser: Browser
) -> None:
    """Failed logins slow the guesser down (never a lock); the administrator sees the lanes that
    wait, and the audit log says so in Chinese."""
    victim = f"guess-{uuid.uuid4().hex[:6]}"
    for _ in range(6):  # five free failures in the (account, address) lane, then a wait
        r = await http.post("/api/v1/auth/login", json={"username": victim, "password": "wrong-password"})
    assert (
        r.status_code == 429 and r.json()["error"] == "login_delayed" and int(r.headers["retry-after"]) >= 1
    )
    page = await browser.new_page(viewport={"width": 1600, "height": 1200}, locale="zh-CN")
    await page.goto(f"http://{stack.http_host}:{stack.http_port}/")
    await page.fill("input[name=username]", "admin")
    await page.fill("input[name=password]", PASSWORDS["admin"])
    await page.click("button[type=submit]")
    await page.wait_for_selector("#conn[data-state=on]")
    await page.wait_for_selector(f"#throttles li:has-text('{victim}')", timeout=15_000)
    lane = await page.inner_text(f"#throttles li:has-text('账号+地址'):has-text('{victim}')")
    assert "失败5次" in lane and "下次可试" in lane, lane
    await page.select_option("#audit-kind", "login")
    await page.click("#audit-refresh")
    await page.wait_for_selector(f"#audit li:has-text('user:{victim}'):has-text('须等待后再试')")
    await page.locator("#audit-card").screenshot(path=str(SCREENSHOTS / "admin-throttles.png"))
    await page.close()
