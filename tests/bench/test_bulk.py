"""The scale scenarios' bulk loads (`bench.bulk`), run small on a database of their own: the rows
they write for a million incidents have the shape the centre itself would have written, so a
small batch is checked row by row: unique ids in the intake's format, reports valid against the
intake contracts, records valid as enriched incidents, places inside their grids, timelines and
tasks that match each incident's status.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from bench.bulk import (
    HOTLINE_LIMITS,
    INCIDENT_TABLES,
    RESPONDER_PREFIX,
    TABLES,
    LoadTimes,
    load_incidents,
    load_responders,
    record_template,
    table_counts,
)
from console.intake import new_tracking_no
from contracts.categories import CAMERA_ALARM_TYPES, CATEGORIES
from contracts.geo import GridIndex
from contracts.incidents import EnrichedIncident
from contracts.reports import SOURCE_ID_FIELD, SOURCE_MODELS, AppReport, CameraAlarm, HotlineTicket
from devtools.city import MAX_LAT, MAX_LON, MIN_LAT, MIN_LON, City, generate_city
from devtools.seed import seed_postgres
from infra.db import drop_database, ensure_database, migrate

RESPONDERS = 60
INCIDENTS = 600
OPEN = 12
# the timeline of each status: the state machine's steps up to it
STEPS = {
    "new": ["file"],
    "dispatched": ["file", "dispatch"],
    "in_progress": ["file", "dispatch", "start"],
    "closed": ["file", "dispatch", "start", "resolve", "verify_pass", "close"],
    "cancelled": ["file", "cancel"],
}


@pytest.fixture(scope="module")
def city() -> City:
    return generate_city()


@pytest.fixture(scope="module")
async def loaded(city: City) -> AsyncIterator[tuple[asyncpg.Connection, dict[str, int], LoadTimes]]:
    """A private database: migrated, the demo city seeded, then the bulk loads; dropped after.
    Yields a plain connection (jsonb as text, as the loads use it), the counts before the loads
    and the loads' times."""
    base = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432")
    url = f"{base.rstrip('/')}/centre_test_bulk_{os.getpid()}"
    await drop_database(url)
    await ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        await seed_postgres(conn, city)
        before = await table_counts(conn)
        times = LoadTimes()
        assert await load_responders(conn, RESPONDERS, times) == RESPONDERS
        assert await load_incidents(conn, INCIDENTS, OPEN, times) == INCIDENTS
        yield conn, before, times
    finally:
        await conn.close()
        await drop_database(url)


Loaded = tuple[asyncpg.Connection, dict[str, int], LoadTimes]


async def test_the_loads_write_every_table_and_time_every_step(loaded: Loaded) -> None:
    conn, before, times = loaded
    after = await table_counts(conn)
    assert set(after) == set(TABLES) and set(INCIDENT_TABLES) <= set(TABLES)
    grown = {t: after[t] - before[t] for t in TABLES}
    assert grown["responders"] == grown["users"] == grown["responder_positions"] == RESPONDERS
    assert grown["incidents"] == grown["reports"] == grown["incident_reports"] == INCIDENTS
    assert grown["incident_events"] > INCIDENTS and 0 < grown["tasks"] < INCIDENTS
    assert {
        "responders: generate",
        "responders: registry",
        "incidents: incidents",
        "incidents: timelines",
        "incidents: keys, indexes, checks",
    } <= set(times.steps)
    assert all(s >= 0 for s in times.steps.values())
    assert times.total == pytest.approx(sum(times.steps.values()))


async def test_the_keys_and_indexes_dropped_for_the_load_are_back(loaded: Loaded) -> None:
    conn, _, _ = loaded
    keys = await conn.fetch(
        """SELECT conrelid::regclass::text AS tbl, contype::text FROM pg_constraint
            WHERE conrelid = ANY($1::text[]::regclass[]) AND contype IN ('p', 'f')""",
        list(INCIDENT_TABLES),
    )
    assert {r["tbl"] for r in keys if r["contype"] == "p"} == set(INCIDENT_TABLES)
    assert {r["tbl"] for r in keys if r["contype"] == "f"} >= {"incident_reports", "incident_events", "tasks"}


