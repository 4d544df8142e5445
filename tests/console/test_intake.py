"""Intake against the real PostgreSQL and broker: durable before acknowledged, idempotent."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from console.intake import IntakeService, InvalidField, NotDurable, UnknownReference
from contracts import topics
from contracts.positions import PositionBatch
from contracts.reports import AppReport, CameraAlarm
from contracts.timewindow import TimeWindow
from infra import refusals
from infra.kafka_admin import create_topics
from infra.settings import Settings
from tests.times import recent


@pytest.fixture
async def producer(broker: str) -> AsyncIterator[AIOKafkaProducer]:
    await create_topics(Settings(kafka_bootstrap=broker, topic_partitions=4))
    prod = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await prod.start()
    yield prod
    await prod.stop()


@asynccontextmanager
async def last_filing(pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A report filed "tomorrow", so that it is the pipeline's last filing whatever else this
    session filed; the test sets its published_at (how far the pipeline has got). Taken out
    after, so it skews no later test."""
    rid = f"SSP-{uuid.uuid4().hex[:8]}"
    tracking_no = f"T-{rid}"
    await pool.execute(
        """INSERT INTO reports (tracking_no, source, source_id, payload, published_at, incident_id, filed_at)
           VALUES ($1, 'app', $2, '{}'::jsonb, now(), 'INC-' || $1, now() + interval '1 day')""",
        tracking_no,
        rid,
    )
    try:
        yield tracking_no
    finally:
        await pool.execute("DELETE FROM reports WHERE tracking_no = $1", tracking_no)


async def sends(pool: asyncpg.Pool, tracking_no: str) -> int:
    return int(await pool.fetchval("SELECT attempts FROM reports WHERE tracking_no = $1", tracking_no))


def report(report_id: str) -> AppReport:
    return AppReport.model_validate(
        {
            "report_id": report_id,
            "reporter_id": "r-1",
            "reported_at": recent(),
            "category": "garbage_overflow",
            "description": "垃圾桶满了",
            "lon": 106.53,
            "lat": 29.63,
        }
    )


