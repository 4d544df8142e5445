"""Sockets follow their session: an idle-expired or logged-out session closes its sockets (error
`session_expired`, close 4401) within the check interval; commands keep a session alive."""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
from websockets.exceptions import ConnectionClosed

from console.auth import Sessions
from console.live import CLOSE_UNAUTHORISED, LiveLimits
from tests.console.live.harness import expect_delta, live_centre


def test_the_check_interval_follows_the_session_ttl() -> None:
    assert LiveLimits.for_session_ttl(8 * 3600).session_check_s == 30.0
    assert LiveLimits.for_session_ttl(60).session_check_s == 20.0
    assert LiveLimits.for_session_ttl(3).session_check_s == 1.0


async def test_logout_closes_the_users_sockets_within_the_interval(pg: asyncpg.Pool) -> None:
    async with live_centre(pg, session_check_s=0.3) as centre:
        healthy = await centre.open("viewer")
        console = await centre.open("operator")
        phone = await centre.open("responder")
        started = time.monotonic()
        assert await centre.sessions.logout(centre.tokens["operator"])
        assert await centre.sessions.logout(centre.tokens["responder"])
        for peer in (console, phone):
            code, frames = await peer.closed_with(3)
            assert code == CLOSE_UNAUTHORISED
            assert frames[-1]["type"] == "error" and frames[-1]["code"] == "session_expired"
        assert time.monotonic() - started < 2.0
        assert centre.hub.client_count == 1
        await expect_delta(healthy, centre)
        await healthy.close()


async def test_a_command_after_logout_is_refused_at_once(pg: asyncpg.Pool) -> None:
    async with live_centre(pg, session_check_s=60) as centre:  # the periodic check never runs here
        console = await centre.open("operator")
        assert await centre.sessions.logout(centre.tokens["operator"])
        await console.send({"type": "dispatch", "id": "d1", "incident_id": centre.incident_a})
        code, frames = await console.closed_with()
        assert code == CLOSE_UNAUTHORISED
        assert frames[-1] == {
            "type": "error",
            "id": "d1",
            "code": "session_expired",
            "message": "your session has ended: log in again",
        }
        assert centre.commands == []


async def test_idle_sessions_expire_and_commands_count_as_use(pg: asyncpg.Pool) -> None:
    async with live_centre(pg, ttl_s=2, session_check_s=0.25, snapshot_every_s=0) as centre:
        busy = await centre.open("operator")
        idle = await centre.open("commander")
        pinging = await centre.open("viewer")
        started = time.monotonic()
        while time.monotonic() - started < 3.5:  # well past the 2 s idle lifetime
            assert (await busy.command("snapshot"))["type"] == "ack"
            await busy.next_of("snapshot")
            with contextlib.suppress(ConnectionClosed):
                await pinging.send({"type": "ping", "id": "keepalive"})  # not use: it dies anyway
            await asyncio.sleep(0.4)
        for peer in (idle, pinging):
            code, frames = await peer.closed_with(1)
            assert code == CLOSE_UNAUTHORISED and frames[-1]["code"] == "session_expired"
        assert (await busy.command("ping"))["type"] == "ack"
        assert centre.hub.client_count == 1
        await busy.close()


async def test_a_session_store_outage_closes_nobody(pg: asyncpg.Pool, database_url: str) -> None:
    async with live_centre(pg, session_check_s=60) as centre:
        console = await centre.open("operator")
        gone = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
        await gone.close()  # a real pool whose database cannot be reached any more
        centre.hub._sessions = Sessions(gone, 3600)
        assert await centre.hub.check_sessions() == 0
        assert (await console.command("ping"))["type"] == "ack"
        unavailable = await console.command("dispatch", incident_id=centre.incident_a)
        assert unavailable["code"] == "unavailable" and centre.commands == []
        await console.close()
