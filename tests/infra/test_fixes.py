"""positions.raw records: one fix keyed by its responder, or a batch per partition."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contracts.positions import PositionFix
from contracts.validation import BadRecord
from infra.fixes import MAX_FIXES, by_partition, read_fixes, send_fixes
from infra.kafka_admin import create_topics
from infra.settings import Settings

AT = "2026-11-22T09:30:05+08:00"
NOW = datetime.fromisoformat("2026-11-22T09:31:00+08:00")  # the clock the tests read fixes by


def fix(rid: str, lon: float = 106.53, **extra: object) -> dict[str, object]:
    return {"responder_id": rid, "lon": lon, "lat": 29.63, "at": AT, **extra}


def test_a_lone_fix_is_keyed_by_its_responder() -> None:
    [got], bad = read_fixes(b"P-1", orjson.dumps(fix("P-1", accuracy_m=8)), NOW)
    assert (got.responder_id, got.lon, got.accuracy_m, bad) == ("P-1", 106.53, 8, [])
    with pytest.raises(BadRecord, match="key"):
        read_fixes(b"P-2", orjson.dumps(fix("P-1")), NOW)
    with pytest.raises(BadRecord, match="lat"):
        read_fixes(b"P-1", orjson.dumps(fix("P-1") | {"lat": 91}), NOW)


def test_a_batch_names_each_bad_fix_and_keeps_the_rest() -> None:
    value = orjson.dumps({"positions": [fix("P-1"), fix("P-2", lon="east"), 7, fix("P-3")]})
    good, bad = read_fixes(None, value, NOW)
    assert [f.responder_id for f in good] == ["P-1", "P-3"]
    assert [b.reason.split(":")[0] for b in bad] == ["positions.1.lon", "positions.2"]
    assert "not a JSON object but a number" in bad[1].reason
    assert orjson.loads(bad[0].value) == fix("P-2", lon="east")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"positions": {"P-1": 1}}, "not an array but a number"),
        ({"positions": [fix("P-1")] * (MAX_FIXES + 1)}, f"at most {MAX_FIXES}"),
    ],
)
def test_a_batch_that_is_unusable_as_a_whole_is_refused(value: object, words: str) -> None:
    with pytest.raises(BadRecord, match=words.split(" but ")[0]):
        read_fixes(None, orjson.dumps(value), NOW)


def test_fixes_are_grouped_by_their_responders_partition() -> None:
    fixes = [PositionFix.model_validate(fix(f"V-{i:05d}")) for i in range(200)]
    groups = by_partition(fixes, [0, 1, 2, 3])
    assert sorted(groups) == [0, 1, 2, 3]  # 200 ids spread over every partition
    assert sum(len(g) for g in groups.values()) == 200
    again = by_partition(reversed(fixes), [3, 2, 1, 0])
    assert {p: {f.responder_id for f in g} for p, g in groups.items()} == {
        p: {f.responder_id for f in g} for p, g in again.items()
    }


@pytest.fixture
async def producer(broker: str) -> AsyncIterator[AIOKafkaProducer]:
    prod = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await prod.start()
    yield prod
    await prod.stop()


async def test_a_batch_lands_where_each_responders_keyed_fix_does(
    broker: str, producer: AIOKafkaProducer
) -> None:
    """One responder's fixes stay on one partition whether they come alone (a phone) or in a
    batch (the HTTP intake): checked against where the producer puts a record keyed by the id."""
    topic = f"positions-test-{uuid.uuid4().hex[:6]}"
    await create_topics(Settings(kafka_bootstrap=broker, topic_partitions=4), names=(topic,))
    now = datetime.now(UTC).isoformat()
    ids = [f"V-{i:05d}" for i in range(40)]
    batch = [PositionFix.model_validate(fix(rid) | {"at": now}) for rid in ids]
    keyed = {
        rid: (await producer.send_and_wait(topic, key=rid.encode(), value=b"{}")).partition for rid in ids
    }
    futures = await send_fixes(producer, topic, batch)
    assert 1 < len(futures) <= 4  # one record per partition, not one per fix
    [await f for f in futures]

    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=None, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(4)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        landed: dict[str, int] = {}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                for r in records:
                    if r.key is None:
                        good, bad = read_fixes(r.key, r.value, datetime.now(UTC))
                        assert not bad
                        landed |= {f.responder_id: tp.partition for f in good}
    finally:
        await consumer.stop()
    assert landed == keyed
