"""The whole centre, running: Tansu, PostgreSQL, Redis, a streams worker, the dispatcher and a
console server, as real processes started the way `./centre run` starts them.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, async_playwright
from websockets.asyncio.client import ClientConnection, connect

from devtools.city import generate_city
from devtools.seed import DEMO_API_KEYS, seed_all
from devtools.stack import Supervisor, isolated_settings
from infra.db import create_pool, drop_database
from infra.kafka_admin import create_topics
from infra.settings import Settings
from tests.conftest import tansu
from tests.times import recent

KEYS = DEMO_API_KEYS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that post reports at random places run after the others, so none of their reports
    can be merged (same family, within 300 m and an hour) with a report another test checks."""
    items.sort(key=lambda item: item.get_closest_marker("random_places") is not None)


@pytest.fixture(scope="session")
def e2e_broker() -> Iterator[str]:
    """The running centre's own broker: records other tests write to the shared one (raw reports,
    junk for dead-letter tests) must never become the centre's incidents."""
    with tansu() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def stack_settings(e2e_broker: str) -> Settings:
    return isolated_settings(
        "e2e",
        e2e_broker,
        os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432"),
        os.environ.get("TEST_E2E_REDIS_URL", "redis://127.0.0.1:6379/14"),
        topic_partitions=4,
        plans_path=str(E2E_PLANS),
    )


# Short offer timeouts so expiry and re-offer happen within a test; the shipped plans.yaml is
# loaded and checked by tests/dispatcher/test_plan.py.
E2E_PLANS = Path(Settings().state_dir) / "e2e-plans.yaml"
E2E_PLANS_TEXT = """
defaults:
  roles: [{kind: grid_worker, count: 1}]
  accept_timeout_s: 3
  warning_ratio: 0.8
  limits: {dispatch: 1h, accept: 1h, arrive: 1h, resolve: 1h, verify: 1h}
plans:
  smoke_fire:
    roles: [{kind: police, count: 1}, {kind: grid_worker, count: 1}, {kind: volunteer, count: 2}]
  cooking_fumes:
    roles: [{kind: grid_worker, count: 1}]
    accept_timeout_s: 1h
  noise:  # a dispatch step of 4 s: at risk after 2 s, overdue after 4 s (escalation tests)
    roles: [{kind: grid_worker, count: 1}]
    warning_ratio: 0.5
    limits: {dispatch: 4}
"""


SUPERVISOR: list[Supervisor] = []  # the running stack's, for tests that restart a service


@pytest.fixture(scope="session")
def stack(stack_settings: Settings) -> Iterator[Settings]:
    s = stack_settings
    E2E_PLANS.parent.mkdir(parents=True, exist_ok=True)
    E2E_PLANS.write_text(E2E_PLANS_TEXT, encoding="utf-8")
    asyncio.run(_reset(s))
    asyncio.run(create_topics(s))
    asyncio.run(seed_all(s))
    sup = Supervisor(s, workers=1)
    SUPERVISOR.append(sup)
    sup.start()
    try:
        sup.wait_healthy(90)
        asyncio.run(_warm_up(s))
        yield s
        sup.check()  # every service is still alive after the tests
    finally:
        sup.stop()
        asyncio.run(drop_database(s.database_url))


async def _reset(s: Settings) -> None:
    await drop_database(s.database_url)
    r = aioredis.Redis.from_url(s.redis_url)
    await r.flushdb()
    await r.aclose()