async def raw_records(broker: str, key: str, topic: str = topics.REPORTS_RAW) -> list[dict[str, object]]:
    """Every record on `topic` keyed `key` (a tracking number, a responder id)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, fetch_max_wait_ms=10, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()
        parts = consumer.partitions_for_topic(topic) or set()
        assert parts
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for recs in (await consumer.getmany(timeout_ms=200)).values():
                found += [orjson.loads(r.value) for r in recs if r.key == key.encode()]
        return found
    finally:
        await consumer.stop()


async def test_a_report_is_recorded_and_published_before_it_is_acknowledged(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, broker: str
) -> None:
    intake = IntakeService(pool, producer)
    rid = f"SSP-{uuid.uuid4().hex[:8]}"
    first = await intake.accept("app", report(rid))
    assert first.created
    row = await pool.fetchrow("SELECT * FROM reports WHERE tracking_no = $1", first.tracking_no)
    assert row["source_id"] == rid and row["published_at"] is not None
    again = await intake.accept("app", report(rid))
    assert again.tracking_no == first.tracking_no and not again.created
    assert await pool.fetchval("SELECT count(*) FROM reports WHERE source_id = $1", rid) == 1
    records = await raw_records(broker, first.tracking_no)
    assert len(records) == 1 and records[0]["payload"]["report_id"] == rid  # type: ignore[index]


async def test_a_report_that_cannot_be_published_is_refused_then_republished(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, broker: str
) -> None:
    dead = AIOKafkaProducer(bootstrap_servers=broker)
    await dead.start()
    await dead.stop()  # sends now fail at once
    rid = f"SSP-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NotDurable):
        await IntakeService(pool, dead, publish_timeout_s=2).accept("app", report(rid))
    row = await pool.fetchrow("SELECT * FROM reports WHERE source_id = $1", rid)
    assert row is not None and row["published_at"] is None  # recorded, not acknowledged

    # The sender's retry of the same report publishes it (and gets the same tracking number) ...
    retry = await IntakeService(pool, producer).accept("app", report(rid))
    assert retry.tracking_no == row["tracking_no"] and not retry.created
    assert await pool.fetchval("SELECT published_at FROM reports WHERE source_id = $1", rid) is not None
    assert len(await raw_records(broker, retry.tracking_no)) == 1

    # ... and without a retry, the reconciler does.
    rid2 = f"SSP-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NotDurable):
        await IntakeService(pool, dead, publish_timeout_s=2).accept("app", report(rid2))
    await pool.execute(
        # received long before anything the pipeline has filed since: never published, so lost
        "UPDATE reports SET received_at = received_at - interval '10 minutes' WHERE source_id = $1",
        rid2,
    )
    assert await IntakeService(pool, producer).reconcile(redeliver_after_s=10, max_attempts=8) >= 1
    tracking2 = await pool.fetchval(
        "SELECT tracking_no FROM reports WHERE source_id = $1 AND published_at IS NOT NULL", rid2
    )
    assert tracking2 and len(await raw_records(broker, tracking2)) == 1


async def test_an_acknowledged_report_not_in_an_incident_is_published_again_with_back_off(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, broker: str
) -> None:
    """A broker that comes back empty loses published reports: the inbox sends them again
    until the dispatcher files them, doubling the wait each time, and stops after the cap."""
    async with last_filing(pool) as last:
        # the pipeline has since filed reports published long after these: they were lost
        await pool.execute(
            "UPDATE reports SET published_at = now() + interval '1 day' WHERE tracking_no = $1", last
        )
        await _back_off(pool, producer, broker)


async def _back_off(pool: asyncpg.Pool, producer: AIOKafkaProducer, broker: str) -> None:
    intake = IntakeService(pool, producer)
    lost = await intake.accept("app", report(f"SSP-{uuid.uuid4().hex[:8]}"))
    filed = await intake.accept("app", report(f"SSP-{uuid.uuid4().hex[:8]}"))
    await pool.execute(
        "UPDATE reports SET incident_id = 'INC-' || tracking_no WHERE tracking_no = $1", filed.tracking_no
    )
    ours = [lost.tracking_no, filed.tracking_no]

    async def attempts() -> dict[str, int]:
        rows = await pool.fetch(
            "SELECT tracking_no, attempts FROM reports WHERE tracking_no = ANY($1::text[])", ours
        )
        return {r["tracking_no"]: r["attempts"] for r in rows}

    assert await attempts() == {lost.tracking_no: 1, filed.tracking_no: 1}
    await intake.reconcile(redeliver_after_s=10, max_attempts=3)
    assert (await attempts())[lost.tracking_no] == 1  # not due yet

    async def age(seconds: int) -> None:
        await pool.execute(
            """UPDATE reports SET published_at = published_at - make_interval(secs => $2)
                WHERE tracking_no = ANY($1::text[])""",
            ours,
            seconds,
        )

    await age(11)
    await intake.reconcile(redeliver_after_s=10, max_attempts=3)
    assert await attempts() == {lost.tracking_no: 2, filed.tracking_no: 1}  # filed: left alone
    await age(11)
    await intake.reconcile(redeliver_after_s=10, max_attempts=3)
    assert (await attempts())[lost.tracking_no] == 2  # the second wait is twice as long
    await age(10)
    await intake.reconcile(redeliver_after_s=10, max_attempts=3)
    assert (await attempts())[lost.tracking_no] == 3
    await age(3600)
    await intake.reconcile(redeliver_after_s=10, max_attempts=3)
    assert (await attempts())[lost.tracking_no] == 3  # the cap: an alert, no endless re-sends
    assert len(await raw_records(broker, lost.tracking_no)) == 3
    assert len(await raw_records(broker, filed.tracking_no)) == 1


async def test_a_report_late_behind_a_backlog_is_not_sent_again_until_overtaken(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, broker: str
) -> None:
    """Under a backlog every report is late; re-sending them all adds to the backlog. A due
    report is re-sent only once the pipeline has filed reports published well after it."""
    intake = IntakeService(pool, producer)
    late = await intake.accept("app", report(f"SSP-{uuid.uuid4().hex[:8]}"))
    await pool.execute(
        "UPDATE reports SET published_at = now() - interval '75 seconds' WHERE tracking_no = $1",
        late.tracking_no,
    )

    async def pipeline_at(seconds_ago: int) -> None:
        await pool.execute(
            """UPDATE reports SET published_at = now() - make_interval(secs => $2)
                WHERE tracking_no = $1""",
            last,
            seconds_ago,
        )

    async with last_filing(pool) as last:
        # the pipeline is filing reports published 20 s before ours: ours is late, not lost
        await pipeline_at(95)
        await intake.reconcile(redeliver_after_s=10, max_attempts=8)
        assert await sends(pool, late.tracking_no) == 1
        # it has filed one published 11 s after ours: partitions lag one another, still late
        await pipeline_at(64)
        await intake.reconcile(redeliver_after_s=10, max_attempts=8)
        assert await sends(pool, late.tracking_no) == 1
        # one published 61 s after ours (past six back-offs): ours was lost
        await pipeline_at(14)
        assert await intake.reconcile(redeliver_after_s=10, max_attempts=8) >= 1
        assert await sends(pool, late.tracking_no) == 2
    assert len(await raw_records(broker, late.tracking_no)) == 2


async def test_intake_refuses_rather_than_acknowledges_when_the_database_is_away(
    producer: AIOKafkaProducer, database_url: str
) -> None:
    """Every database failure on the way to recording the report is a 503, never a 500 or a 2xx
    (the fault drills restart a real PostgreSQL; here the pool is simply gone)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    intake = IntakeService(pool, producer)
    await pool.close()
    with pytest.raises(NotDurable, match="database unavailable"):
        await intake.accept("app", report(f"SSP-{uuid.uuid4().hex[:8]}"))


