"""The dispatcher's service against the real PostgreSQL: filing is idempotent under replay."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest

from contracts.commands import Command, command_json, parse_command
from contracts.incidents import EnrichedIncident
from dispatcher.adapters import casestore, store
from dispatcher.core.lifecycle import Action, transition
from dispatcher.core.plan import load_plans
from dispatcher.service import SYSTEM_ACTOR, IncidentService


def enriched(tracking_no: str) -> EnrichedIncident:
    now = datetime.now(UTC)
    return EnrichedIncident.model_validate(
        {
            "incident_id": f"INC-{tracking_no}",
            "tracking_no": tracking_no,
            "source": "app",
            "source_id": "S-1",
            "category": "garbage_overflow",
            "category_label": "垃圾满溢",
            "severity": 4,
            "title": "垃圾满溢·测试",
            "description": "垃圾桶满了",
            "occurred_at": now,
            "received_at": now,
            "due_at": now,
            # far apart, so the duplicate check never merges them
            "location": {
                "lon": 100 + random.random() * 10,
                "lat": 20 + random.random() * 10,
                "out_of_area": True,
            },
            "nearest": {"police": [], "grid_worker": [], "volunteer": []},
            "enriched_at": now,
            "enrichment_id": f"INC-{tracking_no}:enriched",
        }
    )


async def snapshot(pool: asyncpg.Pool, incident_id: str) -> tuple[object, ...]:
    row = await pool.fetchrow(
        "SELECT status, version, updated_at FROM incidents WHERE incident_id = $1", incident_id
    )
    events = await pool.fetch(
        "SELECT event_id, version FROM incident_events WHERE incident_id = $1", incident_id
    )
    return (tuple(row) if row else None, sorted(tuple(e) for e in events))


async def test_a_replayed_enrichment_changes_nothing_and_republishes_the_same_events(
    pool: asyncpg.Pool,
) -> None:
    service = IncidentService(pool, load_plans())
    rec = enriched(f"A-{uuid.uuid4().hex[:8]}")
    first = (await service.file(rec)).messages
    assert [m["type"] for m in first] == ["incident.file"] and first[0]["version"] == 1
    assert first[0]["incident"]["status"] == "new"
    before = await snapshot(pool, rec.incident_id)
    replay = (await service.file(rec)).messages
    assert await snapshot(pool, rec.incident_id) == before
    assert [(m["event_id"], m["version"]) for m in replay] == [(m["event_id"], m["version"]) for m in first]


async def test_a_new_case_is_built_as_it_would_be_read_back(pool: asyncpg.Pool) -> None:
    """Filing builds the case of the incident it inserts instead of reading it back."""
    rec = enriched(f"A-{uuid.uuid4().hex[:8]}")
    rec = rec.model_copy(update={"location": rec.location.model_copy(update={"grid_id": "GRID-X"})})
    cmd = Command(Action.FILE, rec.incident_id, f"{rec.incident_id}:filed", SYSTEM_ACTOR, rec.enriched_at)
    decision = transition(None, cmd)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await store.insert_incident(conn, rec, decision.incident)
            assert casestore.new_case(rec, decision.incident) == await casestore.load_case(
                conn, rec.incident_id
            )
        finally:
            await tx.rollback()


async def test_a_second_enrichment_of_a_filed_incident_files_nothing(pool: asyncpg.Pool) -> None:
    service = IncidentService(pool, load_plans())
    rec = enriched(f"A-{uuid.uuid4().hex[:8]}")
    await service.file(rec)
    before = await snapshot(pool, rec.incident_id)
    other = rec.model_copy(update={"enrichment_id": f"{rec.incident_id}:re-enriched"})
    assert (await service.file(other)).messages == []
    assert await snapshot(pool, rec.incident_id) == before


async def test_the_timeline_is_append_only(pool: asyncpg.Pool) -> None:
    service = IncidentService(pool, load_plans())
    rec = enriched(f"A-{uuid.uuid4().hex[:8]}")
    await service.file(rec)
    await pool.execute("UPDATE incident_events SET actor = 'mallory' WHERE incident_id = $1", rec.incident_id)
    await pool.execute("DELETE FROM incident_events WHERE incident_id = $1", rec.incident_id)
    rows = await pool.fetch("SELECT actor FROM incident_events WHERE incident_id = $1", rec.incident_id)
    assert [r["actor"] for r in rows] == ["system:intake"]


async def test_a_replayed_command_has_one_effect_and_every_command_is_audited(pool: asyncpg.Pool) -> None:

    service = IncidentService(pool, load_plans())
    rec = enriched(f"A-{uuid.uuid4().hex[:8]}")
    await service.file(rec)
    at = datetime.now(UTC)
    cancel = Command(
        "cancel",
        rec.incident_id,
        f"operator:duty:c-{uuid.uuid4().hex[:6]}",
        "operator:duty",
        at,
        reason="误报：垃圾桶已清运",
    )
    first = await service.handle(cancel)
    assert first.refused is None and [m["type"] for m in first.messages] == ["incident.cancel"]
    before = await snapshot(pool, rec.incident_id)
    replay = await service.handle(cancel)
    assert await snapshot(pool, rec.incident_id) == before
    assert [m["event_id"] for m in replay.messages] == [m["event_id"] for m in first.messages]

    again = Command(
        "cancel",
        rec.incident_id,
        f"operator:duty:c-{uuid.uuid4().hex[:6]}",
        "operator:duty",
        at,
        reason="再次撤销",
    )
    refused = await service.handle(again)
    assert refused.refused and "cancelled" in refused.refused
    assert await snapshot(pool, rec.incident_id) == before
    audit = await pool.fetch(
        "SELECT command_id, outcome FROM audit_log WHERE incident_id = $1 ORDER BY at, command_id",
        rec.incident_id,
    )
    assert sorted((r["command_id"], r["outcome"]) for r in audit) == sorted(
        [(cancel.command_id, "applied"), (again.command_id, "refused")]
    )
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("DELETE FROM audit_log WHERE incident_id = $1", rec.incident_id)


async def test_after_a_restart_live_statuses_follow_the_active_tasks(pool: asyncpg.Pool, redis: Any) -> None:
    from infra.livestate import LiveState

    live = LiveState(redis)
    tag = uuid.uuid4().hex[:6]
    busy_one, free_one = f"R-busy-{tag}", f"R-free-{tag}"
    for rid in (busy_one, free_one):
        await pool.execute(
            "INSERT INTO responders (responder_id, name, kind, org) VALUES ($1, '测试', 'police', '派出所')",
            rid,
        )
        await live.apply_roster(rid, {"kind": "police", "on_duty": True, "name": "测试", "org": "派出所"})
        await live.apply_position(rid, 106.5, 29.6, 1, None)
    rec = enriched(f"A-{tag}")
    await IncidentService(pool, load_plans()).file(rec)
    now = datetime.now(UTC)
    await pool.execute(
        """INSERT INTO tasks (task_id, incident_id, responder_id, responder_name, responder_kind, kind, state,
               version, org, offered_at, updated_at)
           VALUES ($1, $2, $3, '测试', 'police', 'response', 'accepted', 2, '派出所', $4, $4)""",
        f"T-{tag}",
        rec.incident_id,
        busy_one,
        now,
    )
    # A crash left live state the wrong way round for both.
    await live.set_status(free_one, "busy")
    service = IncidentService(pool, load_plans(), live)
    assert await service.sync_live_statuses() >= 2
    assert (await live.responder(busy_one))["status"] == "busy"
    assert (await live.responder(free_one))["status"] == "available"
    assert busy_one not in await live.available_positions("police")
    assert free_one in await live.available_positions("police")


async def test_reports_of_one_place_filed_side_by_side_still_merge(pool: asyncpg.Pool) -> None:
    """Lanes (and dispatchers) file incidents concurrently; filings that could merge take a lock
    on their place first, so each duplicate check sees the filings before it: one incident
    stays, every other one is merged into an earlier one."""
    lon, lat = 110 + random.random() * 10, 20 + random.random() * 5  # a place of this test's own
    recs = []
    for i in range(4):
        rec = enriched(f"P-{uuid.uuid4().hex[:8]}")
        place = rec.location.model_copy(update={"lon": lon + i * 1e-5, "lat": lat})
        recs.append(rec.model_copy(update={"location": place}))
    service = IncidentService(pool, load_plans())
    results = await asyncio.gather(*(service.file(rec) for rec in recs))  # four connections at once
    rows = await pool.fetch(
        "SELECT incident_id, status FROM incidents WHERE incident_id = ANY($1::text[])",
        [r.incident_id for r in recs],
    )
    statuses = sorted(r["status"] for r in rows)
    assert statuses == ["merged", "merged", "merged", "new"], statuses
    assert sum(len(r.forwards) for r in results) == 3  # an absorb for each merge


async def test_a_commands_audit_row_keeps_its_senders_address(pool: asyncpg.Pool) -> None:
    """The console puts the sender's address on each command; the audit row records it (it used
    to say null for every command sent over the WebSocket)."""

    cmd = Command(
        "note",
        "INC-nobody",
        f"operator:duty:{uuid.uuid4().hex[:8]}",
        "operator:duty",
        datetime.now(UTC),
        data={"text": "记录"},
        origin="10.20.30.40",
    )
    again = parse_command(orjson.dumps(command_json(cmd)))
    assert again == cmd  # the address travels with the command
    await IncidentService(pool, load_plans()).handle(again)
    row = await pool.fetchrow("SELECT outcome, origin FROM audit_log WHERE command_id = $1", cmd.command_id)
    assert tuple(row) == ("refused", "10.20.30.40")


@pytest.mark.parametrize("split_off", [7, None, ["INC-x"], {"id": "INC-x"}])
async def test_a_split_naming_no_incident_is_refused_and_audited(
    pool: asyncpg.Pool, split_off: object
) -> None:
    """A split's `from` that is not an incident id (a command put on the topic by anything but
    the console) is refused by name and audited, not failed inside the database and retried."""
    service = IncidentService(pool, load_plans())
    rec = enriched(f"A-{uuid.uuid4().hex[:8]}")
    await service.file(rec)
    split = Command(
        "split",
        rec.incident_id,
        f"operator:duty:s-{uuid.uuid4().hex[:6]}",
        "operator:duty",
        datetime.now(UTC),
        data={"from": split_off},
    )
    result = await service.handle(split)
    assert result.refused == f"{split_off!r} was not merged into {rec.incident_id}"
    outcome = await pool.fetchval("SELECT outcome FROM audit_log WHERE command_id = $1", split.command_id)
    assert outcome == "refused"


async def test_an_operator_dispatches_a_far_responder_by_name(pool: asyncpg.Pool, redis: Any) -> None:
    """Flat dispatch of anyone: a responder of any organisation, beyond the nearest few the
    lookup brings (here the service keeps one per kind), is offered the task with the distance
    and ETA of where they are now; one off duty is refused for that reason, in Chinese."""
    from infra.livestate import LiveState

    live = LiveState(redis)
    tag = uuid.uuid4().hex[:6]
    rec = enriched(f"A-{tag}")
    lon, lat = rec.location.lon, rec.location.lat
    near, far, resting = f"P-near-{tag}", f"P-far-{tag}", f"P-rest-{tag}"
    for rid, d_lon, on_duty in ((near, 0.001, True), (far, 0.05, True), (resting, 0.002, False)):
        await pool.execute(
            "INSERT INTO responders (responder_id, name, kind, org) VALUES ($1, '民警', 'police', '城南所')",
            rid,
        )
        await live.apply_roster(rid, {"kind": "police", "on_duty": on_duty, "name": "民警", "org": "城南所"})
        await live.apply_position(rid, lon + d_lon, lat, int(datetime.now(UTC).timestamp() * 1000), None)
    service = IncidentService(pool, load_plans(), live, per_kind=1)
    await service.file(rec)

    def dispatch(*ids: str) -> Command:
        return Command(
            "dispatch",
            rec.incident_id,
            f"operator:duty:d-{uuid.uuid4().hex[:6]}",
            "operator:duty",
            datetime.now(UTC),
            data={"responders": list(ids)},
        )

    refused = await service.handle(dispatch(resting))
    assert refused.refused == f"{resting}不可派：不在岗"
    result = await service.handle(dispatch(far))
    assert result.refused is None
    task = await pool.fetchrow(
        "SELECT responder_id, distance_m, eta_s, state FROM tasks WHERE incident_id = $1", rec.incident_id
    )
    assert (task["responder_id"], task["state"]) == (far, "offered")
    assert 4_000 < task["distance_m"] < 6_000 and task["eta_s"] > 0
