"""The console page in real headless Chromium: an operator logs in and sees incidents arrive live."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page

from console.positions import epoch_ms
from infra.settings import ROOT, Settings
from tests.e2e.conftest import KEYS, app_report, camera_alarm, hotline_ticket, incident_id

pytestmark = pytest.mark.e2e
SCREENSHOTS = ROOT / ".state" / "screenshots"
# Predicates are functions, not expressions: Playwright evaluates an expression with eval, which
# the pages' Content-Security-Policy (script-src 'self') refuses.
MAP_LOADED = "() => map.m !== null && map.responders && map.responders.getLayers().length > 999"


async def logged_in(browser: Browser, stack: Settings, width: int = 1400) -> Page:
    """The console page, logged in as the duty operator and connected."""
    page = await browser.new_page(viewport={"width": width, "height": 900}, locale="zh-CN")
    await page.goto(f"http://{stack.http_host}:{stack.http_port}/")
    await page.fill("input[name=username]", "duty")
    await page.fill("input[name=password]", "duty-demo-2026")
    await page.click("button[type=submit]")
    await page.wait_for_selector("#conn[data-state=on]")
    return page


async def test_operator_sees_three_enriched_incidents_arrive_live(
    stack: Settings, http: httpx.AsyncClient, browser: Browser
) -> None:
    page = await browser.new_page(viewport={"width": 1600, "height": 900}, locale="zh-CN")
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    await page.goto(f"http://{stack.http_host}:{stack.http_port}/")
    await page.fill("input[name=username]", "duty")
    await page.fill("input[name=password]", "wrong")
    await page.click("button[type=submit]")
    await page.wait_for_selector("#login-error:has-text('用户名或密码错误')")
    problems.clear()  # the browser logs the refused login's 401 as a failed resource
    await page.fill("input[name=password]", "duty-demo-2026")
    await page.click("button[type=submit]")
    await page.wait_for_selector("#conn[data-state=on]")
    assert await page.is_hidden("#login-view")
    assert "值班员张伟" in await page.inner_text("#who")

    tag = uuid.uuid4().hex[:8]
    ids = []
    for path, key, body in (
        ("camera-alarms", "camera", camera_alarm(f"CAM-{tag}")),
        ("hotline-tickets", "hotline", hotline_ticket(f"12345-{tag}")),
        ("app-reports", "app", app_report(f"SSP-{tag}")),
    ):
        r = await http.post(f"/api/v1/intake/{path}", headers={"X-Api-Key": KEYS[key]}, json=body)
        assert r.status_code == 202
        ids.append(incident_id(r.json()["tracking_no"]))
    for iid in ids:  # appear without a reload
        await page.wait_for_selector(f"tr[data-id='{iid}']", timeout=15_000)
    rows = {iid: await page.inner_text(f"tr[data-id='{iid}']") for iid in ids}
    # The map (Leaflet, served by us): 300 grids, the incidents, responders by kind and status.
    await page.wait_for_function(MAP_LOADED)
    assert await page.evaluate("map.incidents.getLayers().length") >= 3
    assert await page.is_visible("#map.leaflet-container")
    camera, hotline, app = (rows[i] for i in ids)
    assert "雪亮工程" in camera and "烟火" in camera and "视频连线" in camera
    assert "12345热线" in hotline and "138****8000" in hotline and "13800138000" not in hotline
    assert "随手拍" in app and "网格" in app
    for text in rows.values():
        assert "派出所" in text and "米" in text and "约" in text  # nearest police with distance and ETA
    # A severe incident (smoke/fire, level I) raises the alarm banner.
    assert "重大事件" in await page.inner_text("#alert")
    # The incident panel: live recommendation with reasons, its reports and timeline.
    await page.click(f"tr[data-id='{ids[0]}'] td:nth-child(3)")
    await page.wait_for_selector("#p-recs li button[data-pick]", timeout=15_000)
    assert "预案" in await page.inner_text("#p-plan")
    await page.wait_for_selector("#p-timeline li")
    assert "立案" in await page.inner_text("#p-timeline")
    assert "雪亮工程" in await page.inner_text("#p-reports")
    await page.fill("#p-note textarea", "已通知消防站，视频持续关注")
    await page.click("#p-note button")
    await page.wait_for_selector("#p-timeline li:has-text('已通知消防站')", timeout=15_000)
    assert "响应率" in await page.inner_text("#rates")
    assert "民警" in await page.inner_text("#forces")
    assert await page.locator("tr .clock").count() >= 3  # each open incident counts down a step
    # One click dispatches the hotline ticket's plan; the offer shows up in its row, live.
    await page.click(f"tr[data-id='{ids[1]}'] button.dispatch")
    await page.wait_for_function(
        f"() => document.querySelector(\"tr[data-id='{ids[1]}']\").innerText.includes('待接单')",
        timeout=15_000,
    )
    assert "已派遣" in await page.inner_text(f"tr[data-id='{ids[1]}']")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "console-live.png"))
    assert not problems, problems


async def test_a_cut_connection_resumes_without_gaps_or_duplicates(
    stack: Settings, http: httpx.AsyncClient, browser: Browser
) -> None:
    page = await logged_in(browser, stack)
    tag = uuid.uuid4().hex[:8]
    ids = []
    for n in range(8):
        r = await http.post(
            "/api/v1/intake/app-reports",
            headers={"X-Api-Key": KEYS["app"]},
            json=app_report(f"SSP-{tag}-{n}"),
        )
        ids.append(incident_id(r.json()["tracking_no"]))
        if n % 3 == 1:  # the connection drops while updates keep flowing
            await page.evaluate("state.ws.close()")
        await asyncio.sleep(0.15)
    for iid in ids:
        await page.wait_for_function(f"() => state.applied.includes('{iid}@1')", timeout=20_000)
    await page.wait_for_selector("#conn[data-state=on]")
    applied = await page.evaluate("state.applied")
    assert len(applied) == len(set(applied)), "a change was shown twice"
    filed = [a for a in applied if a.startswith(tuple(ids)) and a.endswith("@1")]
    assert sorted(a.split("@")[0] for a in filed) == sorted(ids)  # each arrival, once
    assert await page.evaluate("state.resumes") >= 1
    assert await page.evaluate("state.resyncs") == 0  # resumed from the server's history: no gap


async def first_marker(page: Page, prefix: str) -> tuple[str, float, float]:
    """The first responder on the map whose id starts with `prefix`, and where its marker is."""
    found: list[Any] = await page.evaluate(
        """(prefix) => { const [id, m] = [...map.markers].find(([id]) => id.startsWith(prefix));
                         const p = m.marker.getLatLng(); return [id, p.lng, p.lat]; }""",
        prefix,
    )
    return str(found[0]), float(found[1]), float(found[2])


async def test_a_responders_marker_moves_as_soon_as_its_position_is_posted(
    stack: Settings, http: httpx.AsyncClient, browser: Browser
) -> None:
    """Pushed, not polled: the marker moves within a couple of seconds (the poll comes every 15 s),
    and an older fix posted afterwards does not move it back."""
    page = await logged_in(browser, stack, width=1600)
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.wait_for_function(MAP_LOADED)
    rid, lon, lat = await first_marker(page, "V-")
    fence, fence_lon, fence_lat = await first_marker(page, "G-")
    where = f"map.markers.get('{rid}').marker.getLatLng()"

    async def post(responder_id: str, x: float, y: float, at: datetime) -> None:
        fix = {"responder_id": responder_id, "lon": x, "lat": y, "at": at.isoformat()}
        r = await http.post(
            "/api/v1/intake/positions", headers={"X-Api-Key": KEYS["positions"]}, json={"positions": [fix]}
        )
        assert r.status_code == 202, r.text

    now = datetime.now(UTC)
    target = (round(lon + 0.004, 6), round(lat + 0.003, 6))
    posted = time.monotonic()
    await post(rid, *target, now)
    await page.wait_for_function(f"() => map.markers.get('{rid}').at === {epoch_ms(now)}", timeout=5_000)
    took = time.monotonic() - posted
    assert took < 3, f"the marker moved {took:.1f}s after the post: polled, not pushed?"
    moved = await page.evaluate(f"[{where}.lng, {where}.lat]")
    assert moved == pytest.approx(list(target), abs=1e-9)
    assert await page.evaluate("state.moves") >= 1

    await post(rid, lon, lat, now - timedelta(seconds=60))  # late and older: ignored
    await post(fence, fence_lon + 0.0001, fence_lat, now)  # after it: once shown, the older was read
    await page.wait_for_function(f"() => map.markers.get('{fence}').at === {epoch_ms(now)}", timeout=5_000)
    assert await page.evaluate(f"[{where}.lng, {where}.lat]") == pytest.approx(list(target), abs=1e-9)

    await page.evaluate(f"() => {{ map.m.setView([{target[1]}, {target[0]}], 16); }}")
    await page.evaluate(f"() => {{ map.markers.get('{rid}').marker.openTooltip(); }}")
    await asyncio.sleep(0.5)  # let the canvas redraw
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "console-positions.png"))
    assert not problems, problems
