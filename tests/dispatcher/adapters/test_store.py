"""The incident store against the real PostgreSQL: idempotency marks, filing, the timeline, place
locks, the duplicate check's search and the reports of merges and splits.

Most tests work inside a transaction they roll back, so their incidents never reach other tests.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from contracts.commands import Command
from contracts.incidents import EnrichedIncident
from dispatcher.adapters import store
from dispatcher.core.lifecycle import Action, Event, Incident, transition
from dispatcher.core.merge import bbox_for
from dispatcher.service import SYSTEM_ACTOR
from tests.dispatcher.test_service import enriched


def record(
    lon: float | None = None, lat: float | None = None, occurred_at: datetime | None = None
) -> EnrichedIncident:
    rec = enriched(f"ST-{uuid.uuid4().hex[:8]}")
    update: dict[str, object] = {}
    if lon is not None and lat is not None:
        update["location"] = rec.location.model_copy(update={"lon": lon, "lat": lat})
    if occurred_at is not None:
        update["occurred_at"] = occurred_at
    return rec.model_copy(update=update)


async def file(conn: asyncpg.Connection, rec: EnrichedIncident, status: str | None = None) -> Incident:
    """Insert the incident and its incident.file event, as filing does; `status` then overrides it."""
    cmd = Command(Action.FILE, rec.incident_id, f"{rec.incident_id}:filed", SYSTEM_ACTOR, rec.enriched_at)
    decision = transition(None, cmd)
    await store.insert_incident(conn, rec, decision.incident)
    await store.append_events(conn, decision.events)
    if status is not None:
        await conn.execute("UPDATE incidents SET status = $2 WHERE incident_id = $1", rec.incident_id, status)
    return decision.incident


async def add_report(conn: asyncpg.Connection, tracking_no: str, refused: bool = False) -> None:
    await conn.execute(
        """INSERT INTO reports (tracking_no, source, source_id, payload,
                                refused_at, refused_stage, refused_reason)
           VALUES ($1, 'app', $1, '{}', $2, $3, $4)""",
        tracking_no,
        datetime.now(UTC) if refused else None,
        "normalise" if refused else None,
        "bad time" if refused else None,
    )


async def links(conn: asyncpg.Connection, incident_id: str) -> set[str]:
    rows = await conn.fetch("SELECT tracking_no FROM incident_reports WHERE incident_id = $1", incident_id)
    return {r["tracking_no"] for r in rows}


async def test_an_input_event_is_marked_processed_once(pool: asyncpg.Pool) -> None:
    event_id = f"evt-{uuid.uuid4().hex}"
    async with pool.acquire() as c:
        async with c.transaction():
            assert await store.mark_processed(c, event_id, "INC-x") is True
            assert await store.mark_processed(c, event_id, "INC-x") is False  # a replay
        tx = c.transaction()
        await tx.start()
        other = f"evt-{uuid.uuid4().hex}"
        assert await store.mark_processed(c, other, "INC-x") is True
        await tx.rollback()  # the effects failed: the input is not processed after all
        assert await store.mark_processed(c, other, "INC-x") is True


async def test_a_filed_incident_reads_back_as_current_and_files_its_report(conn: asyncpg.Connection) -> None:
    rec = record()
    await add_report(conn, rec.tracking_no, refused=True)  # refused once, filed on a replay
    incident = await file(conn, rec)
    assert await store.current(conn, rec.incident_id) == incident
    assert await store.current(conn, f"INC-none-{uuid.uuid4().hex}") is None
    row = await conn.fetchrow("SELECT * FROM incidents WHERE incident_id = $1", rec.incident_id)
    assert (row["status"], row["version"], row["lon"], row["lat"]) == (
        "new",
        1,
        rec.location.lon,
        rec.location.lat,
    )
    assert row["record"]["tracking_no"] == rec.tracking_no
    assert set(row["recommended"]) == {"nearest", "own_grid_worker"}
    report = await conn.fetchrow("SELECT * FROM reports WHERE tracking_no = $1", rec.tracking_no)
    assert report["incident_id"] == rec.incident_id and report["filed_at"] is not None
    assert (report["refused_at"], report["refused_stage"], report["refused_reason"]) == (None, None, None)
    assert await links(conn, rec.incident_id) == {rec.tracking_no}


async def test_appended_events_keep_state_reason_and_data_and_are_numbered(conn: asyncpg.Connection) -> None:
    rec = record()
    incident = await file(conn, rec)
    at = datetime.now(UTC)
    note = Event(
        f"op:{uuid.uuid4().hex}#0",
        rec.incident_id,
        2,
        "incident.note",
        "operator:duty",
        at,
        state=incident.state,
        public=False,
        reason="催办",
        data={"text": "居民来电"},
    )
    await store.append_events(conn, [note])
    rows = await conn.fetch(
        """SELECT version, type, actor, at, public, data FROM incident_events
            WHERE incident_id = $1 ORDER BY version""",
        rec.incident_id,
    )
    assert [(r["version"], r["type"]) for r in rows] == [(1, "incident.file"), (2, "incident.note")]
    assert (rows[1]["actor"], rows[1]["at"], rows[1]["public"]) == ("operator:duty", at, False)
    assert rows[1]["data"] == {"state": "new", "reason": "催办", "text": "居民来电"}
    with pytest.raises(asyncpg.UniqueViolationError):  # one event per version of an incident
        await store.append_events(conn, [replace(note, event_id=f"{note.event_id}-again")])


async def test_a_place_lock_holds_back_overlapping_cells_until_the_transaction_ends(
    pool: asyncpg.Pool,
) -> None:
    lock_class = random.randrange(1 << 20, 1 << 30)  # this test's own, never the dispatcher's
    async with pool.acquire() as first, pool.acquire() as second:
        tx = first.transaction()
        await tx.start()
        await store.lock_place(first, lock_class, [7, 3, 5])
        async with second.transaction():
            await asyncio.wait_for(store.lock_place(second, lock_class, [4, 8]), 2)  # disjoint: no wait
        async with second.transaction():
            waiting = asyncio.create_task(store.lock_place(second, lock_class, [9, 5]))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # cell 5 is held by the first transaction
            await tx.commit()
            await asyncio.wait_for(waiting, 5)


async def test_only_open_incidents_in_the_box_and_window_are_sightings(conn: asyncpg.Connection) -> None:
    lon, lat = random.uniform(-170, -100), random.uniform(-45, -10)  # a place of this test's own
    t = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    box = bbox_for(lon, lat, 300)
    since, until = t - timedelta(hours=1), t + timedelta(hours=1)
    new = await _filed(conn, lon, lat, t)
    dispatched = await _filed(conn, lon + 0.001, lat, t - timedelta(minutes=30), "dispatched")
    at_the_edge = await _filed(conn, lon, lat + 0.001, until)
    for status in ("closed", "cancelled", "merged"):
        await _filed(conn, lon, lat, t, status)
    await _filed(conn, lon, lat, until + timedelta(seconds=1))  # too late
    await _filed(conn, lon, lat, since - timedelta(seconds=1))  # too early
    await _filed(conn, lon + 0.01, lat, t)  # about a kilometre east: outside the box
    itself = await _filed(conn, lon, lat, t)

    found = await store.open_sightings_near(conn, box, itself.incident_id, since, until)
    assert {s.incident_id for s in found} == {
        new.incident_id,
        dispatched.incident_id,
        at_the_edge.incident_id,
    }
    [sighting] = [s for s in found if s.incident_id == dispatched.incident_id]
    assert (sighting.source, sighting.category, sighting.status) == ("app", "garbage_overflow", "dispatched")
    assert (sighting.lon, sighting.lat, sighting.occurred_at) == (lon + 0.001, lat, t - timedelta(minutes=30))


async def _filed(
    conn: asyncpg.Connection, lon: float, lat: float, occurred_at: datetime, status: str | None = None
) -> EnrichedIncident:
    rec = record(lon, lat, occurred_at)
    await file(conn, rec, status)
    return rec


async def test_place_of_and_merged_into_read_the_stored_incident(conn: asyncpg.Connection) -> None:
    survivor, merged = record(), record()
    await file(conn, survivor)
    await file(conn, merged)
    await conn.execute(
        "UPDATE incidents SET status = 'merged', merged_into = $2 WHERE incident_id = $1",
        merged.incident_id,
        survivor.incident_id,
    )
    assert await store.place_of(conn, survivor.incident_id) == (survivor.location.lon, survivor.location.lat)
    assert await store.merged_into(conn, merged.incident_id) == survivor.incident_id
    assert await store.merged_into(conn, survivor.incident_id) is None
    assert await store.merged_into(conn, f"INC-none-{uuid.uuid4().hex}") is None
    assert await store.merged_into(conn, None) is None  # a split command without 'from'


async def test_a_merge_adopts_the_merged_reports_and_a_split_detaches_them(conn: asyncpg.Connection) -> None:
    survivor, merged = record(), record()
    for rec in (survivor, merged):
        await add_report(conn, rec.tracking_no)
        await file(conn, rec)
    await store.adopt_reports(conn, survivor.incident_id, merged.incident_id)
    await store.adopt_reports(conn, survivor.incident_id, merged.incident_id)  # a replay: no duplicates
    assert await links(conn, survivor.incident_id) == {survivor.tracking_no, merged.tracking_no}
    assert await links(conn, merged.incident_id) == {merged.tracking_no}

    await store.detach_reports(conn, survivor.incident_id, merged.incident_id)
    assert await links(conn, survivor.incident_id) == {survivor.tracking_no}  # its own report stays
    assert await links(conn, merged.incident_id) == {merged.tracking_no}
