"""How the dispatcher spreads one fetch over lanes (one writer per incident, fetch order kept), and
what it does with a command that fails for good."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiokafka import ConsumerRecord
from aiokafka.structs import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from contracts import topics
from dispatcher.main import Dispatcher, into_lanes
from infra import outbox
from infra.kafka_admin import create_topics
from infra.settings import Settings
from tests.hostile import collect


def record(topic: str, partition: int, offset: int, key: str) -> ConsumerRecord:
    return ConsumerRecord(topic, partition, offset, 0, 0, key.encode(), b"{}", None, 0, 0, [])


fetches = st.lists(
    st.tuples(
        st.sampled_from([topics.INCIDENTS_ENRICHED, topics.INCIDENTS_COMMANDS]),
        st.integers(0, 3),
        st.sampled_from([f"INC-{i}" for i in range(12)]),
    ),
    max_size=60,
)


def as_batches(fetch: list[tuple[str, int, str]]) -> dict[TopicPartition, list[ConsumerRecord]]:
    batches: dict[TopicPartition, list[ConsumerRecord]] = {}
    for offset, (topic, partition, key) in enumerate(fetch):
        batches.setdefault(TopicPartition(topic, partition), []).append(record(topic, partition, offset, key))
    return batches


@given(fetches, st.integers(1, 8))
def test_every_record_is_in_one_lane_with_every_record_of_its_incident_in_order(
    fetch: list[tuple[str, int, str]], n: int
) -> None:
    batches = as_batches(fetch)
    lanes = into_lanes(batches, n)
    assert len(lanes) <= n
    laid = [r for lane in lanes.values() for r in lane]
    assert sorted((r.topic, r.partition, r.offset) for r in laid) == sorted(
        (r.topic, r.partition, r.offset) for rs in batches.values() for r in rs
    )
    lane_of = {r.key: i for i, lane in lanes.items() for r in lane}
    for i, lane in lanes.items():
        assert all(lane_of[r.key] == i for r in lane)  # an incident has one lane
        for tp in batches:  # each partition's records keep their order
            mine = [r.offset for r in lane if (r.topic, r.partition) == (tp.topic, tp.partition)]
            assert mine == sorted(mine)


def test_a_fetch_of_many_incidents_is_spread_over_the_lanes() -> None:
    fetch = [(topics.INCIDENTS_ENRICHED, 0, f"INC-{i}") for i in range(200)]
    lanes = into_lanes(as_batches(fetch), 8)
    assert len(lanes) == 8 and all(len(lane) > 10 for lane in lanes.values())
    assert into_lanes(as_batches(fetch), 1).keys() == {0}


def test_no_lanes_is_refused_by_name_before_anything_connects() -> None:
    for lanes in (0, -3):
        with pytest.raises(ValueError, match=f"DISPATCHER_LANES={lanes}: expected 1 or more"):
            Dispatcher(Settings(dispatcher_lanes=lanes))


async def test_a_command_that_fails_for_good_is_refused_to_its_sender_audited_and_not_resent(
    settings: Settings, pg: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    """A note with a NUL in it, sent past the console (whose checks refuse it), fails in the
    dispatcher every time (PostgreSQL cannot store U+0000). It used to be dead-lettered with
    nothing else: the operator never heard, the audit log had nothing, and the outbox re-sent it.
    Now its outbox row is closed, the audit log says it failed, and its sender is told."""
    s = replace(settings, kafka_idempotence=False, dispatcher_lanes=1)
    await create_topics(s)
    command_id = f"operator:duty:{uuid.uuid4().hex[:8]}"
    command = {
        "command_id": command_id,
        "incident_id": "INC-NUL-1",
        "action": "note",
        "actor": "operator:duty",
        "at": datetime.now(UTC).isoformat(),
        "data": {"text": "回电\x00"},
    }
    message = outbox.command_message(command)
    await outbox.enqueue(pg, [message])
    dispatcher = Dispatcher(s)
    await dispatcher.start()
    try:
        assert dispatcher._service is not None
        record = ConsumerRecord(
            topics.INCIDENTS_COMMANDS, 0, 0, 0, 0, message.key.encode(), message.value, None, 0, 0, []
        )
        await dispatcher._handle(dispatcher._service, record, wait=True)
    finally:
        await dispatcher.close()
    row = await pg.fetchrow("SELECT done_at, refused_reason FROM outbox WHERE message_id = $1", command_id)
    assert row["done_at"] is not None and "internal error" in row["refused_reason"]
    audit = await pg.fetchrow("SELECT outcome, detail FROM audit_log WHERE command_id = $1", command_id)
    assert audit["outcome"] == "failed" and "internal error" in audit["detail"]
    [refusal] = await collect(
        s.kafka_servers, topics.INCIDENTS_EVENTS, lambda v: v.get("command_id") == command_id, 1, timeout=10
    )
    assert refusal["type"] == "command.refused" and "指挥系统无法执行该命令" in refusal["reason"]
    [letter] = await collect(
        s.kafka_servers, topics.DEADLETTER, lambda v: v.get("key") == "INC-NUL-1", 1, timeout=10
    )
    assert letter["stuck"] == f"command {command_id}: refused to its sender, not re-sent"
    # the relay has nothing left to send for it
    assert (
        await pg.fetchval("SELECT count(*) FROM outbox WHERE message_id = $1 AND done_at IS NULL", command_id)
        == 0
    )
