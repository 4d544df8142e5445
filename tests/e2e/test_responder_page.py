"""The responder's phone page in real Chromium: a pushed task is accepted, worked and verified,
the position is shared, and nobody can act on another responder's task."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, Page

from devtools.seed import DEMO_RESPONDER_PASSWORD
from infra.livestate import LiveState
from infra.settings import Settings
from tests.e2e.conftest import KEYS, Console, hotline_ticket, incident_id
from tests.e2e.test_closed_loop import Phone, wait_for
from tests.e2e.test_console_page import SCREENSHOTS

pytestmark = pytest.mark.e2e
# A 1x1 PNG: what a phone's camera would upload.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db00000000049454e44ae426082"
)


async def phone_page(browser: Browser, stack: Settings, responder_id: str) -> Page:
    ctx = await browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, locale="zh-CN"
    )
    page = await ctx.new_page()
    await page.goto(f"http://{stack.http_host}:{stack.http_port}/responder")
    await page.fill("input[name=username]", responder_id)
    await page.fill("input[name=password]", DEMO_RESPONDER_PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#conn[data-state=on]")
    return page


async def test_a_responder_works_a_pushed_task_from_the_phone_page(
    stack: Settings,
    http: httpx.AsyncClient,
    console: Console,
    browser: Browser,
    stack_redis: aioredis.Redis,
    token: str,
) -> None:
    for _ in range(10):  # a spot whose grid worker is on duty and free
        r = await http.post(
            "/api/v1/intake/hotline-tickets",
            headers={"X-Api-Key": KEYS["hotline"]},
            json=hotline_ticket(f"12345-{uuid.uuid4().hex[:8]}"),
        )
        iid = incident_id(r.json()["tracking_no"])
        incident = await console.wait_incident(iid)
        own = incident["recommended"]["own_grid_worker"]
        if own is not None:
            break
    assert own is not None
    rid = own["responder_id"]
    page = await phone_page(browser, stack, rid)
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.wait_for_selector("#empty:not([hidden])")

    # Manual position fallback (geolocation needs a secure context and a permission).
    await page.click("details summary")
    lon, lat = round(incident["location"]["lon"] + 0.0004, 5), round(incident["location"]["lat"], 5)
    await page.fill("#lon", str(lon))
    await page.fill("#lat", str(lat))
    await page.click("#manual")
    live = LiveState(stack_redis)
    for _ in range(100):
        if abs(float((await live.responder(rid)).get("lon", "0")) - lon) < 1e-6:
            break
        await asyncio.sleep(0.05)
    assert abs(float((await live.responder(rid))["lat"]) - lat) < 1e-6

    # The operator's page watches every step live, in the same browser.
    ops = await (
        await browser.new_context(viewport={"width": 1600, "height": 900}, locale="zh-CN")
    ).new_page()
    await ops.goto(f"http://{stack.http_host}:{stack.http_port}/")
    await ops.fill("input[name=username]", "duty")
    await ops.fill("input[name=password]", "duty-demo-2026")
    await ops.click("button[type=submit]")
    await ops.wait_for_selector(f"tr[data-id='{iid}']")
    row = f"tr[data-id='{iid}']"

    async def operator_sees(text: str) -> None:
        await ops.wait_for_function(
            f"() => (document.querySelector(\"{row}\") || {{innerText: ''}}).innerText.includes('{text}')",
            timeout=15_000,
        )

    await ops.click(f"{row} button.dispatch")  # one click, on the operator's page
    await operator_sees("待接单")
    card = "li.task button[data-act=accept]"
    await page.wait_for_selector(card, timeout=15_000)  # pushed, no reload
    text = await page.inner_text("#tasks")
    assert "处置任务" in text and "本网格网格员" in text and "13800138000" not in text
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "responder-task.png"), full_page=True)

    # Another responder cannot act on this task.
    other = "G-0001" if rid != "G-0001" else "G-0002"
    intruder = await Phone.open(stack, http, other)
    task_id = await page.get_attribute(card, "data-task")
    assert task_id
    answer = await intruder.act(task_id, "accept")
    assert answer["type"] == "error" and answer["code"] == "forbidden"
    await intruder.close()

    await page.click(card)
    await operator_sees("已接单")
    await page.click("button[data-act=en_route]")
    await operator_sees("途中")
    await page.click("button[data-act=on_scene]")
    await operator_sees("处置中")
    await page.wait_for_selector("textarea[data-note]")
    await page.fill("textarea[data-note]", "已督促商户清洗油烟管道")
    await page.set_input_files(
        "input[data-file]", files=[{"name": "scene.png", "mimeType": "image/png", "buffer": PNG}]
    )
    await page.wait_for_selector("[data-photo-state]:has-text('照片已上传')")
    await page.click("button[data-act=done]")
    view = await wait_for(
        console,
        iid,
        lambda v: v["status"] == "resolved" and any(t["kind"] == "verification" for t in v["tasks"]),
    )
    check = next(t for t in view["tasks"] if t["kind"] == "verification")
    assert check["responder_id"] == rid  # the grid's own worker verifies, on the same phone
    done = next(t for t in view["tasks"] if t["kind"] == "response")
    assert done["note"] == "已督促商户清洗油烟管道"
    [photo_url] = done["photo_urls"]
    assert "/api/v1/photos/" in photo_url
    assert (await http.get(photo_url)).status_code == 401  # photos need a session
    photo = await http.get(photo_url, headers={"Authorization": f"Bearer {token}"})
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/png" and photo.content == PNG
    await page.wait_for_selector("li.task:has-text('核查任务') button[data-act=accept]")
    await page.click("li.task button[data-act=accept]")
    await page.click("button[data-act=on_scene]")
    await operator_sees("已处置待核查")
    await page.click("button[data-act=pass]")
    await wait_for(console, iid, lambda v: v["status"] == "closed")
    await ops.wait_for_selector(row, state="detached", timeout=15_000)  # closed: off the open queue
    await page.wait_for_selector("#empty:not([hidden])")
    assert not problems, problems
