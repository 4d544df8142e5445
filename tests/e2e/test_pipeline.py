"""End to end on the real stack: intake -> Kafka -> Faust -> dispatcher -> WebSocket console."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from contracts import topics
from contracts.geo import haversine_m
from contracts.kinds import KINDS
from infra.livestate import LiveState
from infra.settings import Settings
from tests.e2e.conftest import KEYS, Console, app_report, camera_alarm, hotline_ticket, incident_id
from tests.times import recent

pytestmark = pytest.mark.e2e
SPEEDS_KMH = {"police": 30, "grid_worker": 15, "volunteer": 5}  # car, e-bike, on foot (the brief)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def brute_force_nearest(
    pg: asyncpg.Pool, redis: aioredis.Redis, lon: float, lat: float, k: int
) -> dict[str, list[tuple[str, float]]]:
    """The k nearest available responders of each kind, found without the GEO sets the
    enrichment searches: who is available from the system of record (on duty, no active task),
    where each is from their own live hash, every one of them measured."""
    rows = await pg.fetch(
        """SELECT r.responder_id, r.kind FROM responders r
            WHERE r.on_duty AND NOT EXISTS (
                  SELECT 1 FROM tasks t WHERE t.responder_id = r.responder_id
                     AND t.state IN ('offered', 'accepted', 'en_route', 'on_scene'))"""
    )
    ids = [r["responder_id"] for r in rows]
    places = await LiveState(redis).responders(ids, ("lon", "lat"))
    out: dict[str, list[tuple[float, str]]] = {kind: [] for kind in KINDS}
    for row, (x, y) in zip(rows, places, strict=True):
        if x is not None and y is not None:
            out[row["kind"]].append((haversine_m(lon, lat, float(x), float(y)), row["responder_id"]))
    return {kind: [(rid, d) for d, rid in sorted(found)[:k]] for kind, found in out.items()}


def assert_same_ranking(got: list[dict[str, Any]], want: list[tuple[str, float]]) -> None:
    assert len(got) == len(want)
    for g, (rid, dist) in zip(got, want, strict=True):
        assert g["distance_m"] == pytest.approx(dist, abs=1.0)
        if g["responder_id"] != rid:  # only a tie (within GEO precision) may swap two
            assert any(r == g["responder_id"] and abs(d - dist) < 1.0 for r, d in want), (got, want)


async def test_one_report_per_channel_reaches_console_enriched_with_the_true_nearest(
    stack: Settings,
    http: httpx.AsyncClient,
    console: Console,
    stack_redis: aioredis.Redis,
    stack_pg: asyncpg.Pool,
) -> None:
    posts = [
        ("camera-alarms", "camera", camera_alarm(uid("CAM"))),
        ("hotline-tickets", "hotline", hotline_ticket(uid("12345"))),
        ("app-reports", "app", app_report(uid("SSP"))),
    ]
    expected_ids = {}
    for path, key, body in posts:
        r = await http.post(f"/api/v1/intake/{path}", headers={"X-Api-Key": KEYS[key]}, json=body)
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "received"
        expected_ids[key] = incident_id(r.json()["tracking_no"])
    for source, iid in expected_ids.items():
        incident = await console.wait_incident(iid)
        assert incident["source"] == source
        assert incident["status"] == "new"
        assert incident["location"]["grid_id"] and not incident["out_of_area"]
        loc = incident["location"]
        want = await brute_force_nearest(
            stack_pg, stack_redis, loc["lon"], loc["lat"], stack.nearest_per_kind
        )
        nearest = incident["recommended"]["nearest"]
        for kind in KINDS:
            assert_same_ranking(nearest[kind], want[kind])
            for r in nearest[kind]:
                assert r["kind"] == kind, r  # a responder of another kind never passes
                # the straight line, 30 % for the streets' detours, at 30, 15 or 5 km/h
                expected_eta = r["distance_m"] * 1.3 / (SPEEDS_KMH[kind] / 3.6)
                assert abs(r["eta_s"] - expected_eta) <= 1, (r, expected_eta)
        own = incident["recommended"]["own_grid_worker"]
        if own is None:  # the grid's own grid worker is off duty or busy with another task
            live = LiveState(stack_redis)
            workers = await live.grid_workers(loc["grid_id"])
            rows = await live.responders(workers, ("on_duty", "status"))
            assert workers and all(r != ["1", "available"] for r in rows), rows
        else:
            assert own["own_grid"] and own["kind"] == "grid_worker"
        if source == "hotline":
            assert incident["caller_phone"] == "138****8000"  # masked on the console
        if source == "camera":
            assert incident["camera"]["stream_url"] == "rtsp://video.example/live/42"


async def test_a_position_update_changes_the_next_enrichment(
    http: httpx.AsyncClient, console: Console, stack_redis: aioredis.Redis, stack_pg: asyncpg.Pool
) -> None:
    lon, lat = 106.5612, 29.6455
    before = await brute_force_nearest(stack_pg, stack_redis, lon, lat, 1)
    mover = uid("P")  # a fresh officer: no other test can have tasked them
    officer = {"name": "测试民警", "kind": "police", "org": "弹子石派出所", "on_duty": True}
    r = await http.put(f"/api/v1/responders/{mover}", headers={"X-Api-Key": KEYS["admin"]}, json=officer)
    assert r.status_code == 201, r.text
    assert before["police"][0][0] != mover
    fix = {
        "responder_id": mover,
        "lon": lon + 0.00002,
        "lat": lat,
        "at": datetime.now(UTC).isoformat(),
        "accuracy_m": 5,
    }
    r = await http.post(
        "/api/v1/intake/positions", headers={"X-Api-Key": KEYS["positions"]}, json={"positions": [fix]}
    )
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 1}
    live = LiveState(stack_redis)
    for _ in range(100):
        if (await live.responder(mover)).get("lon", "").startswith("106.5612"):
            break
        await asyncio.sleep(0.05)
    r = await http.post(
        "/api/v1/intake/app-reports",
        headers={"X-Api-Key": KEYS["app"]},
        json=app_report(uid("SSP"), lon=lon, lat=lat),
    )
    incident = await console.wait_incident(incident_id(r.json()["tracking_no"]))
    first = incident["recommended"]["nearest"]["police"][0]
    assert first["responder_id"] == mover and first["distance_m"] < 5


async def test_a_duplicate_post_creates_nothing(
    http: httpx.AsyncClient, console: Console, stack_pg: asyncpg.Pool
) -> None:
    body = hotline_ticket(uid("12345"))
    first = await http.post(
        "/api/v1/intake/hotline-tickets", headers={"X-Api-Key": KEYS["hotline"]}, json=body
    )
    again = await http.post(
        "/api/v1/intake/hotline-tickets", headers={"X-Api-Key": KEYS["hotline"]}, json=body
    )
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json() == again.json()
    iid = incident_id(first.json()["tracking_no"])
    await console.wait_incident(iid)
    third = await http.post(
        "/api/v1/intake/hotline-tickets", headers={"X-Api-Key": KEYS["hotline"]}, json=body
    )
    assert third.status_code == 200 and third.json() == first.json()
    await console.drain(1.5)
    assert [d["incident"]["incident_id"] for d in console.deltas].count(iid) == 1
    n_reports = await stack_pg.fetchval(
        "SELECT count(*) FROM reports WHERE source_id = $1", body["ticket_no"]
    )
    n_incidents = await stack_pg.fetchval(
        "SELECT count(*) FROM incident_reports ir JOIN reports r USING (tracking_no) WHERE r.source_id = $1",
        body["ticket_no"],
    )
    assert (n_reports, n_incidents) == (1, 1)


@pytest.mark.parametrize(
    ("path", "key", "body", "status", "field"),
    [
        ("app-reports", "app", b'{"report_id": "x", ', 400, None),
        ("app-reports", "app", b"[1, 2", 400, None),
        ("app-reports", "app", {k: v for k, v in app_report("SSP-bad1").items() if k != "lat"}, 422, "lat"),
        ("app-reports", "app", {**app_report("SSP-bad2"), "lon": 200}, 422, "lon"),
        (
            "app-reports",
            "app",
            {**app_report("SSP-bad3"), "reported_at": "2026-11-22T09:32:00"},
            422,
            "reported_at",
        ),
        ("app-reports", "app", {**app_report("SSP-bad4"), "category": "dragons"}, 422, "category"),
        ("app-reports", "app", {**app_report("SSP-bad5"), "colour": "red"}, 422, "colour"),
        ("hotline-tickets", "hotline", {**hotline_ticket("T-bad1"), "time_limit": "3d"}, 422, "time_limit"),
        (
            "hotline-tickets",
            "hotline",
            {**hotline_ticket("T-bad2"), "caller_phone": "call me"},
            422,
            "caller_phone",
        ),
        ("camera-alarms", "camera", {**camera_alarm("CAM-bad1"), "confidence": 1.5}, 422, "confidence"),
        ("camera-alarms", "camera", {**camera_alarm("CAM-bad2"), "alarm_type": "ufo"}, 422, "alarm_type"),
        (
            "camera-alarms",
            "camera",
            camera_alarm("CAM-bad3", camera_id="99999999999999999999"),
            422,
            "camera_id",
        ),
        ("positions", "positions", {"positions": []}, 422, "positions"),
        (
            "positions",
            "positions",
            {"positions": [{"responder_id": "NOBODY", "lon": 106.5, "lat": 29.6, "at": recent()}]},
            422,
            "positions.0.responder_id",
        ),
        (
            "positions",
            "positions",
            {"positions": [{"responder_id": "P-0001", "lon": 106.5, "lat": 95, "at": recent()}]},
            422,
            "positions.0.lat",
        ),
        ("app-reports", "camera", app_report("SSP-wrongkey"), 401, None),
        ("app-reports", None, app_report("SSP-nokey"), 401, None),
    ],
)
async def test_bad_payloads_get_their_4xx_naming_the_field(
    http: httpx.AsyncClient, path: str, key: str | None, body: Any, status: int, field: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["X-Api-Key"] = KEYS[key]
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    r = await http.post(f"/api/v1/intake/{path}", headers=headers, content=content)
    assert r.status_code == status, r.text
    answer = r.json()
    assert answer["message"]
    if field is not None:
        assert field in [f["field"] for f in answer["fields"]], answer
        assert field in answer["message"]


async def test_an_oversized_body_is_413(http: httpx.AsyncClient, stack: Settings) -> None:
    body = app_report("SSP-huge") | {"description": "脏" * stack.max_body_bytes}
    r = await http.post("/api/v1/intake/app-reports", headers={"X-Api-Key": KEYS["app"]}, json=body)
    assert r.status_code == 413 and "larger" in r.json()["message"]


async def test_an_out_of_area_report_is_kept_and_flagged(http: httpx.AsyncClient, console: Console) -> None:
    r = await http.post(
        "/api/v1/intake/app-reports",
        headers={"X-Api-Key": KEYS["app"]},
        json=app_report(uid("SSP"), lon=106.70, lat=29.80),
    )
    assert r.status_code == 202
    incident = await console.wait_incident(incident_id(r.json()["tracking_no"]))
    assert incident["out_of_area"] is True and incident["location"]["grid_id"] is None


async def test_malformed_raw_records_are_dead_lettered_and_good_ones_still_flow(
    stack: Settings, http: httpx.AsyncClient, console: Console
) -> None:
    marker = uid("BAD")
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.REPORTS_RAW, key=f"{marker}-a".encode(), value=b"\xff not json at all"
        )
        half = {
            "tracking_no": f"{marker}-b",
            "source": "app",
            "received_at": "2026-11-22T01:00:00Z",
            "payload": {**app_report("x"), "lat": "north"},
        }
        await producer.send_and_wait(topics.REPORTS_RAW, key=f"{marker}-b".encode(), value=orjson.dumps(half))
        await producer.send_and_wait(
            topics.INCIDENTS_LOCATED, key=f"{marker}-c".encode(), value=b'{"incident_id": 7}'
        )
    finally:
        await producer.stop()
    r = await http.post(
        "/api/v1/intake/app-reports", headers={"X-Api-Key": KEYS["app"]}, json=app_report(uid("SSP"))
    )
    await console.wait_incident(incident_id(r.json()["tracking_no"]))

    letters = await read_topic(
        stack, topics.DEADLETTER, lambda v: str(v.get("key", "")).startswith(marker), 3
    )
    by_key = {letter["key"]: letter for letter in letters}
    assert "not JSON" in by_key[f"{marker}-a"]["reason"]
    assert by_key[f"{marker}-a"]["stage"] == "normalise"
    assert "payload.lat" in by_key[f"{marker}-b"]["reason"]
    assert by_key[f"{marker}-c"]["stage"] == "enrich" and "incident_id" in by_key[f"{marker}-c"]["reason"]
    assert (
        by_key[f"{marker}-b"]["topic"] == topics.REPORTS_RAW and by_key[f"{marker}-b"]["offset"] is not None
    )


async def read_topic(
    stack: Settings, topic: str, want: Any, count: int, timeout: float = 20.0
) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.kafka_servers,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
        group_id=None,
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < count:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for rec in records:
                        value = orjson.loads(rec.value)
                        if want(value):
                            found.append(value)
    finally:
        await consumer.stop()
    return found


async def test_read_api_full_incident_and_public_progress(
    http: httpx.AsyncClient, token: str, console: Console
) -> None:
    body = hotline_ticket(uid("12345"))
    r = await http.post("/api/v1/intake/hotline-tickets", headers={"X-Api-Key": KEYS["hotline"]}, json=body)
    tracking = r.json()["tracking_no"]
    iid = incident_id(tracking)
    await console.wait_incident(iid)

    assert (await http.get(f"/api/v1/incidents/{iid}")).status_code == 401
    auth = {"Authorization": f"Bearer {token}"}
    full = (await http.get(f"/api/v1/incidents/{iid}", headers=auth)).json()
    assert full["incident_id"] == iid and full["location"]["grid_id"]
    assert [rep["tracking_no"] for rep in full["reports"]] == [tracking]
    assert full["reports"][0]["payload"]["caller_phone"] == "138****8000"
    assert full["timeline"][0]["type"] == "incident.file"
    kinds = full["recommended"]["nearest"]
    assert set(kinds) == set(KINDS) and all(
        {"responder_id", "kind", "distance_m", "eta_s"} <= set(x) for k in kinds.values() for x in k
    )

    listing = (await http.get("/api/v1/incidents?status=open", headers=auth)).json()["incidents"]
    assert iid in {i["incident_id"] for i in listing}
    assert (await http.get("/api/v1/incidents?status=bogus", headers=auth)).status_code == 422
    assert (await http.get("/api/v1/incidents/INC-nope", headers=auth)).status_code == 404

    public = (await http.get(f"/api/v1/reports/{tracking}")).json()
    assert public["status"] == "new" and public["status_label"] == "待派遣"
    assert [s["step"] for s in public["timeline"]] == ["received", "new"]
    text = orjson.dumps(public).decode()
    assert "13800138000" not in text and "李" not in text and "138****" not in text
    assert (await http.get("/api/v1/reports/NOPE")).status_code == 404


async def test_console_resumes_after_reconnect_without_gap_or_duplicate(
    stack: Settings, http: httpx.AsyncClient, token: str
) -> None:
    first = await Console.open(stack, token)
    await first.drain(0.5)
    seq = first.seq
    await first.close()
    missed = []
    for _ in range(3):
        r = await http.post(
            "/api/v1/intake/app-reports", headers={"X-Api-Key": KEYS["app"]}, json=app_report(uid("SSP"))
        )
        missed.append(incident_id(r.json()["tracking_no"]))
    watcher = await Console.open(stack, token)
    for iid in missed:
        await watcher.wait_incident(iid)
    await watcher.close()
    again = await Console.open(stack, token, resume_from=seq)
    assert again.frames[0]["type"] == "resumed"
    await again.drain(1.0)
    filed = [d["incident"]["incident_id"] for d in again.deltas if d["event"]["type"] == "incident.file"]
    assert sorted(i for i in filed if i in missed) == sorted(missed)  # each once (partitions interleave)
    changes = [(d["incident"]["incident_id"], d["event"]["version"]) for d in again.deltas]
    assert len(changes) == len(set(changes))  # no change shown twice
    assert [d["seq"] for d in again.deltas] == list(range(seq + 1, seq + 1 + len(again.deltas)))
    await again.close()
    stale = await Console.open(stack, token, resume_from=10**9)
    assert stale.frames[0]["type"] == "snapshot" and stale.frames[0]["resync"] is True
    await stale.close()


async def test_websocket_rejects_bad_auth_and_bad_frames(stack: Settings, token: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(f"ws://{stack.http_host}:{stack.ws_port}") as ws:
        await ws.send('{"type": "auth", "id": 1, "token": "forged"}')
        err = orjson.loads(await ws.recv())
        assert err["type"] == "error" and err["code"] == "unauthorised"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    console = await Console.open(stack, token)
    await console.ws.send("not json")
    frame = await console.next_frame()
    while frame["type"] == "delta":
        frame = await console.next_frame()
    assert frame["type"] == "error" and frame["code"] == "malformed"
    await console.ws.send('{"type": "launch", "id": "c9"}')
    frame = await console.next_frame()
    while frame["type"] == "delta":
        frame = await console.next_frame()
    assert frame == {
        "type": "error",
        "id": "c9",
        "code": "unknown_command",
        "message": "unknown command type 'launch'",
    }
    await console.ws.send('{"type": "ping", "id": "p1"}')
    frame = await console.next_frame()
    while frame["type"] == "delta":
        frame = await console.next_frame()
    assert frame["type"] == "ack" and frame["id"] == "p1"
    await console.close()


async def test_registry_changes_flow_into_enrichment(
    http: httpx.AsyncClient, console: Console, stack_redis: aioredis.Redis
) -> None:
    admin = {"X-Api-Key": KEYS["admin"]}
    rid = uid("V")
    body = {
        "name": "测试志愿者",
        "kind": "volunteer",
        "org": "清晖平安巡防志愿服务队",
        "skills": ["first_aid"],
        "on_duty": True,
    }
    r = await http.put(f"/api/v1/responders/{rid}", headers=admin, json=body)
    assert r.status_code == 201, r.text
    assert (await http.put(f"/api/v1/responders/{rid}", headers=admin, json=body)).status_code == 200
    assert (
        await http.put(f"/api/v1/responders/{rid}", headers={"X-Api-Key": KEYS["app"]}, json=body)
    ).status_code == 401
    bad = await http.put(f"/api/v1/responders/{rid}", headers=admin, json={**body, "grid_id": "G999"})
    assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "grid_id"
    bad = await http.put(f"/api/v1/responders/{rid}", headers=admin, json={**body, "kind": "firefighter"})
    assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "kind"

    lon, lat = 106.5055, 29.6055
    fix = {"responder_id": rid, "lon": lon, "lat": lat, "at": datetime.now(UTC).isoformat()}
    assert (
        await http.post(
            "/api/v1/intake/positions", headers={"X-Api-Key": KEYS["positions"]}, json={"positions": [fix]}
        )
    ).status_code == 202
    live = LiveState(stack_redis)
    for _ in range(100):
        if rid in await live.available_positions("volunteer"):
            break
        await asyncio.sleep(0.05)
    r = await http.post(
        "/api/v1/intake/app-reports",
        headers={"X-Api-Key": KEYS["app"]},
        json=app_report(uid("SSP"), lon=lon, lat=lat),
    )
    incident = await console.wait_incident(incident_id(r.json()["tracking_no"]))
    assert incident["recommended"]["nearest"]["volunteer"][0]["responder_id"] == rid

    # Off duty: no longer recommended.
    assert (
        await http.put(f"/api/v1/responders/{rid}", headers=admin, json={**body, "on_duty": False})
    ).status_code == 200
    for _ in range(100):
        if rid not in await live.available_positions("volunteer"):
            break
        await asyncio.sleep(0.05)
    r = await http.post(
        "/api/v1/intake/app-reports",
        headers={"X-Api-Key": KEYS["app"]},
        json=app_report(uid("SSP"), lon=lon, lat=lat, category="road_damage"),
    )
    incident = await console.wait_incident(incident_id(r.json()["tracking_no"]))
    assert rid not in [v["responder_id"] for v in incident["recommended"]["nearest"]["volunteer"]]

    cam = "50010800009999000001"
    r = await http.put(
        f"/api/v1/cameras/{cam}", headers=admin, json={"name": "测试球机", "lon": 106.52, "lat": 29.62}
    )
    assert r.status_code == 201
    r = await http.post(
        "/api/v1/intake/camera-alarms",
        headers={"X-Api-Key": KEYS["camera"]},
        json=camera_alarm(uid("CAM"), camera_id=cam, alarm_type="fight"),
    )
    assert r.status_code == 202
    incident = await console.wait_incident(incident_id(r.json()["tracking_no"]))
    assert incident["location"]["camera_name"] == "测试球机"
    assert incident["location"]["lon"] == pytest.approx(106.52)
