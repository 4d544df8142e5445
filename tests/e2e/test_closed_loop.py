"""The closed loop on the real stack: dispatch, push to phones, accept, on scene, resolve,
verify, close, residents' feedback; decline and timeout re-offers; merging across channels;
durable clocks across a dispatcher crash."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from devtools.seed import DEMO_RESPONDER_PASSWORD
from infra.settings import Settings
from tests.e2e.conftest import (
    KEYS,
    SUPERVISOR,
    Console,
    app_report,
    camera_alarm,
    hotline_ticket,
    incident_id,
)

pytestmark = pytest.mark.e2e


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Phone:
    """A responder's phone: logs in, gets its tasks, then each change pushed."""

    def __init__(self, ws: ClientConnection, responder_id: str, tasks: list[dict[str, Any]]) -> None:
        self.ws, self.responder_id, self.tasks = ws, responder_id, tasks
        self.frames: list[dict[str, Any]] = []
        self.n = 0

    @classmethod
    async def open(cls, stack: Settings, http: httpx.AsyncClient, responder_id: str) -> Phone:
        r = await http.post(
            "/api/v1/auth/login", json={"username": responder_id, "password": DEMO_RESPONDER_PASSWORD}
        )
        assert r.status_code == 200, r.text
        assert r.json()["role"] == "responder"
        ws = await connect(f"ws://{stack.http_host}:{stack.ws_port}")
        await ws.send(orjson.dumps({"type": "auth", "id": "hello", "token": r.json()["token"]}).decode())
        ack = orjson.loads(await ws.recv())
        assert ack["type"] == "ack" and ack["user"]["responder_id"] == responder_id, ack
        tasks = orjson.loads(await ws.recv())
        assert tasks["type"] == "tasks"
        return cls(ws, responder_id, tasks["tasks"])

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.frames.append(frame)
        return frame

    async def wait_task(
        self, event: str, task_id: str | None = None, timeout: float = 15.0
    ) -> dict[str, Any]:
        for f in self.frames:
            if f.get("type") == "task" and f["event"] == event and task_id in (None, f["task"]["task_id"]):
                return f
        deadline = time.monotonic() + timeout
        while True:
            f = await self.next(max(0.01, deadline - time.monotonic()))
            if f.get("type") == "task" and f["event"] == event and task_id in (None, f["task"]["task_id"]):
                return f

    async def act(self, task_id: str, action: str, **extra: Any) -> dict[str, Any]:
        self.n += 1
        cid = f"{action}-{self.n}-{uuid.uuid4().hex[:6]}"
        await self.ws.send(
            orjson.dumps(
                {"type": "task", "id": cid, "task_id": task_id, "task_action": action, **extra}
            ).decode()
        )
        while True:
            f = await self.next()
            if f.get("id") == cid:
                return f

    async def close(self) -> None:
        await self.ws.close()


async def command(console: Console, type_: str, **fields: Any) -> dict[str, Any]:
    cid = uid(type_)
    await console.ws.send(orjson.dumps({"type": type_, "id": cid, **fields}).decode())
    while True:
        frame = await console.next_frame()
        if frame.get("id") == cid:
            return frame


async def wait_for(console: Console, iid: str, pred: Any, timeout: float = 40.0) -> dict[str, Any]:
    """The newest view of `iid` once `pred(view)` holds."""
    deadline = time.monotonic() + timeout
    latest: dict[str, Any] | None = None
    for d in console.deltas:
        if d["incident"]["incident_id"] == iid:
            latest = d["incident"]
    while latest is None or not pred(latest):
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            frame = await console.next_frame(left)
        except TimeoutError:
            tasks_now = [(t["responder_id"], t["state"]) for t in (latest or {}).get("tasks", [])]
            status = latest and latest["status"]
            raise AssertionError(f"{iid}: not met in {timeout}s; last {status}, tasks {tasks_now}") from None
        if frame["type"] == "error":  # a command of this console was refused: say why at once
            raise AssertionError(f"{iid}: a command was refused: {frame}")
        if frame["type"] == "delta" and frame["incident"]["incident_id"] == iid:
            latest = frame["incident"]
    return latest


async def next_with_id(console: Console, cid: str) -> dict[str, Any]:
    while True:
        frame = await console.next_frame()
        if frame.get("id") == cid:
            return frame


def events_of(console: Console, iid: str) -> list[dict[str, Any]]:
    return [d["event"] for d in console.deltas if d["incident"]["incident_id"] == iid]