async def test_unknown_camera_and_responder_are_refused_naming_the_field(
    pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    intake = IntakeService(pool, producer)
    alarm = CameraAlarm.model_validate(
        {
            "alarm_id": "CAM-x",
            "camera_id": "00000000000000000000",
            "alarm_type": "fight",
            "confidence": 0.5,
            "occurred_at": recent(),
        }
    )
    with pytest.raises(UnknownReference) as err:
        await intake.accept("camera", alarm)
    assert err.value.field == "camera_id"
    batch = PositionBatch.model_validate(
        {"positions": [{"responder_id": "NOBODY", "lon": 106.5, "lat": 29.6, "at": recent()}]}
    )
    with pytest.raises(UnknownReference) as err:
        await intake.accept_positions(batch)
    assert err.value.field == "positions.0.responder_id"
    assert await pool.fetchval("SELECT count(*) FROM reports WHERE source_id = 'CAM-x'") == 0


@pytest.mark.parametrize(
    ("source", "body", "field"),
    [
        ("app", {"reported_at": "9999-12-31T23:00:00+08:00"}, "reported_at"),
        ("app", {"reported_at": "0001-01-01T00:00:00+08:00"}, "reported_at"),
        ("app", {"reported_at": "1970-01-01T08:00:00+08:00"}, "reported_at"),
        ("app", {"reported_at": "2100-01-01T00:00:00+08:00"}, "reported_at"),
    ],
)
async def test_a_time_no_later_stage_could_use_is_refused_at_the_door(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, source: str, body: dict[str, str], field: str
) -> None:
    """A 202 is a promise: a time outside the plausible window is a 422 naming the field, and
    nothing is recorded (it used to be acknowledged, dead-lettered and re-published for ever)."""
    intake = IntakeService(pool, producer, window=TimeWindow(timedelta(minutes=5), timedelta(days=30)))
    rid = f"SSP-{uuid.uuid4().hex[:8]}"
    bad = AppReport.model_validate({**report(rid).model_dump(mode="json"), **body})
    with pytest.raises(InvalidField) as err:
        await intake.accept(source, bad)
    assert err.value.field == field
    assert await pool.fetchval("SELECT count(*) FROM reports WHERE source_id = $1", rid) == 0


async def test_the_window_is_the_configured_one(pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
    rid = f"SSP-{uuid.uuid4().hex[:8]}"
    two_days_ago = AppReport.model_validate(
        {**report(rid).model_dump(mode="json"), "reported_at": recent(timedelta(days=2))}
    )
    strict = IntakeService(pool, producer, window=TimeWindow(timedelta(minutes=5), timedelta(days=1)))
    with pytest.raises(InvalidField, match="more than 1 day before"):
        await strict.accept("app", two_days_ago)
    assert (await IntakeService(pool, producer).accept("app", two_days_ago)).created


async def test_a_fix_dated_ahead_is_refused_far_ahead_and_taken_as_of_arrival_near(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, broker: str
) -> None:
    """A fix dated far in the future used to pin its responder: every later real fix looked
    older. Far ahead is refused by name; a little ahead (a phone's clock) counts as of arrival."""
    await pool.execute(
        """INSERT INTO responders (responder_id, name, kind, org, on_duty)
           VALUES ('FIX-P1', '测试', 'police', '派出所', true) ON CONFLICT DO NOTHING"""
    )
    intake = IntakeService(pool, producer, window=TimeWindow(timedelta(minutes=5), timedelta(days=30)))
    far = PositionBatch.model_validate(
        {
            "positions": [
                {"responder_id": "FIX-P1", "lon": 106.5, "lat": 29.6, "at": recent()},
                {"responder_id": "FIX-P1", "lon": 106.5, "lat": 29.6, "at": "2099-01-01T00:00:00+08:00"},
            ]
        }
    )
    with pytest.raises(InvalidField) as err:
        await intake.accept_positions(far)
    assert err.value.field == "positions.1.at" and "future" in str(err.value)

    before = datetime.now(UTC)
    near = PositionBatch.model_validate(
        {
            "positions": [
                {"responder_id": "FIX-P1", "lon": 106.51, "lat": 29.61, "at": recent(-timedelta(minutes=4))}
            ]
        }
    )
    assert await intake.accept_positions(near) == 1
    sent = await raw_records(broker, "FIX-P1", topics.POSITIONS_RAW)
    [fix] = [f for f in sent if f["lon"] == 106.51]
    at = datetime.fromisoformat(fix["at"])
    assert before <= at <= datetime.now(UTC)  # as of its arrival, not four minutes ahead


async def test_a_report_refused_for_good_is_not_published_again_and_says_so(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, broker: str
) -> None:
    """A report some stage dead-lettered for a permanent reason is stuck, not lost: the
    reconciler leaves it alone (it used to re-publish it with back-off, for nothing)."""
    intake = IntakeService(pool, producer)
    rid = f"SSP-{uuid.uuid4().hex[:8]}"
    accepted = await intake.accept("app", report(rid))
    await pool.execute(
        # published long before anything else was filed: the reconciler would judge it lost
        """UPDATE reports SET received_at = received_at - interval '1 hour',
                              published_at = published_at - interval '1 hour'
            WHERE tracking_no = $1""",
        accepted.tracking_no,
    )
    assert await refusals.refuse_report(pool, accepted.tracking_no, "normalise", "payload.x: bad")
    await intake.reconcile(redeliver_after_s=1, max_attempts=8)
    assert await sends(pool, accepted.tracking_no) == 1  # the first publish only
    row = await pool.fetchrow(
        "SELECT refused_stage, refused_reason FROM reports WHERE tracking_no = $1", accepted.tracking_no
    )
    assert tuple(row) == ("normalise", "payload.x: bad")
    # a report that was filed is never marked (the filing is what counts)
    await pool.execute(
        "UPDATE reports SET incident_id = 'INC-x' WHERE tracking_no = $1", accepted.tracking_no
    )
    assert not await refusals.refuse_report(pool, accepted.tracking_no, "enrich", "late letter")


