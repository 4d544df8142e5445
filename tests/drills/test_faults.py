"""Fault drills on the real stack: reports keep flowing while a part of the centre fails.

After each drill: every acknowledged report is in exactly one incident, no task is stuck,
every clock has fired once, and the operator's page that stayed connected has caught up.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

import pytest

from infra.faults import TRANSIENT
from infra.kafka_admin import create_topics
from infra.seed import DEMO_RESPONDER_PASSWORD
from tests.drills.conftest import SUMMARY, Centre
from tests.drills.harness import (
    Findings,
    ResponderPhone,
    Traffic,
    login,
    page_behind,
    phone_behind,
    reports_in_incidents,
    stuck_work,
)

pytestmark = pytest.mark.drill

RATE = 4.0  # reports a second, before, during and after the fault
BEFORE_S = 4.0
AFTER_S = 6.0
SETTLE_S = 90.0


async def drill(
    centre: Centre,
    name: str,
    fault: Callable[[], Awaitable[int]],
    also_behind: Callable[[], Awaitable[list[str]]] | None = None,
) -> Findings:
    stop = asyncio.Event()
    traffic = Traffic(centre.base_url, RATE, re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-"))
    flowing = asyncio.create_task(traffic.run(stop))
    await asyncio.sleep(BEFORE_S)
    acked_before = len(traffic.acknowledged)
    faults = await fault()
    await asyncio.sleep(AFTER_S)
    stop.set()
    await flowing
    assert not traffic.refused, f"intake refused drill reports: {list(traffic.refused.items())[:3]}"
    assert acked_before > 0 and len(traffic.acknowledged) > acked_before, "reports stopped flowing"

    tracking = sorted(traffic.acknowledged.values())
    deadline = time.monotonic() + SETTLE_S
    while True:
        try:
            found = await reports_in_incidents(centre.pool, tracking)
            found.problems = await stuck_work(centre.pool, centre.cache)
            behind = await page_behind(centre.pool, centre.page)
            if also_behind is not None:
                behind += await also_behind()
        except TRANSIENT as exc:  # our own connections to a server that just restarted
            found, behind = Findings(acknowledged=len(tracking), problems=[f"checks failed: {exc!r}"]), []
        if found.ok and not behind:
            break
        if time.monotonic() > deadline:
            found.problems += [f"page behind: {b}" for b in behind[:20]]
            break
        await asyncio.sleep(1.0)
    SUMMARY.append(
        {
            "drill": name,
            "posted": len(traffic.posted),
            "acknowledged": found.acknowledged,
            "exactly_once": found.exactly_once,
            "lost": len(found.lost),
            "duplicated": len(found.duplicated),
            "faults": faults,
            "retries": traffic.retries,
        }
    )
    await centre.page.cancel_open()  # the next drill starts with a quiet board
    abuse = {"too_many_pending", "rate_limited", "unavailable", "forbidden", "unauthorised"}
    assert not [e for e in centre.page.errors if e.get("code") in abuse], centre.page.errors[-5:]
    assert not found.lost, f"{len(found.lost)} acknowledged reports in no incident: {found.lost[:10]}"
    assert not found.duplicated, f"reports in more than one incident: {found.duplicated[:10]}"
    assert not found.problems, "\n".join(found.problems[:30])
    return found


async def test_sigkill_a_streams_worker(centre: Centre) -> None:
    async def fault() -> int:
        centre.sup.kill("streams-1")  # the watchdog starts it again
        return 1

    await drill(centre, "SIGKILL streams worker", fault)


async def test_sigkill_the_dispatcher(centre: Centre) -> None:
    async def fault() -> int:
        centre.sup.kill("dispatcher")
        return 1

    await drill(centre, "SIGKILL dispatcher", fault)


async def test_sigkill_the_console_server_with_pages_connected(centre: Centre) -> None:
    """An operator's console and a responder's phone are connected; both catch up afterwards."""
    connects = centre.page.connects
    stop = asyncio.Event()
    phone: ResponderPhone | None = None
    phone_task: asyncio.Task[None] | None = None
    responder_id = ""

    async def fault() -> int:
        nonlocal phone, phone_task, responder_id
        # The phone of a responder who holds an offer right now (the drill's traffic makes them).
        for _ in range(50):
            responder_id = await centre.pool.fetchval(
                "SELECT responder_id FROM tasks WHERE state = 'offered' ORDER BY offered_at DESC LIMIT 1"
            )
            if responder_id:
                break
            await asyncio.sleep(0.2)
        assert responder_id, "no offer to watch"
        token = await login(centre.base_url, responder_id, DEMO_RESPONDER_PASSWORD)
        phone = ResponderPhone(centre.settings, token)
        phone_task = asyncio.create_task(phone.run(stop))
        await asyncio.wait_for(phone.listed.wait(), 10)
        centre.sup.kill("console")
        return 1

    async def phone_caught_up() -> list[str]:
        assert phone is not None
        return await phone_behind(centre.pool, responder_id, phone)

    try:
        await drill(centre, "SIGKILL console server", fault, phone_caught_up)
    finally:
        stop.set()
        if phone_task is not None:
            await phone_task
    assert centre.page.connects > connects, "the page never reconnected"
    assert phone is not None and phone.connects > 1, "the phone never reconnected"


async def test_restart_postgresql(centre: Centre) -> None:
    async def fault() -> int:
        await asyncio.to_thread(centre.pg.crash_restart, 3.0)
        return 1

    await drill(centre, "restart PostgreSQL (crash)", fault)


async def test_restart_redis_empty(centre: Centre) -> None:
    async def fault() -> int:
        await asyncio.to_thread(centre.redis.restart_empty, 2.0)
        return 1

    await drill(centre, "restart Redis (empty)", fault)


async def test_restart_the_broker_empty(centre: Centre) -> None:
    async def fault() -> int:
        await asyncio.to_thread(centre.broker.restart_empty, 1.0)
        await create_topics(centre.settings)  # what the supervisor of `./centre run` does
        return 1

    await drill(centre, "restart broker (empty)", fault)


async def test_two_streams_workers_lose_one_for_good(centre: Centre) -> None:
    async def fault() -> int:
        centre.sup.kill("streams-2", keep_down=True)  # the survivor takes its partitions
        return 1

    try:
        await drill(centre, "2 workers, 1 killed (rebalance)", fault)
    finally:
        centre.sup.restart("streams-2")
