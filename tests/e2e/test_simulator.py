"""The demo city's simulator against the real stack: its reports arrive through the intake, its
operator bot dispatches, its responders accept, travel, finish and verify, unattended.

Named to run after the other e2e tests (they share one stack); it cancels what it leaves open."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import orjson
import pytest

from devtools.simulator import SimConfig, Simulator
from infra.settings import Settings
from tests.e2e.conftest import Console

pytestmark = [pytest.mark.e2e, pytest.mark.random_places]

RUN_AT_MOST_S = 35.0


async def test_the_simulator_runs_the_loop_unattended(
    stack: Settings, token: str, stack_pg: asyncpg.Pool
) -> None:
    config = SimConfig(
        reports_per_min=120,
        auto_dispatch=True,
        dispatch_delay_s=0.5,
        speedup=200,  # a volunteer walks 1 km in ~4 s, work on scene takes ~1-3 s
        max_sessions=40,
        walkers=50,
        walk_interval_s=2,
        position_interval_s=0.5,
        think_s=(0.1, 0.4),  # the e2e plans expire offers after 3 s
        seed=2026,
    )
    sim = Simulator(stack, config)
    stop = asyncio.Event()
    started = time.monotonic()
    runner = asyncio.create_task(sim.run(stop))
    try:
        while time.monotonic() - started < RUN_AT_MOST_S and not runner.done():
            s = sim.stats
            if s.reports >= 5 and s.dispatches and s.accepted and s.done and s.closed_seen:
                break
            await asyncio.sleep(0.5)
    finally:
        stop.set()
        stats = await asyncio.wait_for(runner, 20)  # stops cleanly, every task and socket closed
    print(f"simulator ran {time.monotonic() - started:.1f}s: {sim.summary()}")
    assert not sim.sessions and not sim._tasks

    try:
        assert stats.reports >= 5 and stats.report_errors == 0
        rows = await stack_pg.fetch(
            "SELECT source, incident_id FROM reports WHERE source_id LIKE 'SIM-%' AND source_id LIKE $1",
            f"%-{sim.reports.run_id}-%",
        )
        # every report went through the real intake (one may have been in flight at the stop)
        assert stats.reports <= len(rows) <= stats.reports + 1
        assert len({r["source"] for r in rows}) >= 2
        ids = [r["incident_id"] for r in rows if r["incident_id"]]
        assert ids, "no report became an incident"
        events = await stack_pg.fetch(
            "SELECT incident_id, type, actor FROM incident_events WHERE incident_id = ANY($1::text[])", ids
        )
        types = [e["type"] for e in events]
        assert stats.dispatches > 0 and "incident.dispatch" in types
        assert any(e["type"] == "incident.dispatch" and "duty" in str(e["actor"]) for e in events)
        assert stats.accepted > 0 and "task.accept" in types
        accepted = await stack_pg.fetchval(
            "SELECT count(*) FROM tasks WHERE incident_id = ANY($1::text[]) AND accepted_at IS NOT NULL", ids
        )
        assert accepted > 0
        done = await stack_pg.fetch(
            "SELECT note, photo_urls FROM tasks WHERE incident_id = ANY($1::text[]) AND state = 'done'"
            " AND kind = 'response'",
            ids,
        )
        assert done and all(
            d["note"] and d["photo_urls"][0].startswith("http://sim.example/p/") for d in done
        )
        finished = await stack_pg.fetchval(
            "SELECT count(*) FROM incident_events WHERE incident_id = ANY($1::text[])"
            " AND type IN ('incident.resolve', 'incident.close')",
            ids,
        )
        assert finished > 0 and (stats.resolved_seen | stats.closed_seen)
        assert stats.positions > 0  # travelling and walking responders posted their positions
    finally:
        await _cancel_open(stack, token, stack_pg, sim.reports.run_id)


async def _cancel_open(stack: Settings, token: str, pg: asyncpg.Pool, run_id: str) -> None:
    """Cancel the simulator's open incidents: their offer timers must not run on in the background."""
    open_ids = [
        r["incident_id"]
        for r in await pg.fetch(
            """SELECT DISTINCT i.incident_id FROM reports r JOIN incidents i ON i.incident_id = r.incident_id
                WHERE r.source_id LIKE $1 AND i.status NOT IN ('closed', 'cancelled', 'merged')""",
            f"SIM-%-{run_id}-%",
        )
    ]
    if not open_ids:
        return
    console = await Console.open(stack, token)
    try:
        for n, iid in enumerate(open_ids):
            await console.ws.send(
                orjson.dumps(
                    {
                        "type": "cancel",
                        "id": f"sim-cleanup-{n}",
                        "incident_id": iid,
                        "reason": "测试结束，撤销",
                    }
                ).decode()
            )
        await console.drain(1.5)
    finally:
        await console.close()