def tasks(view: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    return [t for t in view.get("tasks", []) if all(t.get(k) == v for k, v in match.items())]


@pytest.fixture
async def phones(stack: Settings, http: httpx.AsyncClient) -> AsyncIterator[dict[str, Phone]]:
    opened: dict[str, Phone] = {}
    yield opened
    for p in opened.values():
        await p.close()


@pytest.fixture
async def dispatched(console: Console) -> AsyncIterator[list[str]]:
    """Incidents a test leaves with open offers: cancelled afterwards, so their 3-second offer
    timers stop re-offering in the background while later tests measure availability."""
    ids: list[str] = []
    yield ids
    for iid in ids:
        await command(console, "cancel", incident_id=iid, reason="测试结束，撤销")


async def phone_for(stack: Settings, http: httpx.AsyncClient, phones: dict[str, Phone], rid: str) -> Phone:
    if rid not in phones:
        phones[rid] = await Phone.open(stack, http, rid)
    return phones[rid]


async def test_the_whole_loop_dispatch_push_accept_resolve_verify_close_and_not_fixed_reopens(
    stack: Settings, http: httpx.AsyncClient, console: Console, phones: dict[str, Phone]
) -> None:
    for _ in range(10):  # a spot whose grid worker is on duty and free (5% are off duty)
        r = await http.post(
            "/api/v1/intake/hotline-tickets",
            headers={"X-Api-Key": KEYS["hotline"]},
            json=hotline_ticket(uid("12345")),
        )
        tracking = r.json()["tracking_no"]
        iid = incident_id(tracking)
        incident = await console.wait_incident(iid)
        own = incident["recommended"]["own_grid_worker"]
        if own is not None:
            break
    assert own is not None
    phone = await phone_for(stack, http, phones, own["responder_id"])  # connected before the push

    ack = await command(console, "dispatch", incident_id=iid)  # one click: the plan
    assert ack["type"] == "ack" and ack["queued"] is True
    view = await wait_for(console, iid, lambda v: v["status"] == "dispatched")
    [task] = tasks(view, kind="response")
    assert task["responder_id"] == own["responder_id"] and "本网格网格员" in task["reasons"]
    pushed = await phone.wait_task("task.offer", task["task_id"])
    assert pushed["task"]["incident"]["incident_id"] == iid
    assert "caller_phone" not in orjson.dumps(pushed).decode()
    dispatch_event = next(e for e in events_of(console, iid) if e["type"] == "incident.dispatch")
    assert dispatch_event["data"]["cc"] == [own["org"]]  # 抄送 the responder's organisation

    for action, extra in (
        ("accept", {}),
        ("en_route", {}),
        ("on_scene", {}),
        ("done", {"note": "已劝导商户安装油烟净化器", "photo_urls": ["http://app.example/p/done.jpg"]}),
    ):
        answer = await phone.act(task["task_id"], action, **extra)
        assert answer["type"] == "ack", answer
        await phone.wait_task(f"task.{action}", task["task_id"])
    view = await wait_for(console, iid, lambda v: v["status"] == "resolved" and tasks(v, kind="verification"))
    done = tasks(view, task_id=task["task_id"])[0]
    assert done["state"] == "done" and done["note"] == "已劝导商户安装油烟净化器"
    [check] = tasks(view, kind="verification")
    verifier = await phone_for(stack, http, phones, check["responder_id"])
    if check["responder_id"] != own["responder_id"]:
        assert check["task_id"] in {t["task_id"] for t in verifier.tasks}
    for action, extra in (
        ("accept", {}),
        ("on_scene", {}),
        ("done", {"passed": True, "note": "现场核查无油烟"}),
    ):
        assert (await verifier.act(check["task_id"], action, **extra))["type"] == "ack"
    await wait_for(console, iid, lambda v: v["status"] == "closed")
    await console.drain(1.0)  # every delta of a command carries the view after the whole command
    types = [e["type"] for e in events_of(console, iid)]
    assert "incident.verify_pass" in types and "incident.close" in types, ",".join(types)
    assert types.index("incident.verify_pass") < types.index("incident.close"), types

    public = (await http.get(f"/api/v1/reports/{tracking}")).json()
    assert public["status"] == "closed"
    assert [s["step"] for s in public["timeline"]] == [
        "received",
        "new",
        "dispatched",
        "in_progress",
        "resolved",
        "closed",
    ]
    assert "138" not in orjson.dumps(public).decode()

    early = await http.post(f"/api/v1/reports/{uid('X')}/feedback", json={"fixed": True, "satisfied": True})
    assert early.status_code == 404
    r = await http.post(
        f"/api/v1/reports/{tracking}/feedback",
        json={"fixed": False, "satisfied": False, "rating": 1, "comment": "晚上油烟还是很大"},
    )
    assert r.status_code == 202, r.text
    view = await wait_for(console, iid, lambda v: v["status"] == "reopened")
    assert view["round"] == 1
    public = (await http.get(f"/api/v1/reports/{tracking}")).json()
    assert [s["step"] for s in public["timeline"]][-2:] == ["feedback", "reopened"]
    again = await http.post(f"/api/v1/reports/{tracking}/feedback", json={"fixed": True, "satisfied": True})
    assert again.status_code == 409  # not closed any more


async def test_a_declined_offer_goes_to_the_next_best_responder(
    stack: Settings,
    http: httpx.AsyncClient,
    console: Console,
    phones: dict[str, Phone],
    dispatched: list[str],
) -> None:
    r = await http.post(
        "/api/v1/intake/hotline-tickets",
        headers={"X-Api-Key": KEYS["hotline"]},
        json=hotline_ticket(uid("12345")),
    )
    iid = incident_id(r.json()["tracking_no"])
    dispatched.append(iid)
    await console.wait_incident(iid)
    assert (await command(console, "dispatch", incident_id=iid))["type"] == "ack"
    view = await wait_for(console, iid, lambda v: v["status"] == "dispatched")
    [first] = tasks(view, state="offered")
    phone = await phone_for(stack, http, phones, first["responder_id"])
    assert first["task_id"] in {t["task_id"] for t in phone.tasks}
    no_reason = await phone.act(first["task_id"], "decline")
    assert no_reason["type"] == "ack"  # queued; the dispatcher refuses a decline without a reason
    refusal = await asyncio.wait_for(_next_of_type(phone, "error"), 10)
    assert refusal["code"] == "refused" and "reason" in refusal["message"]
    assert (await phone.act(first["task_id"], "decline", reason="正在处理另一户漏水"))["type"] == "ack"
    view = await wait_for(
        console,
        iid,
        lambda v: (
            len(tasks(v, state="offered")) == 1
            and tasks(v, state="offered")[0]["task_id"] != first["task_id"]
        ),
    )
    [second] = tasks(view, state="offered")
    assert (
        second["responder_id"] != first["responder_id"]
        and second["responder_kind"] == first["responder_kind"]
    )
    await console.drain(1.0)  # every delta of a command carries the view after the whole command
    types = [e["type"] for e in events_of(console, iid)]
    assert "task.decline" in types and "incident.reoffered" in types, types


async def _next_of_type(phone: Phone, type_: str) -> dict[str, Any]:
    while True:
        f = await phone.next()
        if f.get("type") == type_:
            return f


async def test_an_offer_not_accepted_in_time_expires_and_is_reoffered(
    http: httpx.AsyncClient, console: Console, stack_pg: asyncpg.Pool, dispatched: list[str]
) -> None:
    r = await http.post(
        "/api/v1/intake/app-reports", headers={"X-Api-Key": KEYS["app"]}, json=app_report(uid("SSP"))
    )
    iid = incident_id(r.json()["tracking_no"])
    dispatched.append(iid)
    await console.wait_incident(iid)
    assert (await command(console, "dispatch", incident_id=iid))["type"] == "ack"  # plan: accept within 3 s
    view = await wait_for(console, iid, lambda v: v["status"] == "dispatched")
    [first] = tasks(view, state="offered")
    view = await wait_for(
        console,
        iid,
        lambda v: (
            tasks(v, task_id=first["task_id"])[0]["state"] == "expired"
            and len(tasks(v, state="offered")) == 1
        ),
        timeout=15,
    )
    [second] = tasks(view, state="offered")
    assert second["responder_id"] != first["responder_id"]
    expiries = await stack_pg.fetchval(
        """SELECT count(*) FROM incident_events
            WHERE incident_id = $1 AND type = 'task.expire' AND data->>'task_id' = $2""",
        iid,
        first["task_id"],
    )
    assert expiries == 1


async def test_three_channels_reporting_one_event_end_as_one_incident(
    stack: Settings, http: httpx.AsyncClient, console: Console, token: str, stack_pg: asyncpg.Pool
) -> None:
    camera = "50010800001320000042"
    cam = await stack_pg.fetchrow("SELECT lon, lat FROM cameras WHERE camera_id = $1", camera)
    posts = [
        ("camera-alarms", "camera", camera_alarm(uid("CAM"), camera_id=camera, alarm_type="smoke_fire")),
        (
            "hotline-tickets",
            "hotline",
            {
                **hotline_ticket(uid("12345"), lon=cam["lon"] + 0.0005, lat=cam["lat"]),
                "category": "smoke_fire",
                "time_limit": "2h",
            },
        ),
        (
            "app-reports",
            "app",
            app_report(uid("SSP"), lon=cam["lon"], lat=cam["lat"] + 0.0004, category="smoke_fire"),
        ),
    ]
    ids = []
    for path, key, body in posts:
        r = await http.post(f"/api/v1/intake/{path}", headers={"X-Api-Key": KEYS[key]}, json=body)
        assert r.status_code == 202, r.text
        ids.append(incident_id(r.json()["tracking_no"]))
        await console.wait_incident(ids[-1])  # in order, so the first one filed is the survivor
    first = ids[0]
    for other in ids[1:]:
        view = await wait_for(console, other, lambda v: v["status"] == "merged")
        assert view["merged_into"] == first
    auth = {"Authorization": f"Bearer {token}"}

    async def linked() -> set[str]:
        full = (await http.get(f"/api/v1/incidents/{first}", headers=auth)).json()
        return {rep["source"] for rep in full["reports"]}

    for _ in range(100):
        if await linked() == {"camera", "hotline", "app"}:
            break
        await asyncio.sleep(0.1)
    assert await linked() == {"camera", "hotline", "app"}
    open_ids = {
        i["incident_id"]
        for i in (await http.get("/api/v1/incidents?status=open", headers=auth)).json()["incidents"]
    }
    assert first in open_ids and not (set(ids[1:]) & open_ids)

    # The resident's report was about something else after all: the operator splits it off.
    queued = await command(console, "split", incident_id=first, **{"from": ids[1] + "-nope"})
    assert queued["type"] == "ack"  # queued; the dispatcher refuses it: that incident was never merged here
    refusal = await next_with_id(console, queued["id"])
    assert refusal["type"] == "error" and refusal["code"] == "refused" and "not merged" in refusal["message"]
    assert (await command(console, "split", incident_id=first, **{"from": ids[2]}))["type"] == "ack"
    view = await wait_for(console, ids[2], lambda v: v["status"] == "new")
    assert view["merged_into"] is None
    for _ in range(100):
        if await linked() == {"camera", "hotline"}:
            break
        await asyncio.sleep(0.1)
    assert await linked() == {"camera", "hotline"}


async def test_pending_clocks_fire_once_across_a_dispatcher_crash(
    http: httpx.AsyncClient, console: Console, stack_pg: asyncpg.Pool, dispatched: list[str]
) -> None:
    r = await http.post(
        "/api/v1/intake/app-reports", headers={"X-Api-Key": KEYS["app"]}, json=app_report(uid("SSP"))
    )
    iid = incident_id(r.json()["tracking_no"])
    dispatched.append(iid)
    await console.wait_incident(iid)
    assert (await command(console, "dispatch", incident_id=iid))["type"] == "ack"
    view = await wait_for(console, iid, lambda v: v["status"] == "dispatched")
    [first] = tasks(view, state="offered")
    sup = SUPERVISOR[0]
    sup.kill("dispatcher")  # SIGKILL with the 3-second offer timer pending
    await asyncio.sleep(4)  # the deadline passes while no dispatcher runs
    sup.restart("dispatcher")
    view = await wait_for(
        console, iid, lambda v: tasks(v, task_id=first["task_id"])[0]["state"] == "expired", timeout=60
    )
    await asyncio.sleep(5)  # a second firing, if any, would land by now
    counts = await stack_pg.fetchrow(
        """SELECT count(*) FILTER (WHERE type = 'task.expire') AS expired,
                  count(*) FILTER (WHERE type = 'incident.reoffered') AS reoffered
             FROM incident_events
            WHERE incident_id = $1 AND (data->>'task_id' = $2 OR data->>'replaces' = $2)""",
        iid,
        first["task_id"],
    )
    assert (counts["expired"], counts["reoffered"]) == (1, 1)


async def test_the_recommendation_follows_live_positions_before_the_operator_acts(
    http: httpx.AsyncClient, console: Console
) -> None:
    lon, lat = 106.5233, 29.6177
    body = camera_alarm(uid("CAM"), alarm_type="smoke_fire")  # the e2e plan sends police
    r = await http.put(
        "/api/v1/cameras/50010800009999000777",
        headers={"X-Api-Key": KEYS["admin"]},
        json={"name": "测试路口-枪机", "lon": lon, "lat": lat},
    )
    assert r.status_code in (200, 201)
    body["camera_id"] = "50010800009999000777"
    r = await http.post("/api/v1/intake/camera-alarms", headers={"X-Api-Key": KEYS["camera"]}, json=body)
    iid = incident_id(r.json()["tracking_no"])
    await console.wait_incident(iid)
    before = await command(console, "recommend", incident_id=iid)
    assert before["type"] == "recommendation" and before["plan"], before
    police = [p for p in before["picks"] if p["kind"] == "police"]
    assert police and all(p["reasons"] for p in police), before
    mover = uid("P")  # a fresh officer: no other test can have tasked them
    officer = {"name": "测试民警", "kind": "police", "org": "弹子石派出所", "on_duty": True}
    r = await http.put(f"/api/v1/responders/{mover}", headers={"X-Api-Key": KEYS["admin"]}, json=officer)
    assert r.status_code == 201, r.text
    fix = {"responder_id": mover, "lon": lon, "lat": lat + 0.00003, "at": datetime.now(UTC).isoformat()}
    assert (
        await http.post(
            "/api/v1/intake/positions", headers={"X-Api-Key": KEYS["positions"]}, json={"positions": [fix]}
        )
    ).status_code == 202
    for _ in range(100):
        after = await command(console, "recommend", incident_id=iid)
        first = next(p for p in after["picks"] if p["kind"] == "police")
        if first["responder_id"] == mover:
            break
        await asyncio.sleep(0.1)
    assert first["responder_id"] == mover and first["distance_m"] < 10
    unknown = await command(console, "recommend", incident_id="INC-nope")
    assert unknown["type"] == "error" and unknown["code"] == "invalid"


async def test_three_rates_endpoint(http: httpx.AsyncClient, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    assert (await http.get("/api/v1/rates")).status_code == 401
    for by in ("grid", "community", "org", "day", "all"):
        r = await http.get(f"/api/v1/rates?by={by}", headers=auth)
        assert r.status_code == 200, r.text
        rows = r.json()["rows"]
        assert all(0 <= (row["response_rate"] or 0) <= 1 for row in rows)
    total = (await http.get("/api/v1/rates?by=all", headers=auth)).json()["rows"]
    assert len(total) == 1 and total[0]["filed"] > 0
    assert (await http.get("/api/v1/rates?by=street", headers=auth)).status_code == 422
    bad = await http.get("/api/v1/rates?from=2026-11-22&to=2026-11-01", headers=auth)
    assert bad.status_code == 422 and "from" in bad.json()["message"]


async def test_a_step_at_risk_then_overdue_escalates_to_the_duty_commander(
    stack: Settings, http: httpx.AsyncClient, console: Console, stack_pg: asyncpg.Pool
) -> None:
    body = {
        **hotline_ticket(uid("12345")),
        "category": "noise",
        "description": "夜间施工噪声",
        "time_limit": "7d",
    }
    r = await http.post("/api/v1/intake/hotline-tickets", headers={"X-Api-Key": KEYS["hotline"]}, json=body)
    iid = incident_id(r.json()["tracking_no"])
    await console.wait_incident(iid)
    levels: list[str] = []
    deadline = time.monotonic() + 20
    while len(levels) < 2 and time.monotonic() < deadline:
        frame = await console.next_frame(max(0.01, deadline - time.monotonic()))
        if frame["type"] == "delta" and frame["incident"]["incident_id"] == iid:
            if frame["event"]["type"] == "incident.escalated":
                assert frame["event"]["data"]["to"] == "duty_commander"
                assert "派遣" in frame["event"]["data"]["message"]
                levels.append(frame["event"]["data"]["level"])
    assert levels == ["at_risk", "overdue"]  # nobody dispatched it: warned, then overdue
    rows = await stack_pg.fetch(
        "SELECT level FROM escalations WHERE incident_id = $1 ORDER BY at, level", iid
    )
    assert sorted(r["level"] for r in rows) == ["at_risk", "overdue"]
    # Dispatching in time would have stopped the clock: a later one raises nothing more.
    await console.drain(1.5)
    assert (
        sum(
            1
            for d in console.deltas
            if d["event"]["type"] == "incident.escalated" and d["incident"]["incident_id"] == iid
        )
        == 2
    )
