"""A console server's event feed on the real broker: every malformed record on incidents.events is
dead-lettered with stage "console" and a reason naming the problem, a record the board itself
chokes on is too, and the valid event sent right after them still reaches the board."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from console.board import Board
from console.events import DeadLetters
from console.main import follow_events, start_events_consumer
from contracts import topics
from contracts.events import check_event
from contracts.validation import BadRecord
from infra.settings import Settings
from tests.hostile import collect, malformed


def view(incident_id: str, version: int) -> dict[str, Any]:
    """An incident as the dispatcher shows it (dispatcher.adapters.views.incident_view)."""
    return {
        "incident_id": incident_id,
        "status": "new",
        "status_label": "待派遣",
        "version": version,
        "source": "app",
        "category": "garbage_overflow",
        "category_label": "垃圾满溢",
        "severity": 4,
        "title": "垃圾满溢",
        "description": "垃圾桶满了",
        "occurred_at": "2026-11-22T01:32:00+00:00",
        "due_at": None,
        "location": {"lon": 106.53, "lat": 29.63, "grid_id": None, "out_of_area": True},
        "out_of_area": True,
        "recommended": {"nearest": {}, "own_grid_worker": None, "enriched_at": None},
        "camera": None,
        "caller_phone": None,
        "caller_name": None,
        "reporter_id": "resident-1",
        "photo_urls": [],
        "tracking_no": incident_id.removeprefix("INC-"),
        "created_at": "2026-11-22T01:32:01+00:00",
        "updated_at": "2026-11-22T01:32:01+00:00",
        "intake_ns": None,
        "round": 0,
        "merged_into": None,
        "tasks": [],
        "clocks": [],
    }


def event(incident_id: str, version: int) -> dict[str, Any]:
    return {
        "event_id": f"{incident_id}#{version}",
        "incident_id": incident_id,
        "version": version,
        "type": "incident.file",
        "actor": "system",
        "at": "2026-11-22T01:32:01+00:00",
        "state": "new",
        "public": True,
        "reason": None,
        "data": {},
        "incident": view(incident_id, version),
    }


def test_what_the_dispatcher_sends_is_accepted() -> None:
    ok = event("INC-1", 1)
    assert check_event(b"INC-1", orjson.dumps(ok)) == ok
    refusal = {"type": "command.refused", "command_id": "c1", "incident_id": "INC-1", "reason": "no"}
    assert check_event(b"INC-1", orjson.dumps(refusal)) == refusal
    for broken, words in (
        ({**ok, "incident": {**view("INC-2", 1)}}, "incident.incident_id"),
        ({k: v for k, v in ok.items() if k != "incident"}, "version and incident"),
        ({**ok, "incident": {**view("INC-1", 1), "status": "lost"}}, "incident.status"),
        ({**ok, "incident": {**view("INC-1", 1), "severity": "high"}}, "incident.severity"),
        ({**ok, "incident": {**view("INC-1", 1), "tasks": [{"task_id": 7}]}}, "incident.tasks.0"),
    ):
        with pytest.raises(BadRecord, match=words):
            check_event(b"INC-1", orjson.dumps(broken))


async def test_bad_events_are_dead_lettered_and_the_feed_goes_on(
    feed_settings: Settings, feed_producer: AIOKafkaProducer
) -> None:
    marker = f"INC-DL-{uuid.uuid4().hex[:8]}"
    board = Board()
    choke = f"{marker}-choke"

    def publish(message: dict[str, Any]) -> None:
        if message["incident_id"] == choke:
            raise RuntimeError("the board choked")  # a valid-looking event the hub cannot take
        board.apply(message)

    consumer = await start_events_consumer(feed_settings)
    stopping = asyncio.Event()
    feeding = asyncio.create_task(follow_events(consumer, publish, stopping, DeadLetters(feed_producer)))
    try:
        good = event(f"{marker}-ok", 1)
        bad = malformed(marker, "incident_id", good, ("version", "two"), "incident_id")
        for b in bad:
            await feed_producer.send_and_wait(topics.INCIDENTS_EVENTS, key=b.key, value=b.value, partition=0)
        await feed_producer.send_and_wait(
            topics.INCIDENTS_EVENTS, key=choke.encode(), value=orjson.dumps(event(choke, 1)), partition=0
        )
        await feed_producer.send_and_wait(
            topics.INCIDENTS_EVENTS, key=good["incident_id"].encode(), value=orjson.dumps(good), partition=0
        )
        async with asyncio.timeout(20):
            while board.incident(good["incident_id"]) is None:
                assert not feeding.done(), feeding
                await asyncio.sleep(0.05)
        got = await collect(
            feed_settings.kafka_servers,
            topics.DEADLETTER,
            lambda v: marker in (v["key"] or "") + v["value"],
            len(bad) + 1,
            timeout=20,
        )
    finally:
        stopping.set()
        await feeding
        await consumer.stop()
    by_key = {letter["key"]: letter for letter in got}
    assert len(got) == len(bad) + 1, [letter["reason"] for letter in got]
    assert all(letter["stage"] == "console" and letter["topic"] == topics.INCIDENTS_EVENTS for letter in got)
    for b in bad:
        letter = by_key[b.key.decode() if b.key is not None else None]
        assert all(word in letter["reason"] for word in b.words), (b.kind, letter["reason"])
    assert by_key[choke]["reason"] == "internal error: RuntimeError: the board choked"
