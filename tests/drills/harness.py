"""What a fault drill runs against the centre: report traffic, an operator's console, checks.

Traffic posts app reports the way a real sender does: a 503 or a dropped connection is
retried with the same report id until it is acknowledged (2xx). The operator's console
dispatches every new incident with one click and reconnects (resuming) whenever its socket
drops; its board is what a connected page shows. The checks read PostgreSQL and Redis: every
acknowledged report in exactly one incident, no task stuck, every clock fired once, the page
caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson
import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from contracts import topics
from contracts.states import OPEN_STATES
from devtools.seed import DEMO_API_KEYS
from infra.settings import Settings
from tests.times import recent

ACCEPT_TIMEOUT_S = 5  # the drills' plans: offers nobody takes expire and go to the next responder
OPEN = frozenset(s.value for s in OPEN_STATES)
CATEGORIES = ("garbage_overflow", "road_damage", "streetlight", "noise", "sewage")


# Poisoned reports a hostile or broken sender posts among the good ones (issue 14): each is
# valid JSON that a later stage could not use, and must be refused at the door with a 422
# naming the field, never acknowledged and then lost. (field, value) replaces the good one.
POISONS: tuple[tuple[str, Any], ...] = (
    ("reported_at", "9999-12-31T23:00:00+08:00"),
    ("reported_at", "0001-01-01T00:00:00+08:00"),
    ("reported_at", "1970-01-01T08:00:00+08:00"),
    ("reported_at", "2100-01-01T00:00:00+08:00"),
    ("lon", True),
    ("lat", "29.63"),
    ("description", "   "),
    ("description", "回电\u0000"),
)
POISON_EVERY = 5  # one report in five is poisoned


@dataclass
class Traffic:
    """Reports at `rate` a second, each retried until acknowledged (or the deadline); one in
    POISON_EVERY is poisoned, and must be refused by name."""

    base_url: str
    rate: float
    tag: str
    acknowledged: dict[str, str] = field(default_factory=dict)  # report id -> tracking number
    posted: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)  # 4xx: a bug in the drill or intake
    poisoned: dict[str, str] = field(default_factory=dict)  # report id -> the field poisoned
    poison_refused: set[str] = field(default_factory=set)  # refused by a 422 naming that field
    retries: int = 0
    _senders: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=15) as http:
            for n in itertools.count():
                if stop.is_set():
                    break
                rid = f"DRILL-{self.tag}-{n:05d}-{uuid.uuid4().hex[:6]}"
                body = _report(rid)
                if n % POISON_EVERY == POISON_EVERY - 1:
                    name, value = POISONS[(n // POISON_EVERY) % len(POISONS)]
                    body[name] = value
                    self.poisoned[rid] = name
                task = asyncio.create_task(self._send(http, rid, body))
                self._senders.add(task)
                task.add_done_callback(self._senders.discard)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1 / self.rate)
            if self._senders:  # senders still retrying finish (acknowledged or out of time)
                await asyncio.gather(*self._senders)

    async def _send(self, http: httpx.AsyncClient, rid: str, body: dict[str, Any]) -> None:
        self.posted.add(rid)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                r = await http.post(
                    "/api/v1/intake/app-reports", headers={"X-Api-Key": DEMO_API_KEYS["app"]}, json=body
                )
            except httpx.HTTPError:
                r = None
            if r is not None and rid in self.poisoned and r.status_code == 422:
                fields = [f["field"] for f in r.json().get("fields", [])]
                if self.poisoned[rid] in fields:
                    self.poison_refused.add(rid)
                    return
            if r is not None and r.status_code in (200, 202):
                self.acknowledged[rid] = r.json()["tracking_no"]
                return
            if r is not None and r.status_code not in (502, 503, 504):
                self.refused[rid] = f"{r.status_code} {r.text[:200]}"
                return
            self.retries += 1
            await asyncio.sleep(0.5)


def _report(rid: str) -> dict[str, Any]:
    rng = random.Random(rid)
    return {
        "report_id": rid,
        "reporter_id": f"resident-{rng.randrange(10_000)}",
        "reported_at": recent(),
        "category": rng.choice(CATEGORIES),
        "description": "演练上报",
        "lon": round(rng.uniform(106.508, 106.570), 6),
        "lat": round(rng.uniform(29.608, 29.650), 6),
        "photo_urls": [],
    }


@dataclass
class OperatorConsole:
    """A duty operator's page: keeps the board, dispatches new incidents, always reconnects."""

    settings: Settings
    token: str
    board: dict[str, dict[str, Any]] = field(default_factory=dict)  # open incidents by id
    versions: dict[str, int] = field(default_factory=dict)
    seq: int | None = None
    connects: int = 0
    dispatched: set[str] = field(default_factory=set)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    errors: list[dict[str, Any]] = field(default_factory=list)
    ws: Any = None  # the current connection

    async def run(self, stop: asyncio.Event) -> None:
        url = f"ws://{self.settings.http_host}:{self.settings.ws_port}"
        while not stop.is_set():
            try:
                async with connect(url, max_size=2**24, open_timeout=5) as ws:
                    await self._session(ws, stop)
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
                pass
            self.connected.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def cancel_open(self, timeout: float = 60.0) -> int:
        """Withdraw every open incident, the way the operator would (a cancel per incident,
        paced under the socket's rate limit, sent again if it did not take), so one drill's
        offers do not load the next one."""
        deadline = time.monotonic() + timeout
        last_sent: dict[str, float] = {}
        while self.board:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"incidents still open after cancelling: {sorted(self.board)[:10]}; "
                    f"last errors: {self.errors[-5:]}"
                )
            for iid in list(self.board):
                if self.ws is None or time.monotonic() - last_sent.get(iid, -10.0) < 5.0:
                    continue
                cancel = {"type": "cancel", "id": f"c-{iid}-{len(last_sent)}", "incident_id": iid}
                with contextlib.suppress(ConnectionClosed):
                    await self.ws.send(orjson.dumps({**cancel, "reason": "演练结束"}).decode())
                    last_sent[iid] = time.monotonic()
                await asyncio.sleep(0.08)
            await asyncio.sleep(0.3)
        return len(last_sent)

    async def _session(self, ws: Any, stop: asyncio.Event) -> None:
        self.ws = ws
        hello: dict[str, Any] = {"type": "auth", "id": "hello", "token": self.token}
        if self.seq is not None:
            hello["resume_from"] = self.seq
        await ws.send(orjson.dumps(hello).decode())
        self.connects += 1
        receiver = asyncio.ensure_future(ws.recv())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                done, _ = await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    return
                frame = orjson.loads(receiver.result())
                receiver = asyncio.ensure_future(ws.recv())
                await self._on(ws, frame)
        finally:
            receiver.cancel()
            stopper.cancel()

    async def _on(self, ws: Any, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "snapshot":
            self.board = {v["incident_id"]: v for v in frame["incidents"]}
            self.versions = {v["incident_id"]: int(v["version"]) for v in frame["incidents"]}
            self.seq = frame["seq"]
            self.connected.set()
        elif kind == "resumed":
            self.connected.set()
        elif kind == "delta":
            self.seq = frame["seq"]
            view = frame["incident"]
            self.versions[view["incident_id"]] = int(view["version"])
            if view["status"] not in OPEN:
                self.board.pop(view["incident_id"], None)
            else:
                self.board[view["incident_id"]] = view
        elif kind == "error":
            self.errors.append(frame)
        for view in list(self.board.values()):
            iid = view["incident_id"]
            if view["status"] == "new" and iid not in self.dispatched:
                self.dispatched.add(iid)  # one click; the dispatcher offers the plan's roles
                await ws.send(
                    orjson.dumps({"type": "dispatch", "id": f"d-{iid}", "incident_id": iid}).decode()
                )


ACTIVE_TASK = frozenset({"offered", "accepted", "en_route", "on_scene"})


@dataclass
class ResponderPhone:
    """A responder's phone page: its task list from the first frame, then each pushed change;
    it reconnects whenever the socket drops (and gets its list afresh)."""

    settings: Settings
    token: str
    tasks: dict[str, str] = field(default_factory=dict)  # task id -> state
    connects: int = 0
    listed: asyncio.Event = field(default_factory=asyncio.Event)  # the first task list arrived

    @property
    def active(self) -> set[str]:
        return {tid for tid, state in self.tasks.items() if state in ACTIVE_TASK}

    async def run(self, stop: asyncio.Event) -> None:
        url = f"ws://{self.settings.http_host}:{self.settings.ws_port}"
        while not stop.is_set():
            try:
                async with connect(url, open_timeout=5) as ws:
                    await ws.send(orjson.dumps({"type": "auth", "id": "hello", "token": self.token}).decode())
                    self.connects += 1
                    while not stop.is_set():
                        try:
                            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 0.5))
                        except TimeoutError:
                            continue
                        if frame.get("type") == "tasks":
                            self.tasks = {t["task_id"]: t["state"] for t in frame["tasks"]}
                            self.listed.set()
                        elif frame.get("type") == "task":
                            self.tasks[frame["task"]["task_id"]] = frame["task"]["state"]
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


