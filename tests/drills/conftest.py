"""The fault drills' centre: every process of `./centre run`, on private servers it may break.

One centre serves the whole module (starting it takes a while); a supervisor watchdog brings
back any service that dies, as systemd would in production, and one operator's page stays
connected through every drill. The drills' summary is printed at the end of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from devtools.seed import seed_all
from devtools.stack import Supervisor, isolated_settings
from infra.db import create_pool
from infra.kafka_admin import create_topics
from infra.settings import Settings
from tests.drills.harness import ACCEPT_TIMEOUT_S, OperatorConsole, login
from tests.drills.servers import PrivateBroker, PrivatePostgres, PrivateRedis

SUMMARY: list[dict[str, object]] = []

PLANS = f"""
defaults:
  roles: [{{kind: grid_worker, count: 1}}]
  accept_timeout_s: {ACCEPT_TIMEOUT_S}
  warning_ratio: 0.8
  limits: {{dispatch: 1h, accept: 1h, arrive: 1h, resolve: 1h, verify: 1h}}
plans: {{}}
"""


@dataclass
class Centre:
    settings: Settings
    sup: Supervisor
    pg: PrivatePostgres
    redis: PrivateRedis
    broker: PrivateBroker
    page: OperatorConsole
    pool: asyncpg.Pool
    cache: aioredis.Redis

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[PrivatePostgres, PrivateRedis, PrivateBroker]]:
    root = Path(Settings().state_dir) / "drills" / f"servers-{os.getpid()}"  # logs kept for a post-mortem
    shutil.rmtree(root, ignore_errors=True)
    pg, redis, broker = (
        PrivatePostgres(root / "pg"),
        PrivateRedis(root / "redis"),
        PrivateBroker(root / "broker"),
    )
    try:
        pg.start()
        redis.start()
        broker.start()
        yield pg, redis, broker
    finally:
        broker.stop()
        redis.stop()
        pg.destroy()


@pytest.fixture(scope="module")
async def centre(servers: tuple[PrivatePostgres, PrivateRedis, PrivateBroker]) -> AsyncIterator[Centre]:
    pg, redis, broker = servers
    state = Path(Settings().state_dir) / "drills"
    state.mkdir(parents=True, exist_ok=True)
    plans = state / "plans.yaml"
    plans.write_text(PLANS, encoding="utf-8")
    s = isolated_settings(
        "drill",
        broker.bootstrap,
        pg.base_url,
        redis.url,
        topic_partitions=4,
        plans_path=str(plans),
        redeliver_after_s=3,
        board_resync_s=1.0,
        live_snapshot_s=1.0,
        state_dir=str(state),
    )
    await create_topics(s)
    await seed_all(s)
    sup = Supervisor(s, workers=2)
    sup.start()
    stopping = asyncio.Event()

    async def watchdog() -> None:
        while not stopping.is_set():
            sup.watch()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.5)

    guard = asyncio.create_task(watchdog())
    page_task: asyncio.Task[None] | None = None
    pool = await create_pool(s.database_url, max_size=4)
    cache = aioredis.Redis.from_url(s.redis_url)
    try:
        await asyncio.to_thread(sup.wait_healthy, 90)
        page = OperatorConsole(s, await login(f"http://{s.http_host}:{s.http_port}"))
        page_task = asyncio.create_task(page.run(stopping))
        await asyncio.wait_for(page.connected.wait(), 30)
        yield Centre(s, sup, pg, redis, broker, page, pool, cache)
    finally:
        stopping.set()
        if page_task is not None:
            await page_task
        await guard
        await cache.aclose()
        await pool.close()
        sup.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SUMMARY:
        return
    tr = terminalreporter
    tr.section("fault drills")
    head = (
        f"{'drill':<34}{'posted':>8}{'acked':>8}{'once':>8}{'lost':>6}{'dup':>6}{'stuck':>7}"
        f"{'poisoned':>10}{'refused':>9}{'faults':>8}{'retries':>9}"
    )
    tr.write_line(head)
    for row in SUMMARY:
        tr.write_line(
            f"{row['drill']!s:<34}{row['posted']:>8}{row['acknowledged']:>8}{row['exactly_once']:>8}"
            f"{row['lost']:>6}{row['duplicated']:>6}{row['stuck']:>7}{row['poisoned']:>10}{row['poison_refused']:>9}"
            f"{row['faults']:>8}{row['retries']:>9}"
        )
    totals = {
        k: sum(int(str(r[k])) for r in SUMMARY)
        for k in (
            "posted",
            "acknowledged",
            "exactly_once",
            "lost",
            "duplicated",
            "stuck",
            "poisoned",
            "poison_refused",
            "faults",
        )
    }
    tr.write_line(
        f"total: {totals['posted']} reports posted ({totals['poisoned']} poisoned, "
        f"{totals['poison_refused']} of them refused by name), {totals['acknowledged']} acknowledged, "
        f"{totals['exactly_once']} found exactly once, {totals['lost']} lost, "
        f"{totals['duplicated']} duplicated, {totals['stuck']} stuck, "
        f"{totals['faults']} faults injected and proved"
    )
