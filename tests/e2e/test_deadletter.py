"""Hostile records on every topic the centre consumes, on the running stack: each malformed record
goes to `deadletter` with a reason naming the problem, and a valid record sent right after it, on
the same partition, is still processed (the consumer did not crash or stall).

Malformed: not JSON, JSON but not an object, a field of the wrong type, a missing field, an
oversized value, invalid UTF-8, a null value (tombstone), a key that is not the record's id, and
no key at all. Consumers: the Faust agents (reports.raw, incidents.located, positions.raw,
responders.changes), the dispatcher (incidents.enriched, incidents.commands) and the console
server (incidents.events).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from console.main import RECONCILE_EVERY_S
from contracts import topics
from contracts.geo import GridIndex
from contracts.incidents import EnrichedIncident, IncidentRecord
from contracts.reports import RawReport
from dispatcher.readmodel import incidents
from infra.livestate import LiveState
from infra.settings import Settings
from streams.normalise import normalise
from streams.service import load_grid_index
from tests.e2e.conftest import KEYS, Console, app_report
from tests.hostile import Bad, collect, malformed

pytestmark = pytest.mark.e2e
PARTITION = 0  # every record of a topic on one partition: the valid one is read after the bad ones


@dataclass
class Case:
    """One consumed topic: its bad records, the stage that refuses them, a valid record and how
    to see that the valid one was processed."""

    topic: str
    stage: str
    bad: list[Bad]
    key: bytes
    valid: dict[str, Any]
    processed: Callable[[], Awaitable[bool]]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def recorded_report(pg: asyncpg.Pool, tracking_no: str) -> RawReport:
    """A raw report the intake could have published (its row exists: incidents link to it)."""
    payload = app_report(uid("SSP-DL"))
    raw = RawReport(tracking_no=tracking_no, source="app", received_at=datetime.now(UTC), payload=payload)
    await pg.execute(
        """INSERT INTO reports (tracking_no, source, source_id, payload, received_at, published_at)
           VALUES ($1, 'app', $2, $3, $4, now())""",
        tracking_no,
        payload["report_id"],
        payload,
        raw.received_at,
    )
    return raw


async def found(stack: Settings, topic: str, want: Callable[[dict[str, Any]], bool]) -> bool:
    return bool(await collect(stack.kafka_servers, topic, want, 1, timeout=2.0))


async def test_malformed_records_on_every_topic_are_dead_lettered_and_the_next_is_processed(
    stack: Settings,
    http: httpx.AsyncClient,
    stack_pg: asyncpg.Pool,
    stack_redis: aioredis.Redis,
    console: Console,
) -> None:
    marker = uid("DL")
    live = LiveState(stack_redis)
    grids = await load_grid_index(stack_pg)
    cases: list[Case] = []

    # reports.raw (normalise): the valid one becomes an incident on incidents.located.
    raw = await recorded_report(stack_pg, f"{marker}-raw-ok")
    raw_value = orjson.loads(raw.model_dump_json())
    cases.append(
        Case(
            topics.REPORTS_RAW,
            "normalise",
            malformed(f"{marker}-raw", "tracking_no", raw_value, ("received_at", "yesterday"), "source"),
            raw.tracking_no.encode(),
            raw_value,
            lambda: found(stack, topics.INCIDENTS_LOCATED, lambda v: v.get("tracking_no") == raw.tracking_no),
        )
    )

    # incidents.located (enrich): the valid one comes out enriched.
    located = normalise(await recorded_report(stack_pg, f"{marker}-loc-ok"), grids)
    located_value = orjson.loads(located.model_dump_json())
    cases.append(
        Case(
            topics.INCIDENTS_LOCATED,
            "enrich",
            malformed(f"{marker}-loc", "incident_id", located_value, ("severity", "high"), "location"),
            located.incident_id.encode(),
            located_value,
            lambda: found(
                stack, topics.INCIDENTS_ENRICHED, lambda v: v.get("incident_id") == located.incident_id
            ),
        )
    )

    # incidents.enriched (dispatcher): the valid one is filed.
    filed = normalise(await recorded_report(stack_pg, f"{marker}-enr-ok"), grids)
    enriched = EnrichedIncident(
        **IncidentRecord.model_validate(filed.model_dump()).model_dump(),
        nearest={"police": [], "grid_worker": [], "volunteer": []},
        enriched_at=datetime.now(UTC),
        enrichment_id=f"{marker}-enr",
    )
    enriched_value = orjson.loads(enriched.model_dump_json())

    async def is_filed() -> bool:
        return await incidents.incident_row(stack_pg, enriched.incident_id) is not None

    cases.append(
        Case(
            topics.INCIDENTS_ENRICHED,
            "dispatcher",
            malformed(f"{marker}-enr", "incident_id", enriched_value, ("nearest", "none"), "enrichment_id"),
            enriched.incident_id.encode(),
            enriched_value,
            is_filed,
        )
    )

    # incidents.commands (dispatcher): the valid one, for no incident, is answered with a refusal.
    command = {
        "command_id": f"{marker}-cmd-ok",
        "incident_id": f"INC-{marker}-nobody",
        "action": "note",
        "actor": "operator:duty",
        "at": datetime.now(UTC).isoformat(),
        "data": {"text": "死信测试"},
    }
    cases.append(
        Case(
            topics.INCIDENTS_COMMANDS,
            "dispatcher",
            malformed(f"{marker}-cmd", "incident_id", command, ("at", 5), "actor"),
            command["incident_id"].encode(),
            command,
            lambda: found(
                stack,
                topics.INCIDENTS_EVENTS,
                lambda v: v.get("type") == "command.refused" and v.get("command_id") == command["command_id"],
            ),
        )
    )

    # positions.raw (positions): a fresh responder, off duty (no other test's enrichment changes).
    mover = f"V-{marker}-pos"  # every record of this test names the marker
    volunteer = {"name": "死信测试", "kind": "volunteer", "org": "测试队", "on_duty": False}
    r = await http.put(f"/api/v1/responders/{mover}", headers={"X-Api-Key": KEYS["admin"]}, json=volunteer)
    assert r.status_code == 201, r.text
    fix = {"responder_id": mover, "lon": 106.51234, "lat": 29.61234, "at": datetime.now(UTC).isoformat()}

    async def moved() -> bool:
        return (await live.responder(mover)).get("lon", "").startswith("106.51234")

    cases.append(
        Case(
            topics.POSITIONS_RAW,
            "positions",
            malformed(f"{marker}-pos", "responder_id", fix, ("lat", "north"), "at"),
            mover.encode(),
            fix,
            moved,
        )
    )

    # responders.changes (roster): the valid one is in live state.
    newcomer = f"V-{marker}-ros"
    roster = {**volunteer, "responder_id": newcomer, "name": "名册测试", "skills": [], "grid_id": None}

    async def rostered() -> bool:
        return (await live.responder(newcomer)).get("name") == "名册测试"

    cases.append(
        Case(
            topics.RESPONDERS_CHANGES,
            "roster",
            malformed(f"{marker}-ros", "responder_id", roster, ("on_duty", "perhaps"), "kind"),
            newcomer.encode(),
            roster,
            rostered,
        )
    )

    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_servers, acks="all")
    await producer.start()
    try:
        for case in cases:
            for bad in case.bad:
                await producer.send_and_wait(case.topic, key=bad.key, value=bad.value, partition=PARTITION)
            await producer.send_and_wait(
                case.topic, key=case.key, value=orjson.dumps(case.valid), partition=PARTITION
            )

        # incidents.events (console): once the enriched incident is filed, a copy of its state at a
        # version far ahead is the valid event; the console must show it after the bad ones.
        await wait_for(is_filed, "the enriched incident to be filed")
        row = await incidents.incident_row(stack_pg, enriched.incident_id)
        assert row is not None
        view = await incidents.full_view(stack_pg, row)
        event = {
            "event_id": f"{marker}-evt#1",
            "incident_id": enriched.incident_id,
            "version": 1000,
            "type": "incident.note",
            "actor": "operator:duty",
            "at": datetime.now(UTC).isoformat(),
            "state": view["status"],
            "public": False,
            "reason": None,
            "data": {},
            "incident": {**view, "version": 1000},
        }
        events_case = Case(
            topics.INCIDENTS_EVENTS,
            "console",
            malformed(f"{marker}-evt", "incident_id", event, ("version", "two"), "incident_id"),
            enriched.incident_id.encode(),
            event,
            lambda: console_shows(console, enriched.incident_id, 1000),
        )
        for bad in events_case.bad:
            await producer.send_and_wait(
                topics.INCIDENTS_EVENTS, key=bad.key, value=bad.value, partition=PARTITION
            )
        await producer.send_and_wait(
            topics.INCIDENTS_EVENTS, key=events_case.key, value=orjson.dumps(event), partition=PARTITION
        )
        cases.append(events_case)
    finally:
        await producer.stop()

    for case in cases:
        await wait_for(case.processed, f"the valid record on {case.topic} to be processed")

    expected = {(case.topic, bad.kind): (case, bad) for case in cases for bad in case.bad}
    letters = await collect(
        stack.kafka_servers,
        topics.DEADLETTER,
        lambda v: marker in (v.get("key") or "") + v["value"],
        len(expected),
    )
    by_what: dict[tuple[str, str], dict[str, Any]] = {}
    for letter in letters:
        kinds = [b.kind for c in cases for b in c.bad if c.topic == letter["topic"] and letter_of(letter, b)]
        assert len(kinds) == 1, letter
        kind = kinds[0]
        by_what[(letter["topic"], kind)] = letter
    assert set(by_what) == set(expected), set(expected) - set(by_what)
    for what, letter in by_what.items():
        case, bad = expected[what]
        assert letter["stage"] == case.stage, letter
        assert letter["partition"] == PARTITION and letter["offset"] is not None, letter
        for word in bad.words:
            assert word in letter["reason"], (what, letter["reason"])


def letter_of(letter: dict[str, Any], bad: Bad) -> bool:
    if bad.key is not None:
        return letter.get("key") == bad.key.decode()
    return letter.get("key") is None and letter["value"] == (bad.value or b"").decode()


async def console_shows(console: Console, incident_id: str, version: int) -> bool:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if any(
            d["incident"]["incident_id"] == incident_id and d["event"]["version"] == version
            for d in console.deltas
        ):
            return True
        try:
            await console.next_frame(0.2)
        except TimeoutError:
            pass
    return False


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_recorded_report_refused_for_good_at_any_stage_is_stuck_not_resent(
    stack: Settings, http: httpx.AsyncClient, stack_pg: asyncpg.Pool
) -> None:
    """An acknowledged report whose record a stage refuses for a permanent reason (written by
    something other than our intake: ours refuses such times at the door) is marked stuck: the
    dead letter says so, the public status says so (not 已受理 for ever), and the reconciler
    does not re-publish it."""
    marker = uid("STUCK")
    reports = {stage: await recorded_report(stack_pg, f"{marker}-{stage}") for stage in ("n", "e", "d")}
    poisoned_raw = orjson.loads(reports["n"].model_dump_json())
    poisoned_raw["payload"]["reported_at"] = "9999-12-31T23:00:00+08:00"
    located = orjson.loads(normalise(reports["e"], GridIndex([])).model_dump_json())  # then spoiled
    located["severity"] = "high"
    enriched = {**orjson.loads(normalise(reports["d"], GridIndex([])).model_dump_json())}
    enriched |= {"nearest": "none", "enriched_at": datetime.now(UTC).isoformat(), "enrichment_id": marker}
    sends = [
        (topics.REPORTS_RAW, reports["n"].tracking_no, poisoned_raw, "normalise"),
        (topics.INCIDENTS_LOCATED, f"INC-{reports['e'].tracking_no}", located, "enrich"),
        (topics.INCIDENTS_ENRICHED, f"INC-{reports['d'].tracking_no}", enriched, "dispatcher"),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_servers, acks="all")
    await producer.start()
    try:
        for topic, key, value, _ in sends:
            await producer.send_and_wait(topic, key=key.encode(), value=orjson.dumps(value))
    finally:
        await producer.stop()
    letters = await collect(
        stack.kafka_servers, topics.DEADLETTER, lambda v: marker in (v.get("key") or ""), len(sends)
    )
    assert len(letters) == len(sends), letters
    for (_, key, _, stage), report in zip(sends, reports.values(), strict=True):
        [letter] = [lt for lt in letters if lt["key"] == key]
        assert letter["stage"] == stage, letter
        assert letter["stuck"] == f"report {report.tracking_no}: refused for good, not re-published", letter
        row = await stack_pg.fetchrow(
            "SELECT refused_stage, attempts FROM reports WHERE tracking_no = $1", report.tracking_no
        )
        assert row["refused_stage"] == stage
        progress = (await http.get(f"/api/v1/reports/{report.tracking_no}")).json()
        assert progress["status"] == "stuck" and progress["status_label"] == "受理异常，待工作人员人工核查"
    # published "long ago" and not filed: the reconciler would re-send it, were it not stuck
    await stack_pg.execute(
        """UPDATE reports SET published_at = now() - interval '1 hour',
                              received_at = now() - interval '1 hour'
            WHERE tracking_no LIKE $1""",
        f"{marker}-%",
    )
    await asyncio.sleep(2 * RECONCILE_EVERY_S + 1)  # the reconciler's rounds
    attempts = await stack_pg.fetch("SELECT attempts FROM reports WHERE tracking_no LIKE $1", f"{marker}-%")
    assert [r["attempts"] for r in attempts] == [0, 0, 0]