async def phone_behind(pool: asyncpg.Pool, responder_id: str, phone: ResponderPhone) -> list[str]:
    """The phone's active tasks differ from the responder's active tasks in PostgreSQL."""
    rows = await pool.fetch(
        "SELECT task_id FROM tasks WHERE responder_id = $1 AND state = ANY($2::text[])",
        responder_id,
        sorted(ACTIVE_TASK),
    )
    truth = {r["task_id"] for r in rows}
    return (
        []
        if truth == phone.active
        else [f"phone of {responder_id} shows {sorted(phone.active)}, not {sorted(truth)}"]
    )


async def login(base_url: str, username: str = "duty", password: str = "duty-demo-2026") -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=15) as http:
        r = await http.post("/api/v1/auth/login", json={"username": username, "password": password})
        r.raise_for_status()
        return str(r.json()["token"])


# --- checks -------------------------------------------------------------------------------
@dataclass
class Findings:
    acknowledged: int = 0
    exactly_once: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.lost and not self.duplicated and not self.problems


async def reports_in_incidents(pool: asyncpg.Pool, tracking: list[str]) -> Findings:
    """Each acknowledged report: filed as its own incident once, and in exactly one incident
    that is still itself (a merged incident's reports belong to the one it merged into)."""
    rows = await pool.fetch(
        """SELECT r.tracking_no,
                  (SELECT count(*) FROM incidents i WHERE i.incident_id = 'INC-' || r.tracking_no) AS filed,
                  (SELECT count(*) FROM incident_reports ir JOIN incidents i USING (incident_id)
                    WHERE ir.tracking_no = r.tracking_no AND i.status <> 'merged') AS live
             FROM unnest($1::text[]) AS r(tracking_no)""",
        tracking,
    )
    found = Findings(acknowledged=len(tracking))
    for r in rows:
        if r["filed"] == 1 and r["live"] == 1:
            found.exactly_once += 1
        elif r["live"] > 1:
            found.duplicated.append(r["tracking_no"])
        else:
            found.lost.append(r["tracking_no"])
    return found


