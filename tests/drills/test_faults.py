"""Fault drills on the real stack: reports keep flowing while a part of the centre fails.

After each drill: every acknowledged report is in exactly one incident, no task is stuck,
every clock has fired once, and the operator's page that stayed connected has caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devtools.seed import DEMO_RESPONDER_PASSWORD
from infra.faults import TRANSIENT
from infra.kafka_admin import create_topics
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
    assert faults >= 1, f"{name}: the fault was not proved to have happened"
    poison_acked = sorted(set(traffic.poisoned) & set(traffic.acknowledged))
    assert not poison_acked, f"poisoned reports acknowledged: {poison_acked[:5]}"
    assert traffic.poisoned and traffic.poison_refused == set(traffic.poisoned), (
        f"poisoned reports not refused by name: {sorted(set(traffic.poisoned) - traffic.poison_refused)[:5]}"
    )

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
    stuck = await centre.pool.fetchval(
        "SELECT count(*) FROM reports WHERE tracking_no = ANY($1::text[]) AND refused_at IS NOT NULL",
        tracking,
    )
    SUMMARY.append(
        {
            "drill": name,
            "stuck": stuck,
            "posted": len(traffic.posted),
            "acknowledged": found.acknowledged,
            "exactly_once": found.exactly_once,
            "lost": len(found.lost),
            "duplicated": len(found.duplicated),
            "poisoned": len(traffic.poisoned),
            "poison_refused": len(traffic.poison_refused),
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
    assert stuck == 0, f"{stuck} acknowledged reports were refused for good by a later stage"
    return found


async def killed_and_back(centre: Centre, name: str, timeout: float = 30.0) -> int:
    """SIGKILL `name` and prove it: that pid is gone, and the watchdog started a new process
    under the name (for the console, serving again). Returns the faults proved (1)."""
    pid = centre.sup.kill(name)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    deadline = time.monotonic() + timeout
    while centre.sup.pid(name) in (None, pid):
        assert time.monotonic() < deadline, f"{name} was not started again after SIGKILL"
        await asyncio.sleep(0.2)
    if name == "console":
        await asyncio.to_thread(centre.sup.wait_healthy, timeout)
    return 1


async def test_sigkill_a_streams_worker(centre: Centre) -> None:
    await drill(centre, "SIGKILL streams worker", lambda: killed_and_back(centre, "streams-1"))


async def test_sigkill_the_dispatcher(centre: Centre) -> None:
    await drill(centre, "SIGKILL dispatcher", lambda: killed_and_back(centre, "dispatcher"))


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
        return await killed_and_back(centre, "console")

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
    async def started_at() -> datetime:
        conn = await asyncpg.connect(centre.settings.database_url)
        try:
            return await conn.fetchval("SELECT pg_postmaster_start_time()")  # type: ignore[no-any-return]
        finally:
            await conn.close()

    async def fault() -> int:
        before = await started_at()
        await asyncio.to_thread(centre.pg.crash_restart, 3.0)
        after = await started_at()
        assert after > before, f"PostgreSQL did not restart (started {before}, then {after})"
        return 1

    await drill(centre, "restart PostgreSQL (crash)", fault)


async def test_restart_redis_empty(centre: Centre) -> None:
    async def fault() -> int:
        before, after = (await centre.cache.info("server"))["run_id"], None
        await centre.cache.set(SENTINEL, "before the restart")
        await asyncio.to_thread(centre.redis.restart_empty, 2.0)
        for _ in range(50):  # our own client reconnects to the new server
            with contextlib.suppress(*TRANSIENT):
                after = (await centre.cache.info("server"))["run_id"]
                break
            await asyncio.sleep(0.1)
        assert after != before, "Redis did not restart"
        assert await centre.cache.get(SENTINEL) is None, "Redis came back with its data"
        return 1

    await drill(centre, "restart Redis (empty)", fault)


async def test_restart_the_broker_empty(centre: Centre) -> None:
    async def fault() -> int:
        await sentinel_record(centre.settings.kafka_bootstrap, send=True)
        await asyncio.to_thread(centre.broker.restart_empty, 1.0)
        await create_topics(centre.settings)  # what the supervisor of `./centre run` does
        assert await sentinel_record(centre.settings.kafka_bootstrap) == 0, "the broker kept its logs"
        return 1

    await drill(centre, "restart broker (empty)", fault)


async def test_two_streams_workers_lose_one_for_good(centre: Centre) -> None:
    async def fault() -> int:
        pid = centre.sup.kill("streams-2", keep_down=True)  # the survivor takes its partitions
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert centre.sup.pid("streams-2") is None and centre.sup.pid("streams-1") is not None
        return 1

    try:
        await drill(centre, "2 workers, 1 killed (rebalance)", fault)
    finally:
        centre.sup.restart("streams-2")


def test_a_kill_of_a_service_that_is_not_running_is_an_error(centre: Centre) -> None:
    """A drill that killed nothing would prove nothing (it used to pass silently)."""
    with pytest.raises(LookupError, match="no running service"):
        centre.sup.kill("no-such-service")


SENTINEL = "drill:sentinel"  # a Redis key, and (as drill.sentinel) a topic, that a restart empties
SENTINEL_TOPIC = "drill.sentinel"


async def sentinel_record(bootstrap: str, send: bool = False) -> int:
    """With `send`, put one record on the sentinel topic; returns how many it holds (a broker
    that lost its logs holds none)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        if send:
            await producer.send_and_wait(SENTINEL_TOPIC, b"before the restart")
        partitions = await producer.partitions_for(SENTINEL_TOPIC)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(SENTINEL_TOPIC, p) for p in partitions]
        ends = await consumer.end_offsets(tps)
        return sum(ends.values())
    finally:
        await consumer.stop()