async def test_bulk_responders_are_registered_with_a_login_and_a_place(loaded: Loaded, city: City) -> None:
    conn, _, _ = loaded
    rows = await conn.fetch(
        """SELECT r.responder_id, r.name, r.kind, r.org, r.skills, r.grid_id, u.username, u.role,
                  u.password_hash, p.lon, p.lat
             FROM responders r JOIN users u ON u.responder_id = r.responder_id
             JOIN responder_positions p ON p.responder_id = r.responder_id
            WHERE r.responder_id LIKE $1 ORDER BY r.responder_id""",
        f"{RESPONDER_PREFIX}%",
    )
    assert [r["responder_id"] for r in rows] == [
        f"{RESPONDER_PREFIX}{n:06d}" for n in range(1, RESPONDERS + 1)
    ]
    demo_hash = await conn.fetchval("SELECT password_hash FROM users WHERE username = 'P-0001'")
    grids = {g.grid_id for g in city.grids}
    for r in rows:
        assert r["name"] and r["org"] and r["skills"]
        assert (r["username"], r["role"], r["password_hash"]) == (r["responder_id"], "responder", demo_hash)
        assert MIN_LON <= r["lon"] <= MAX_LON and MIN_LAT <= r["lat"] <= MAX_LAT
        assert (r["grid_id"] in grids) if r["kind"] == "grid_worker" else r["grid_id"] is None
    kinds = Counter(r["kind"] for r in rows)
    assert kinds == {
        "police": RESPONDERS // 10,
        "grid_worker": RESPONDERS // 5,
        "volunteer": RESPONDERS * 7 // 10,
    }


