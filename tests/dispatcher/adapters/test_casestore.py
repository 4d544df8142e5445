"""Cases saved to and loaded from the real PostgreSQL: whatever the pure core decides, saved with
`save_outcome`, loads back as the very case it decided, at every step of the closed loop.

Each test works inside a transaction it rolls back, so its incidents never reach other tests.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg

from contracts.commands import Command
from contracts.kinds import eta_seconds
from dispatcher.adapters import casestore, store
from dispatcher.core.case import Case, Context, Effect, Outcome, SetResponderStatus, decide, start_case
from dispatcher.core.clock import statutory_limit, timers_for
from dispatcher.core.lifecycle import Action, transition
from dispatcher.core.plan import load_plans
from dispatcher.core.recommend import Available
from dispatcher.service import SYSTEM_ACTOR
from tests.dispatcher.test_service import enriched

PLAN = load_plans().plan_for("garbage_overflow", 4)  # one grid worker
OPERATOR = "operator:duty"


async def grid_worker(conn: asyncpg.Connection) -> Available:
    rid = f"G-CS-{uuid.uuid4().hex[:8]}"
    await conn.execute(
        "INSERT INTO responders (responder_id, name, kind, org) VALUES ($1, $2, 'grid_worker', $3)",
        rid,
        "网格员甲",
        "清晖社区",
    )
    return Available(
        rid,
        "网格员甲",
        "grid_worker",
        "清晖社区",
        frozenset(),
        420.0,
        eta_seconds("grid_worker", 420.0),
        False,
    )


async def filed(conn: asyncpg.Connection) -> tuple[Case, str]:
    """A filed incident with its first clocks, saved as the service files it; and its report."""
    rec = enriched(f"CS-{uuid.uuid4().hex[:8]}")
    await conn.execute(
        "INSERT INTO reports (tracking_no, source, source_id, payload) VALUES ($1, 'app', $1, '{}')",
        rec.tracking_no,
    )
    cmd = Command(Action.FILE, rec.incident_id, f"{rec.incident_id}:filed", SYSTEM_ACTOR, rec.enriched_at)
    decision = transition(None, cmd)
    await store.insert_incident(conn, rec, decision.incident)
    await store.append_events(conn, decision.events)
    limit = statutory_limit(rec.source, rec.time_limit)
    case, effects = start_case(casestore.new_case(rec, decision.incident), PLAN, limit, rec.enriched_at)
    assert await casestore.save_effects(conn, case, effects, rec.enriched_at, None) == []  # all in PostgreSQL
    return case, rec.tracking_no


async def step(
    conn: asyncpg.Connection, case: Case, cmd: Command, ctx: Context
) -> tuple[Outcome, list[Effect]]:
    """Decide, save, and check the case loads back exactly as decided."""
    outcome = decide(case, cmd, ctx)
    later = await casestore.save_outcome(conn, outcome)
    assert await casestore.load_case(conn, case.incident.incident_id) == outcome.case, cmd.action
    return outcome, later


def command(case: Case, action: str, actor: str = OPERATOR, minutes: int = 1, **kw: Any) -> Command:
    at = case.incident.updated_at + timedelta(minutes=minutes)
    return Command(action, case.incident.incident_id, f"{actor}:{uuid.uuid4().hex[:8]}", actor, at, **kw)


def task(case: Case, rid: str, action: str, **data: Any) -> Command:
    [info] = [t for t in case.active() if t.task.responder_id == rid]
    return command(
        case, "task", f"responder:{rid}", data={"task_id": info.task.task_id, "task_action": action, **data}
    )


async def test_a_filed_case_loads_back_with_its_running_clocks_and_their_timers(
    conn: asyncpg.Connection,
) -> None:
    case, _ = await filed(conn)
    assert await casestore.load_case(conn, case.incident.incident_id) == case
    assert sorted(c.step for c in case.clocks) == ["dispatch", "statutory"]
    timers = await conn.fetch("SELECT timer_id FROM timers WHERE incident_id = $1", case.incident.incident_id)
    assert {t["timer_id"] for t in timers} == {t.timer_id for c in case.clocks for t in timers_for(c)}
    assert await casestore.load_case(conn, f"INC-none-{uuid.uuid4().hex}") is None


async def test_the_closed_loop_round_trips_through_save_outcome(conn: asyncpg.Connection) -> None:
    case, tracking_no = await filed(conn)
    iid = case.incident.incident_id
    worker = await grid_worker(conn)
    rid, ctx = worker.responder_id, Context(PLAN, [worker])

    dispatched, later = await step(conn, case, command(case, "dispatch"), ctx)
    assert later == [SetResponderStatus(rid, "busy")]  # the rest is in PostgreSQL already
    offered = await conn.fetchrow("SELECT * FROM tasks WHERE incident_id = $1", iid)
    assert (offered["responder_id"], offered["responder_name"], offered["org"], offered["state"]) == (
        rid,
        "网格员甲",
        "清晖社区",
        "offered",
    )
    assert (offered["distance_m"], offered["eta_s"], offered["round"]) == (420.0, worker.eta_s, 0)
    assert await casestore.active_tasks_of(conn, [rid, "G-nobody"]) == {rid: {iid}}

    case = dispatched.case
    accepted, _ = await step(conn, case, task(case, rid, "accept"), ctx)
    accept_clock = await conn.fetchrow("SELECT * FROM clocks WHERE incident_id = $1 AND step = 'accept'", iid)
    assert accept_clock["stopped_at"] == accepted.events[-1].at
    pending = await conn.fetchval(
        "SELECT count(*) FROM timers WHERE clock_id = $1 AND cancelled_at IS NULL", accept_clock["clock_id"]
    )
    assert pending == 0  # the accept clock's warning and overdue timers are cancelled

    case = accepted.case
    on_scene, _ = await step(conn, case, task(case, rid, "on_scene"), ctx)
    case = on_scene.case
    photo = "https://photos.example/after.jpg"
    done, _ = await step(conn, case, task(case, rid, "done", note="已清运", photo_urls=[photo]), ctx)
    response = await conn.fetchrow("SELECT * FROM tasks WHERE task_id = $1", offered["task_id"])
    assert (response["state"], response["note"], response["photo_urls"]) == ("done", "已清运", [photo])
    assert response["accepted_at"] is not None and response["finished_at"] is not None

    case = done.case  # resolved: the same grid worker is offered the check
    for action, data in (("accept", {}), ("on_scene", {}), ("done", {"passed": True})):
        outcome, _ = await step(conn, case, task(case, rid, action, **data), ctx)
        case = outcome.case
    row = await conn.fetchrow("SELECT * FROM incidents WHERE incident_id = $1", iid)
    assert (row["status"], row["version"]) == ("closed", case.version)
    milestones = ("dispatched_at", "first_accepted_at", "resolved_at", "closed_at")
    assert all(row[m] is not None for m in milestones)
    assert row["dispatched_at"] <= row["first_accepted_at"] <= row["resolved_at"] <= row["closed_at"]
    assert case.clocks == () and await casestore.active_tasks_of(conn, [rid]) == {}

    feedback = {
        "tracking_no": tracking_no,
        "fixed": False,
        "satisfied": False,
        "rating": 2,
        "comment": "还有",
    }
    reopened, _ = await step(conn, case, command(case, "feedback", "resident:1", data=feedback), ctx)
    row = await conn.fetchrow("SELECT status, round, closed_at FROM incidents WHERE incident_id = $1", iid)
    assert tuple(row) == ("reopened", 1, None)
    rated = await conn.fetchrow("SELECT * FROM feedback WHERE incident_id = $1", iid)
    assert rated["feedback_id"] == reopened.events[-1].event_id
    assert (rated["tracking_no"], rated["fixed"], rated["satisfied"], rated["rating"], rated["comment"]) == (
        tracking_no,
        False,
        False,
        2,
        "还有",
    )
    assert [c.step for c in reopened.case.clocks] == ["dispatch"]  # a new round, a new dispatch clock