async def _warm_up(s: Settings, timeout: float = 90.0) -> None:
    """Wait until the whole pipeline has joined its consumer groups: a report goes through."""
    async with httpx.AsyncClient(base_url=f"http://{s.http_host}:{s.http_port}") as http:
        r = await http.post(
            "/api/v1/intake/app-reports", headers={"X-Api-Key": KEYS["app"]}, json=app_report("WARMUP")
        )
        assert r.status_code == 202, r.text
        tracking = r.json()["tracking_no"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = await http.get(f"/api/v1/reports/{tracking}")
            if got.json().get("status") == "new":
                return
            await asyncio.sleep(0.2)
    raise RuntimeError("pipeline did not come up")


# Points ~430 m apart inside the demo city, handed out in a shuffled order, so that no two
# tests' reports are ever duplicates of each other (the dispatcher merges same-family reports
# within 300 m and an hour); points near the places some tests use on purpose are left out.
_RESERVED = ((106.5612, 29.6455), (106.5055, 29.6055), (106.5233, 29.6177), (106.5391, 29.6331))
_SPOTS = [
    (106.5075 + i * 0.0045, 29.607 + j * 0.004)
    for i in range(15)
    for j in range(12)
    if all(
        abs(106.5075 + i * 0.0045 - x) > 0.005 or abs(29.607 + j * 0.004 - y) > 0.005 for x, y in _RESERVED
    )
]
random.Random(os.getpid()).shuffle(_SPOTS)


def _spread_cameras() -> list[str]:
    """Demo cameras far from each other and from the reserved places (their alarms never merge)."""
    chosen: list[tuple[float, float]] = [*_RESERVED, *_SPOTS]
    out = []
    for cam in generate_city().cameras:
        if all(abs(cam.lon - x) > 0.004 or abs(cam.lat - y) > 0.004 for x, y in chosen):
            chosen.append((cam.lon, cam.lat))
            out.append(cam.camera_id)
    random.Random(os.getpid()).shuffle(out)
    return out


_CAMERAS = _spread_cameras()


def _spot() -> tuple[float, float]:
    """The next unused point (see _SPOTS)."""
    if not _SPOTS:
        raise RuntimeError("the e2e tests used every distinct spot: add more or reuse with care")
    return _SPOTS.pop()


def app_report(
    report_id: str, lon: float | None = None, lat: float | None = None, category: str = "garbage_overflow"
) -> dict[str, Any]:
    if lon is None or lat is None:
        lon, lat = _spot()
    return {
        "report_id": report_id,
        "reporter_id": "resident-1029",
        "reported_at": recent(),
        "category": category,
        "description": "垃圾桶满了",
        "lon": lon,
        "lat": lat,
        "photo_urls": ["http://app.example/p/8f3a.jpg"],
    }


def hotline_ticket(ticket_no: str, lon: float | None = None, lat: float | None = None) -> dict[str, Any]:
    if lon is None or lat is None:
        lon, lat = _spot()
    return {
        "ticket_no": ticket_no,
        "received_at": recent(),
        "caller_phone": "13800138000",
        "caller_name": "李女士",
        "category": "cooking_fumes",
        "description": "楼下饭店油烟太大",
        "address": "清晖岸小区3栋",
        "lon": lon,
        "lat": lat,
        "time_limit": "24h",
    }


def camera_alarm(
    alarm_id: str, camera_id: str | None = None, alarm_type: str = "smoke_fire"
) -> dict[str, Any]:
    if camera_id is None:
        camera_id = _CAMERAS.pop()  # a demo camera whose alarms merge with no other test's
    return {
        "alarm_id": alarm_id,
        "camera_id": camera_id,
        "alarm_type": alarm_type,
        "confidence": 0.91,
        "occurred_at": recent(),
        "snapshot_url": "http://video.example/snap/42.jpg",
        "stream_url": "rtsp://video.example/live/42",
    }


@pytest.fixture
async def http(stack: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://{stack.http_host}:{stack.http_port}", timeout=15
    ) as client:
        yield client


_DUTY: dict[str, str] = {}  # the duty operator's session, shared by the tests while it lasts


@pytest.fixture
async def token(http: httpx.AsyncClient) -> str:
    """The duty operator's session, as a console keeps one: logged in once and used until it
    ends (an account may open only so many sessions a minute, console.auth)."""
    if "token" in _DUTY:
        me = await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {_DUTY['token']}"})
        if me.status_code == 200:
            return _DUTY["token"]
    r = await http.post("/api/v1/auth/login", json={"username": "duty", "password": "duty-demo-2026"})
    assert r.status_code == 200, r.text
    _DUTY["token"] = str(r.json()["token"])
    return _DUTY["token"]


@pytest.fixture
async def stack_pg(stack: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.database_url, max_size=3)
    yield pool
    await pool.close()


@pytest.fixture
async def stack_redis(stack: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(stack.redis_url)
    yield client
    await client.aclose()


class Console:
    """A console client: authenticates, keeps the snapshot, collects deltas in order; `positions`
    frames (ephemeral, outside the numbered stream) are kept apart in `positions`."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seq: int | None = None
        self.snapshot: list[dict[str, Any]] = []
        self.deltas: list[dict[str, Any]] = []
        self.frames: list[dict[str, Any]] = []
        self.positions: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, settings: Settings, token: str, resume_from: int | None = None) -> Console:
        ws = await connect(f"ws://{settings.http_host}:{settings.ws_port}", max_size=2**24)
        console = cls(ws)
        hello: dict[str, Any] = {"type": "auth", "id": "hello", "token": token}
        if resume_from is not None:
            hello["resume_from"] = resume_from
        await ws.send(orjson.dumps(hello).decode())
        ack = orjson.loads(await ws.recv())
        assert ack["type"] == "ack" and ack["id"] == "hello", ack
        first = orjson.loads(await ws.recv())
        console.frames.append(first)
        if first["type"] == "snapshot":
            console.snapshot, console.seq = first["incidents"], first["seq"]
        else:
            assert first["type"] == "resumed", first
            console.seq = first["from"]
        return console

    async def next_frame(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame other than `positions` (those may come between any two frames)."""
        deadline = time.monotonic() + timeout
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), max(0.001, deadline - time.monotonic()))
            frame: dict[str, Any] = orjson.loads(raw)
            if frame["type"] != "positions":
                break
            self.positions.append(frame)
        self.frames.append(frame)
        if frame["type"] == "delta":
            assert self.seq is not None and frame["seq"] == self.seq + 1, (self.seq, frame["seq"])
            self.seq = frame["seq"]
            self.deltas.append(frame)
        return frame

    async def wait_incident(self, incident_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """The incident as this console first saw it: in its snapshot (filed before the console
        connected) or in a delta."""
        for i in self.snapshot:
            if i["incident_id"] == incident_id:
                return dict(i)
        for d in self.deltas:
            if d["incident"]["incident_id"] == incident_id:
                return dict(d["incident"])
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{incident_id} did not reach the console in {timeout}s")
            frame = await self.next_frame(left)
            if frame["type"] == "delta" and frame["incident"]["incident_id"] == incident_id:
                return dict(frame["incident"])

    async def drain(self, quiet_s: float = 1.0) -> None:
        """Read until nothing arrives for `quiet_s`."""
        while True:
            try:
                await self.next_frame(quiet_s)
            except TimeoutError:
                return

    async def close(self) -> None:
        await self.ws.close()


@pytest.fixture
async def console(stack: Settings, token: str) -> AsyncIterator[Console]:
    c = await Console.open(stack, token)
    yield c
    await c.close()


CHROMIUM = "/usr/bin/chromium"  # Debian's package (Playwright's own browser download is blocked)
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - once per test, before any I/O
        pytest.fail("Debian's chromium is not installed: run the tests with ./centre test")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        await b.close()


def incident_id(tracking_no: str) -> str:
    return f"INC-{tracking_no}"


__all__ = ["KEYS", "Console", "app_report", "camera_alarm", "hotline_ticket", "incident_id", "replace"]