async def stuck_work(pool: asyncpg.Pool, redis: aioredis.Redis) -> list[str]:
    """Timers overdue or fired but never applied, offers nobody expired, live statuses that
    disagree with the tasks."""
    problems = []
    slack = ACCEPT_TIMEOUT_S + 12
    for r in await pool.fetch(
        """SELECT timer_id, kind, fire_at, fired_at FROM timers t
            WHERE cancelled_at IS NULL
              AND ((fired_at IS NULL AND fire_at < now() - make_interval(secs => $1))
                OR (fired_at < now() - make_interval(secs => $1) AND NOT EXISTS
                     (SELECT 1 FROM processed_events p WHERE p.event_id = 'timer:' || t.timer_id)))""",
        float(slack),
    ):
        problems.append(
            f"timer {r['timer_id']} ({r['kind']}) due {r['fire_at']} fired {r['fired_at']}: not applied"
        )
    for r in await pool.fetch(
        """SELECT t.task_id, t.responder_id, t.offered_at, t.incident_id, i.status,
                  (SELECT string_agg(format('%s due %s fired %s cancelled %s applied %s', m.kind, m.fire_at,
                                            m.fired_at, m.cancelled_at,
                                            EXISTS (SELECT 1 FROM processed_events p
                                                     WHERE p.event_id = 'timer:' || m.timer_id)), '; ')
                     FROM timers m WHERE m.task_id = t.task_id) AS timers
             FROM tasks t JOIN incidents i USING (incident_id)
            WHERE t.state = 'offered' AND t.offered_at < now() - make_interval(secs => $1)""",
        float(slack),
    ):
        problems.append(
            f"task {r['task_id']} offered to {r['responder_id']} at {r['offered_at']} ({r['status']}): "
            f"stuck; timers: {r['timers']}"
        )
    active = {
        r["responder_id"]
        for r in await pool.fetch(
            "SELECT responder_id FROM tasks WHERE state IN ('offered', 'accepted', 'en_route', 'on_scene')"
        )
    }
    ids = [r["responder_id"] for r in await pool.fetch("SELECT responder_id FROM responders")]
    pipe = redis.pipeline(transaction=False)
    for rid in ids:
        pipe.hget(topics.responder_key(rid), "status")
    for rid, status in zip(ids, await pipe.execute(), strict=True):
        want = b"busy" if rid in active else b"available"
        if status != want:
            problems.append(f"responder {rid} is {status!r} in live state, should be {want!r}")
    return problems


async def page_behind(pool: asyncpg.Pool, page: OperatorConsole) -> list[str]:
    """Open incidents the connected page shows at an older version than PostgreSQL (or not at all)."""
    rows = await pool.fetch(
        "SELECT incident_id, version FROM incidents WHERE status = ANY($1::text[])", sorted(OPEN)
    )
    return [
        f"{r['incident_id']} v{r['version']} shown as v{page.versions.get(r['incident_id'])}"
        for r in rows
        if page.versions.get(r["incident_id"]) != r["version"]
    ]
