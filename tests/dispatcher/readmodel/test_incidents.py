"""The incidents as readers query them, from the real PostgreSQL: incidents filed and worked by the
real dispatcher service (with live state in the real Redis), and listings over rows of a rolled
back transaction so that no other test sees them."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from contracts.commands import Command
from contracts.incidents import EnrichedIncident
from contracts.states import ACTIVE_TASK_STATES, IncidentState
from dispatcher.adapters import store
from dispatcher.core.lifecycle import Event
from dispatcher.core.plan import load_plans
from dispatcher.readmodel import incidents
from dispatcher.readmodel.views import task_view
from dispatcher.service import IncidentService
from infra.livestate import LiveState
from tests.dispatcher.test_service import enriched

PLANS = load_plans()
ACTIVE = sorted(s.value for s in ACTIVE_TASK_STATES)
OPERATOR = "operator:duty"


@pytest.fixture
def live(redis: aioredis.Redis) -> LiveState:
    return LiveState(redis)


@pytest.fixture
def service(pool: asyncpg.Pool, live: LiveState) -> IncidentService:
    return IncidentService(pool, PLANS, live)


def command(action: str, incident_id: str, actor: str = OPERATOR, **kw: Any) -> Command:
    return Command(action, incident_id, f"{actor}:{uuid.uuid4().hex[:8]}", actor, datetime.now(UTC), **kw)


def somewhere(tag: str) -> EnrichedIncident:
    """An incident at a place of its own (no other test files or locates anything there)."""
    rec = enriched(tag)
    lon, lat = random.uniform(-170, -100), random.uniform(-45, -10)
    return rec.model_copy(update={"location": rec.location.model_copy(update={"lon": lon, "lat": lat})})


async def dispatched(
    pool: asyncpg.Pool, service: IncidentService, live: LiveState
) -> tuple[str, str, Command]:
    """An incident dispatched to the one grid worker standing next to it: (incident id,
    responder id, the dispatch command)."""
    tag = uuid.uuid4().hex[:8]
    rid, rec = f"G-RM-{tag}", somewhere(f"RM-{tag}")
    await pool.execute(
        "INSERT INTO responders (responder_id, name, kind, org) VALUES ($1, $2, 'grid_worker', $3)",
        rid,
        "网格员甲",
        "清晖社区",
    )
    await live.apply_roster(
        rid, {"kind": "grid_worker", "on_duty": True, "name": "网格员甲", "org": "清晖社区"}
    )
    await live.apply_position(rid, rec.location.lon + 0.001, rec.location.lat, 1, None)
    await service.file(rec)
    dispatch = command("dispatch", rec.incident_id)
    assert (await service.handle(dispatch)).refused is None
    return rec.incident_id, rid, dispatch


async def as_responder(pool: asyncpg.Pool, service: IncidentService, iid: str, rid: str, action: str) -> None:
    [task] = [t for t in await incidents.task_rows(pool, iid) if t["responder_id"] == rid]
    data = {"task_id": task["task_id"], "task_action": action}
    cmd = command(
        "task", iid, f"responder:{rid}", data=data, reason="不在附近" if action == "decline" else None
    )
    assert (await service.handle(cmd)).refused is None


async def insert_row(conn: asyncpg.Connection, status: str, severity: int, occurred_at: datetime) -> str:
    iid = f"INC-RM-{uuid.uuid4().hex[:10]}"
    await conn.execute(
        """INSERT INTO incidents (incident_id, status, source, category, severity, title, lon, lat,
               occurred_at, record, version, created_at, updated_at)
           VALUES ($1, $2, 'app', 'other', $3, '测试', 0, 0, $4, $5, 1, $4, $4)""",
        iid,
        status,
        severity,
        occurred_at,
        {},
    )
    return iid


async def test_the_timeline_whole_after_a_version_or_of_one_command(
    pool: asyncpg.Pool, service: IncidentService, live: LiveState
) -> None:
    iid, _, dispatch = await dispatched(pool, service, live)
    note = command("note", iid, data={"text": "已电话联系"})
    longer = Command("note", iid, f"{note.command_id}0", OPERATOR, note.at, data={"text": "再次联系"})
    for cmd in (note, longer):  # one command id is a prefix of the other's
        assert (await service.handle(cmd)).refused is None

    whole = await incidents.events_of(pool, iid)
    assert [e["version"] for e in whole] == list(range(1, len(whole) + 1))
    assert [e["type"] for e in whole[:3]] == ["incident.file", "incident.dispatch", "task.offer"]
    assert await incidents.events_of(pool, iid, after=2) == whole[2:]
    mine = await incidents.events_of(pool, iid, command_id=dispatch.command_id)
    assert [e["type"] for e in mine] == ["incident.dispatch", "task.offer"]
    [only] = await incidents.events_of(pool, iid, command_id=note.command_id)
    assert (only["type"], only["data"]["text"]) == ("incident.note", "已电话联系")
    assert await incidents.events_of(pool, iid, after=only["version"], command_id=note.command_id) == []
    row = await incidents.incident_row(pool, iid)
    assert row is not None and (row["status"], row["version"]) == ("dispatched", len(whole))
    assert await incidents.incident_row(pool, f"INC-none-{uuid.uuid4().hex}") is None


async def test_tasks_running_clocks_and_the_full_view(
    pool: asyncpg.Pool, service: IncidentService, live: LiveState
) -> None:
    iid, rid, _ = await dispatched(pool, service, live)
    [task] = await incidents.task_rows(pool, iid)
    assert (task["responder_id"], task["state"], task["kind"]) == (rid, "offered", "response")

    clocks = {c["step"]: c for c in await incidents.running_clocks(pool, iid)}
    assert {s: c["step_label"] for s, c in clocks.items()} == {"statutory": "办结", "accept": "接单"}
    accept = clocks["accept"]
    started = datetime.fromisoformat(accept["started_at"])
    ratio = PLANS.plan_for("garbage_overflow", 4).warning_ratio
    assert datetime.fromisoformat(accept["due_at"]) - started == timedelta(minutes=3)  # plans.yaml
    assert datetime.fromisoformat(accept["warn_at"]) - started == timedelta(minutes=3) * ratio

    row = await incidents.incident_row(pool, iid)
    assert row is not None
    view = await incidents.full_view(pool, row)
    assert view["status_label"] == "已派遣" and view["tasks"] == [task_view(task)]
    assert view["clocks"] == await incidents.running_clocks(pool, iid)

    await as_responder(pool, service, iid, rid, "accept")  # the accept clock stops, arrival starts
    steps = {(c["step"], c["task_id"]) for c in await incidents.running_clocks(pool, iid)}
    assert steps == {("statutory", None), ("arrive", task["task_id"])}


async def test_what_a_responder_holds_and_no_longer_holds_once_declined(
    pool: asyncpg.Pool, service: IncidentService, live: LiveState
) -> None:
    iid, rid, _ = await dispatched(pool, service, live)
    held_by = incidents.incident_rows_held_by
    assert [r["incident_id"] for r in await held_by(pool, rid, None, ACTIVE, 10, 0)] == [iid]
    assert [r["incident_id"] for r in await held_by(pool, rid, ["dispatched"], ACTIVE, 10, 0)] == [iid]
    assert await held_by(pool, rid, ["closed"], ACTIVE, 10, 0) == []
    assert await held_by(pool, rid, None, ACTIVE, 10, 1) == []  # past the one incident
    [mine] = await incidents.held_tasks(pool, rid, iid, ACTIVE)
    assert (mine["responder_id"], mine["state_label"]) == (rid, "待接单")
    assert await incidents.held_tasks(pool, f"G-other-{uuid.uuid4().hex[:6]}", iid, ACTIVE) == []

    await as_responder(pool, service, iid, rid, "decline")
    assert await incidents.held_tasks(pool, rid, iid, ACTIVE) == []
    assert await held_by(pool, rid, None, ACTIVE, 10, 0) == []
    with_declined = [*ACTIVE, "declined"]
    assert [r["incident_id"] for r in await held_by(pool, rid, None, with_declined, 10, 0)] == [iid]
    assert [t["state"] for t in await incidents.held_tasks(pool, rid, iid, with_declined)] == ["declined"]


async def test_a_merge_links_both_reports_and_each_report_knows_its_incident(
    pool: asyncpg.Pool, service: IncidentService
) -> None:
    first = somewhere(f"RL-{uuid.uuid4().hex[:8]}")
    second = enriched(f"RL-{uuid.uuid4().hex[:8]}").model_copy(update={"location": first.location})
    received = datetime.now(UTC) - timedelta(minutes=10)
    for n, rec in enumerate((second, first)):  # received in the opposite order to their filing
        await pool.execute(
            """INSERT INTO reports (tracking_no, source, source_id, payload, received_at)
               VALUES ($1, 'app', $1, $2, $3)""",
            rec.tracking_no,
            {"description": "垃圾桶满了"},
            received + timedelta(minutes=n),
        )
    await service.file(first)
    [absorb] = (await service.file(second)).forwards  # the same place and kind: merged
    assert (await service.handle(absorb)).refused is None

    both = await incidents.linked_reports(pool, first.incident_id)
    assert [r["tracking_no"] for r in both] == [second.tracking_no, first.tracking_no]  # by receipt
    assert (both[0]["source"], both[0]["payload"]) == ("app", {"description": "垃圾桶满了"})
    own = await incidents.linked_reports(pool, second.incident_id)
    assert [r["tracking_no"] for r in own] == [second.tracking_no]

    report = await incidents.report_by_tracking_no(pool, second.tracking_no)
    assert report is not None and report["incident_id"] == second.incident_id
    assert (report["refused_at"], report["refused_stage"], report["refused_reason"]) == (None, None, None)
    assert await incidents.report_by_tracking_no(pool, f"TR-none-{uuid.uuid4().hex}") is None


async def test_open_incidents_come_most_severe_then_oldest_first(conn: asyncpg.Connection) -> None:
    t = datetime(1901, 1, 1, tzinfo=UTC)  # older than anything else stored: these come first
    hour = timedelta(hours=1)
    for status in ("closed", "cancelled", "merged"):
        await insert_row(conn, status, 1, t)
    later = await insert_row(conn, "new", 1, t + 3 * hour)
    earlier = await insert_row(conn, "reopened", 1, t + hour)
    middle = await insert_row(conn, "resolved", 1, t + 2 * hour)
    less_severe = await insert_row(conn, "dispatched", 2, t)
    rows = await incidents.open_incident_rows(conn, limit=3)
    assert [r["incident_id"] for r in rows] == [earlier, middle, later]
    ids = [r["incident_id"] for r in await incidents.open_incident_rows(conn)]
    assert less_severe in ids and ids.index(less_severe) > ids.index(later)


async def test_incidents_page_newest_first_or_by_status_most_severe_first(conn: asyncpg.Connection) -> None:
    future = datetime(9000, 1, 1, tzinfo=UTC)  # newer than anything else stored: these come first
    hour = timedelta(hours=1)
    newest = [
        await insert_row(conn, s, 4, future + n * hour) for n, s in enumerate(("new", "closed", "merged"))
    ]
    newest.reverse()
    assert [r["incident_id"] for r in await incidents.incident_rows(conn, None, 2, 0)] == newest[:2]
    assert [r["incident_id"] for r in await incidents.incident_rows(conn, None, 2, 1)] == newest[1:]

    t = datetime(1901, 1, 1, tzinfo=UTC)
    cancelled = await insert_row(conn, "cancelled", 1, t + hour)
    merged = await insert_row(conn, "merged", 1, t)
    await insert_row(conn, "closed", 1, t)
    rows = await incidents.incident_rows(conn, ["cancelled", "merged"], 2, 0)
    assert [r["incident_id"] for r in rows] == [merged, cancelled]
    assert [r["incident_id"] for r in await incidents.incident_rows(conn, ["cancelled", "merged"], 1, 1)] == [
        cancelled
    ]
    assert {r["status"] for r in await incidents.incident_rows(conn, ["cancelled"], 50, 0)} == {"cancelled"}


async def test_a_rating_counts_only_since_the_last_closing(conn: asyncpg.Connection) -> None:
    t = datetime.now(UTC) - timedelta(days=1)
    iid = await insert_row(conn, "closed", 4, t)
    tracking_no = f"TR-RM-{uuid.uuid4().hex[:8]}"
    await conn.execute(
        "INSERT INTO reports (tracking_no, source, source_id, payload) VALUES ($1, 'app', $1, '{}')",
        tracking_no,
    )

    async def rate(at: datetime) -> None:
        await conn.execute(
            """INSERT INTO feedback (feedback_id, incident_id, tracking_no, satisfied, fixed, at)
               VALUES ($1, $2, $3, true, true, $4)""",
            uuid.uuid4().hex,
            iid,
            tracking_no,
            at,
        )

    async def close(version: int, at: datetime) -> None:
        closing = ("incident.close", "system:dispatcher", at, IncidentState.CLOSED, True, None, {})
        await store.append_events(conn, [Event(f"c-{uuid.uuid4().hex}#0", iid, version, *closing)])

    await rate(t)
    assert not await incidents.rated_since_closed(conn, iid, tracking_no)  # never closed
    await close(1, t + timedelta(hours=1))
    assert not await incidents.rated_since_closed(conn, iid, tracking_no)  # rated before the closing
    await rate(t + timedelta(hours=2))
    assert await incidents.rated_since_closed(conn, iid, tracking_no)
    assert not await incidents.rated_since_closed(conn, iid, f"TR-other-{uuid.uuid4().hex[:6]}")
    await close(2, t + timedelta(hours=3))  # reopened and closed again: not rated since
    assert not await incidents.rated_since_closed(conn, iid, tracking_no)
