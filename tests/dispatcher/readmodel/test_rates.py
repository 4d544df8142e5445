"""三率 read from the real PostgreSQL and counted: the figures match a hand count."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from dispatcher.core.plan import load_plans
from dispatcher.readmodel.rates import rates

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 Beijing time


async def scenario(pg: asyncpg.Pool) -> tuple[str, str, str]:
    """Five incidents in two grids (two excluded), three tasks in two organisations, two ratings."""
    tag = uuid.uuid4().hex[:6]
    ga, gb, org_x, org_y = f"GA-{tag}", f"GB-{tag}", f"甲所-{tag}", f"乙队-{tag}"
    # Literal, from plans.yaml (not the code's own sum): "other" at level IV takes the defaults,
    # 30 minutes to dispatch and 30 to accept, so a response is on time within the hour; an offer
    # is accepted in time within 5 minutes.
    respond = timedelta(hours=1)
    accept = timedelta(minutes=5)
    rows = [  # id, grid, first_accepted, closed, due, status
        ("I1", ga, T0 + respond / 6, T0 + timedelta(hours=1), T0 + timedelta(hours=24), "closed"),
        ("I2", ga, T0 + respond * 2, T0 + timedelta(hours=30), T0 + timedelta(hours=24), "closed"),
        ("I3", gb, None, None, T0 + timedelta(hours=24), "new"),
        ("I4", gb, T0 + timedelta(minutes=1), None, T0 + timedelta(hours=24), "cancelled"),
        ("I5", gb, None, None, T0 + timedelta(hours=24), "merged"),
    ]
    for rid, kind in ((f"R1-{tag}", "police"), (f"R2-{tag}", "volunteer")):
        await pg.execute(
            "INSERT INTO responders (responder_id, name, kind, org) VALUES ($1, '测试', $2, 'x')", rid, kind
        )
    for name, grid, accepted, closed, due, status in rows:
        iid = f"INC-{name}-{tag}"
        await pg.execute(
            """INSERT INTO incidents (incident_id, status, source, category, severity, title, lon, lat,
                   grid_id, community_id, occurred_at, due_at, record, version, created_at, updated_at,
                   first_accepted_at, closed_at)
               VALUES ($1, $2, 'app', 'other', 4, '测试', 106.5, 29.6,
                       $3, $4, $5, $6, $7, 1, $5, $5, $8, $9)""",
            iid,
            status,
            grid,
            f"C-{grid}",
            T0,
            due,
            orjson.dumps({}).decode(),
            accepted,
            closed,
        )
        await pg.execute(
            "INSERT INTO reports (tracking_no, source, source_id, payload) VALUES ($1, 'app', $1, '{}')",
            f"TR-{name}-{tag}",
        )
    tasks = [  # incident, responder, org, offered, accepted
        ("I1", f"R1-{tag}", org_x, T0 + timedelta(minutes=1), T0 + timedelta(minutes=1) + accept / 2),
        ("I2", f"R1-{tag}", org_x, T0 + timedelta(hours=1), T0 + timedelta(hours=1) + accept * 2),
        ("I2", f"R2-{tag}", org_y, T0 + timedelta(hours=1), None),
    ]
    for n, (name, rid, org, offered, accepted) in enumerate(tasks):
        await pg.execute(
            """INSERT INTO tasks (task_id, incident_id, responder_id, responder_name, responder_kind, kind,
                   state, version, org, offered_at, accepted_at, updated_at)
               VALUES ($1, $2, $3, '测试', 'police', 'response', 'done', 3, $4, $5, $6, $5)""",
            f"T{n}-{tag}",
            f"INC-{name}-{tag}",
            rid,
            org,
            offered,
            accepted,
        )
    for name, satisfied in (("I1", True), ("I2", False)):
        await pg.execute(
            """INSERT INTO feedback (feedback_id, incident_id, tracking_no, satisfied, fixed, at)
               VALUES ($1, $2, $3, $4, true, $5)""",
            f"F-{name}-{tag}",
            f"INC-{name}-{tag}",
            f"TR-{name}-{tag}",
            satisfied,
            T0 + timedelta(hours=40),
        )
    return ga, gb, tag


@pytest.fixture
async def pool(pg: asyncpg.Pool, database_url: str) -> asyncpg.Pool:
    return pg


async def test_three_rates_match_a_hand_count(pool: asyncpg.Pool) -> None:
    ga, gb, tag = await scenario(pool)
    plans, since, until, now = (
        load_plans(),
        T0 - timedelta(hours=1),
        T0 + timedelta(hours=1),
        T0 + timedelta(days=3),
    )

    by_grid = {r.key: r for r in await rates(pool, plans, "grid", since, until, now) if r.key in (ga, gb)}
    a, b = by_grid[ga], by_grid[gb]
    # GA: I1 responded in time, closed by its due time, satisfied; I2 late on all three.
    assert (a.filed, a.responded, a.resolved, a.rated, a.satisfied) == (2, 1, 1, 2, 1)
    assert (a.response_rate, a.resolution_rate, a.satisfaction_rate) == (0.5, 0.5, 0.5)
    # GB: only I3 counts (I4 cancelled, I5 merged); nothing done, nobody rated.
    assert (b.filed, b.responded, b.resolved, b.rated) == (1, 0, 0, 0)
    assert (b.response_rate, b.resolution_rate, b.satisfaction_rate) == (0.0, 0.0, None)

    by_org = {r.key: r for r in await rates(pool, plans, "org", since, until, now) if r.key.endswith(tag)}
    x, y = by_org[f"甲所-{tag}"], by_org[f"乙队-{tag}"]
    assert (x.tasks_offered, x.tasks_accepted, x.response_rate) == (2, 1, 0.5)
    assert (y.tasks_offered, y.tasks_accepted, y.response_rate) == (1, 0, 0.0)

    day = {r.key: r for r in await rates(pool, plans, "day", since, until, now)}["2026-11-20"]
    assert day.filed >= 3  # other tests' incidents may share the day; ours are three of them

    # Before anything was rated or closed, nothing counts as such (as of `now`).
    early = {r.key: r for r in await rates(pool, plans, "grid", since, until, T0 + timedelta(minutes=30))}
    assert (early[ga].resolved, early[ga].rated) == (0, 0)
