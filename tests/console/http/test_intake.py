"""The intake area over HTTP, on the real app publishing to the session's broker: each channel's
report answers 202 with a tracking number once it is recorded and published, and the same report
again answers 200 with the same number; positions answer how many were taken; refusals name the
field, and nothing refused is recorded.

Also the fixtures the other areas' tests share: the app wired with a started producer, on
test_access's world (its demo keys, users and sessions).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from console.auth import ApiKeys
from console.http import ConsoleServices, create_http_app
from console.intake import IntakeService
from console.registry import RegistryService
from infra.kafka import make_producer, start_producer
from infra.kafka_admin import create_topics
from infra.livestate import LiveState
from infra.settings import Settings
from tests.console.http import test_access as access
from tests.console.http.test_access import World, client, headers, uid
from tests.console.test_intake import raw_records
from tests.times import recent

world = access.world  # the demo keys, users and their tokens: one world per test module


@pytest.fixture(scope="module")
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """A producer on the session's broker, made the way the console server makes its own."""
    s = replace(settings, kafka_idempotence=False)  # Tansu refuses idempotent producers
    await create_topics(s)
    prod = make_producer(s)
    await start_producer(prod)
    yield prod
    await prod.stop()


@pytest.fixture(scope="module")
async def app(world: World, redis: aioredis.Redis, settings: Settings, producer: AIOKafkaProducer) -> FastAPI:
    """The real app on the world's database and sessions, publishing for real; the request
    limits out of the way (test_access tests them)."""
    live = LiveState(redis)
    fast = replace(settings, account_requests_per_s=1e6, public_requests_per_s=1e6)
    return create_http_app(
        ConsoleServices(
            settings=fast,
            pool=world.pool,
            api_keys=ApiKeys(world.pool),
            sessions=world.sessions,
            intake=IntakeService(world.pool, producer),
            registry=RegistryService(world.pool, producer, live),
            live=live,
        )
    )


def place() -> tuple[float, float]:
    """Far from the demo street and from each other: no later stage merges these with anything."""
    return round(100 + random.random() * 10, 6), round(20 + random.random() * 10, 6)


async def a_camera(world: World) -> str:
    camera_id = uid("CAM")
    lon, lat = place()
    await world.pool.execute(
        "INSERT INTO cameras (camera_id, name, lon, lat) VALUES ($1, '测试枪机', $2, $3)", camera_id, lon, lat
    )
    return camera_id


def camera_alarm(camera_id: str) -> dict[str, Any]:
    return {
        "alarm_id": uid("CAM-A"),
        "camera_id": camera_id,
        "alarm_type": "smoke_fire",
        "confidence": 0.91,
        "occurred_at": recent(),
        "snapshot_url": "http://video.example/snap/42.jpg",
        "stream_url": "rtsp://video.example/live/42",
    }


def hotline_ticket() -> dict[str, Any]:
    lon, lat = place()
    return {
        "ticket_no": uid("12345"),
        "received_at": recent(),
        "caller_phone": "13800138000",
        "caller_name": "李女士",
        "category": "cooking_fumes",
        "description": "楼下饭店油烟太大",
        "address": "清晖岸小区3栋",
        "lon": lon,
        "lat": lat,
        "time_limit": "24h",
    }


def app_report() -> dict[str, Any]:
    lon, lat = place()
    return {
        "report_id": uid("SSP"),
        "reporter_id": "resident-1029",
        "reported_at": recent(),
        "category": "garbage_overflow",
        "description": "垃圾桶满了",
        "lon": lon,
        "lat": lat,
        "photo_urls": ["http://app.example/p/8f3a.jpg"],
    }


# channel -> (path, key, the body's own id field, tracking number's letter)
CHANNELS = {
    "camera": ("/api/v1/intake/camera-alarms", "camera", "alarm_id", "C"),
    "hotline": ("/api/v1/intake/hotline-tickets", "hotline", "ticket_no", "H"),
    "app": ("/api/v1/intake/app-reports", "app", "report_id", "A"),
}


async def body_for(world: World, channel: str) -> dict[str, Any]:
    if channel == "camera":
        return camera_alarm(await a_camera(world))
    return hotline_ticket() if channel == "hotline" else app_report()


async def post(world: World, http: httpx.AsyncClient, channel: str, body: dict[str, Any]) -> httpx.Response:
    path, key, _, _ = CHANNELS[channel]
    return await http.post(path, json=body, headers=headers(world, key))


async def recorded(world: World, channel: str, source_id: str) -> int:
    return int(
        await world.pool.fetchval(
            "SELECT count(*) FROM reports WHERE source = $1 AND source_id = $2", channel, source_id
        )
    )


@pytest.mark.parametrize("channel", list(CHANNELS))
async def test_a_report_is_202_with_a_tracking_number_and_the_same_again_200(
    world: World, app: FastAPI, broker: str, channel: str
) -> None:
    _, _, id_field, letter = CHANNELS[channel]
    body = await body_for(world, channel)
    async with client(app) as http:
        first = await post(world, http, channel, body)
        assert first.status_code == 202, first.text
        tracking_no = first.json()["tracking_no"]
        assert first.json() == {"tracking_no": tracking_no, "status": "received"}
        assert re.fullmatch(rf"{letter}\d{{8}}-[0-9A-F]{{8}}", tracking_no), tracking_no
        again = await post(world, http, channel, body)
    assert again.status_code == 200, again.text
    assert again.json() == {"tracking_no": tracking_no, "status": "received"}
    # The 202 was a promise: recorded once and published once, under that tracking number.
    row = await world.pool.fetchrow("SELECT * FROM reports WHERE tracking_no = $1", tracking_no)
    assert row["source"] == channel and row["source_id"] == body[id_field]
    assert row["published_at"] is not None
    assert await recorded(world, channel, body[id_field]) == 1
    records = await raw_records(broker, tracking_no)
    assert len(records) == 1 and records[0]["payload"][id_field] == body[id_field]  # type: ignore[index]