async def test_every_report_is_valid_against_its_intake_contract(loaded: Loaded, city: City) -> None:
    conn, _, _ = loaded
    rows = await conn.fetch(
        """SELECT r.tracking_no, r.source, r.source_id, r.payload::text AS payload, r.received_at,
                  r.incident_id, l.incident_id AS linked
             FROM reports r JOIN incident_reports l USING (tracking_no)
            WHERE r.source_id LIKE 'HIST-%'"""
    )
    assert len(rows) == INCIDENTS
    assert (
        len({r["tracking_no"] for r in rows})
        == len({(r["source"], r["source_id"]) for r in rows})
        == INCIDENTS
    )
    cameras = {c.camera_id for c in city.cameras}
    for r in rows:
        # the intake's tracking number: channel letter, Beijing date of receipt, 8 hex digits
        assert re.fullmatch(r"[CHA]\d{8}-[0-9A-F]{8}", r["tracking_no"]), r["tracking_no"]
        assert r["tracking_no"][:10] == new_tracking_no(r["source"], r["received_at"])[:10]
        assert r["incident_id"] == r["linked"] == f"INC-{r['tracking_no']}"
        report = SOURCE_MODELS[r["source"]].model_validate_json(r["payload"])
        assert getattr(report, SOURCE_ID_FIELD[r["source"]]) == r["source_id"]
        if isinstance(report, CameraAlarm):
            assert report.camera_id in cameras and report.alarm_type in CAMERA_ALARM_TYPES
        else:
            assert isinstance(report, HotlineTicket | AppReport)
            assert report.category in CATEGORIES
            assert MIN_LON <= report.lon <= MAX_LON and MIN_LAT <= report.lat <= MAX_LAT
    assert Counter(r["source"] for r in rows) == dict.fromkeys(("camera", "hotline", "app"), INCIDENTS // 3)


async def test_every_incident_record_is_an_enriched_incident_in_its_grid(loaded: Loaded, city: City) -> None:
    conn, _, _ = loaded
    rows = await conn.fetch(
        """SELECT incident_id, status, source, category, severity, lon, lat, grid_id, community_id,
                  record::text AS record
             FROM incidents
            WHERE incident_id IN (SELECT l.incident_id FROM incident_reports l
                                    JOIN reports r USING (tracking_no) WHERE r.source_id LIKE 'HIST-%')"""
    )
    assert len(rows) == INCIDENTS
    index = GridIndex(city.geo_grids())
    now = datetime.now(UTC)
    for r in rows:
        record = EnrichedIncident.model_validate_json(r["record"])
        assert record.incident_id == r["incident_id"] == f"INC-{record.tracking_no}"
        assert (record.source, record.category, record.severity) == (
            r["source"],
            r["category"],
            r["severity"],
        )
        assert record.category_label == CATEGORIES[r["category"]].label and record.title
        assert (record.location.lon, record.location.lat) == (r["lon"], r["lat"])
        assert record.location.grid_id == r["grid_id"] and record.location.community_id == r["community_id"]
        grid = index.locate(r["lon"], r["lat"])
        assert grid is not None and grid.grid_id == r["grid_id"], (r["incident_id"], r["lon"], r["lat"])
        assert set(record.nearest) == {"police", "grid_worker", "volunteer"}
        assert record.occurred_at < record.received_at < record.due_at
        assert now - timedelta(days=366) < record.received_at < now
        if r["source"] == "hotline":
            assert record.time_limit in HOTLINE_LIMITS and record.caller_phone
        if r["source"] == "camera":
            assert record.location.camera_id and record.camera_confidence is not None


async def test_statuses_timelines_and_tasks_agree(loaded: Loaded) -> None:
    conn, _, _ = loaded
    incidents = {
        r["incident_id"]: r
        for r in await conn.fetch(
            "SELECT incident_id, status, version, created_at FROM incidents WHERE incident_id IN "
            "(SELECT incident_id FROM reports WHERE source_id LIKE 'HIST-%')"
        )
    }
    statuses = Counter(r["status"] for r in incidents.values())
    assert statuses["new"] + statuses["dispatched"] + statuses["in_progress"] == OPEN
    assert statuses["closed"] + statuses["cancelled"] == INCIDENTS - OPEN
    assert statuses["cancelled"] == sum(1 for n in range(OPEN + 1, INCIDENTS + 1) if n % 50 == 0)

    events: dict[str, list[asyncpg.Record]] = {}
    for e in await conn.fetch(
        "SELECT incident_id, version, type, at FROM incident_events"
        " WHERE event_id LIKE 'hist:%' ORDER BY version"
    ):
        events.setdefault(e["incident_id"], []).append(e)
    assert set(events) == set(incidents)
    for iid, inc in incidents.items():
        timeline = events[iid]
        assert [e["type"] for e in timeline] == [f"incident.{step}" for step in STEPS[inc["status"]]], iid
        assert [e["version"] for e in timeline] == list(range(1, len(timeline) + 1))
        assert inc["version"] == len(timeline)
        times = [e["at"] for e in timeline]
        assert times == sorted(times), iid  # as the state machine writes them: verified after resolved

    tasks = await conn.fetch("SELECT incident_id, responder_id, state FROM tasks WHERE task_id LIKE 'hist:%'")
    by_incident = Counter(t["incident_id"] for t in tasks)
    assert max(by_incident.values()) == 1
    expected_state = {"closed": "done", "dispatched": "accepted", "in_progress": "on_scene"}
    assert set(by_incident) == {iid for iid, r in incidents.items() if r["status"] in expected_state}
    for t in tasks:
        assert t["state"] == expected_state[incidents[t["incident_id"]]["status"]]
    # one active task per responder: the open incidents' tasks are held by different responders
    active = [t["responder_id"] for t in tasks if t["state"] != "done"]
    assert active and len(set(active)) == len(active)


async def test_open_incidents_are_recent_and_the_rest_spread_over_the_year(loaded: Loaded) -> None:
    conn, _, _ = loaded
    rows = await conn.fetch(
        """SELECT i.status, now() - i.created_at AS age FROM incidents i
            WHERE incident_id IN (SELECT incident_id FROM reports WHERE source_id LIKE 'HIST-%')"""
    )
    open_ages = [r["age"] for r in rows if r["status"] in ("new", "dispatched", "in_progress")]
    old_ages = [r["age"] for r in rows if r["status"] in ("closed", "cancelled")]
    assert len(open_ages) == OPEN and len(old_ages) == INCIDENTS - OPEN
    assert all(timedelta(hours=1) <= a <= timedelta(days=3, hours=1, minutes=5) for a in open_ages)
    assert all(timedelta(days=4) <= a <= timedelta(days=365, minutes=5) for a in old_ages)
    # spread over the year, not bunched at one end
    assert min(old_ages) < timedelta(days=60) and max(old_ages) > timedelta(days=300)


def test_the_record_template_is_an_enriched_incident_with_the_nearest_of_each_kind() -> None:
    template = record_template(2)
    assert {k: len(v) for k, v in template["nearest"].items()} == {
        "police": 2,
        "grid_worker": 2,
        "volunteer": 2,
    }
    assert all(r["kind"] == kind for kind, rs in template["nearest"].items() for r in rs)
    assert template["own_grid_worker"] == template["nearest"]["grid_worker"][0]
    assert template["own_grid_worker"]["own_grid"] is True
    EnrichedIncident.model_validate(template)


async def test_load_times_add_up_repeated_steps() -> None:
    times = LoadTimes()

    async def step() -> int:
        return 7

    assert [await times.timed("vacuum analyze", step), await times.timed("vacuum analyze", step)] == [7, 7]
    assert list(times.steps) == ["vacuum analyze"] and times.total == times.steps["vacuum analyze"] >= 0


async def test_the_open_count_must_fit_the_count_and_the_roster(loaded: Loaded) -> None:
    conn, _, _ = loaded
    with pytest.raises(ValueError, match="open_count"):
        await load_incidents(conn, 5, 6, LoadTimes())
    with pytest.raises(ValueError, match="open incidents need as many responders"):
        await load_incidents(conn, 10**7, 10**6, LoadTimes())