async def test_two_reports_get_two_tracking_numbers_and_a_repeat_in_flight_the_same(
    world: World, app: FastAPI
) -> None:
    one, other = app_report(), app_report()
    async with client(app) as http:
        answers = await asyncio.gather(*(post(world, http, "app", b) for b in (one, one, other)))
    statuses = [r.status_code for r in answers]
    numbers = [r.json()["tracking_no"] for r in answers]
    assert sorted(statuses[:2]) == [200, 202] and statuses[2] == 202, statuses
    assert numbers[0] == numbers[1] != numbers[2]
    assert await recorded(world, "app", one["report_id"]) == 1


async def test_positions_are_taken_as_a_batch(world: World, app: FastAPI) -> None:
    ids = [uid("V"), uid("V")]
    for rid in ids:
        await world.pool.execute(
            "INSERT INTO responders (responder_id, name, kind, org) VALUES ($1, '志愿者', 'volunteer', '队')",
            rid,
        )

    def fix(rid: str) -> dict[str, Any]:
        lon, lat = place()
        return {"responder_id": rid, "lon": lon, "lat": lat, "at": recent(timedelta(seconds=5))}

    async with client(app) as http:
        auth = headers(world, "positions")
        batch = {"positions": [fix(ids[0]), fix(ids[1]), fix(ids[0])]}
        r = await http.post("/api/v1/intake/positions", json=batch, headers=auth)
        assert r.status_code == 202 and r.json() == {"accepted": 3}, r.text
        r = await http.post("/api/v1/intake/positions", json={"positions": [fix(ids[1])]}, headers=auth)
        assert r.status_code == 202 and r.json() == {"accepted": 1}, r.text
        # One bad fix refuses the batch, naming which one and why.
        ahead = {**fix(ids[0]), "at": recent(-timedelta(hours=1))}
        unknown = fix(uid("NOBODY"))
        for positions, field in (
            ([fix(ids[0]), unknown], "positions.1.responder_id"),
            ([ahead, fix(ids[1])], "positions.0.at"),
            ([{**fix(ids[0]), "lat": 91}], "positions.0.lat"),
            ([], "positions"),
        ):
            r = await http.post("/api/v1/intake/positions", json={"positions": positions}, headers=auth)
            assert r.status_code == 422, r.text
            assert [f["field"] for f in r.json()["fields"]] == [field], r.text


# (channel, change to a valid body, the field a refusal names)
REFUSALS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("camera", lambda b: b.pop("confidence"), "confidence"),
    ("camera", lambda b: b.update(confidence=True), "confidence"),  # a boolean where a number belongs
    ("camera", lambda b: b.update(occurred_at=recent(-timedelta(hours=1))), "occurred_at"),
    ("hotline", lambda b: b.update(lat="29.63"), "lat"),  # a string where a number belongs
    ("hotline", lambda b: b.update(time_limit="3d"), "time_limit"),
    ("hotline", lambda b: b.update(caller_phone="call me"), "caller_phone"),
    ("hotline", lambda b: b.update(received_at=recent(timedelta(days=40))), "received_at"),
    ("app", lambda b: b.update(description="   "), "description"),  # blank text
    ("app", lambda b: b.update(report_id="-rf"), "report_id"),  # must start with a letter or digit
    ("app", lambda b: b.update(lat=85.1), "lat"),  # beyond the map's ±85.05°
    ("app", lambda b: b.update(category="no_such_thing"), "category"),
    ("app", lambda b: b.update(extra="field"), "extra"),
]


@pytest.mark.parametrize(("channel", "change", "field"), REFUSALS)
async def test_a_refusal_is_422_naming_the_field_and_nothing_is_recorded(
    world: World, app: FastAPI, channel: str, change: Callable[[dict[str, Any]], None], field: str
) -> None:
    _, _, id_field, _ = CHANNELS[channel]
    body = await body_for(world, channel)
    change(body)
    async with client(app) as http:
        r = await post(world, http, channel, body)
    assert r.status_code == 422, r.text
    answer = r.json()
    assert answer["error"] == "invalid" and field in [f["field"] for f in answer["fields"]], answer
    assert all(f["reason"] for f in answer["fields"]) and field in answer["message"]
    assert await recorded(world, channel, str(body.get(id_field))) == 0


async def test_an_unknown_camera_is_422_naming_it(world: World, app: FastAPI) -> None:
    body = camera_alarm(uid("CAM-NOWHERE"))
    async with client(app) as http:
        r = await post(world, http, "camera", body)
    assert r.status_code == 422, r.text
    assert r.json()["fields"] == [{"field": "camera_id", "reason": f"unknown camera {body['camera_id']!r}"}]
    assert await recorded(world, "camera", body["alarm_id"]) == 0
    # registered, the same alarm is taken
    lon, lat = place()
    await world.pool.execute(
        "INSERT INTO cameras (camera_id, name, lon, lat) VALUES ($1, '新装枪机', $2, $3)",
        body["camera_id"],
        lon,
        lat,
    )
    async with client(app) as http:
        assert (await post(world, http, "camera", body)).status_code == 202
