"""A real live server in the test process: LiveHub + the same `serve_live` the console uses, on a
free port, with a real Board and real Sessions on the test PostgreSQL. Kafka is replaced by lists
that record what the hub would have produced (commands, positions); nothing else is faked.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from console.addresses import trusted_networks
from console.auth import Sessions
from console.board import Board
from console.live import LiveHub, LiveLimits, SendCommand, serve_live
from console.passwords import hash_password

PASSWORD = "live-test-password"
ORIGIN = "http://127.0.0.1:8080"
_HASH: list[str] = []

# The people of one test centre: their role and, for responders, whether they get a responder id.
PEOPLE: dict[str, tuple[str, bool]] = {
    "operator": ("operator", False),
    "commander": ("commander", False),
    "viewer": ("viewer", False),
    "admin": ("admin", False),
    "responder": ("responder", True),  # holds the task on incident A
    "other_responder": ("responder", True),  # holds the task on incident B
    "idless_responder": ("responder", False),  # a responder account with no responder id
}


def incident_view(
    incident_id: str, version: int = 1, status: str = "dispatched", tasks: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "incident_id": incident_id,
        "status": status,
        "status_label": status,
        "version": version,
        "source": "hotline",
        "category": "cooking_fumes",
        "category_label": "餐饮油烟",
        "severity": 3,
        "title": "餐饮油烟·清晖岸小区3栋",
        "description": "楼下饭店油烟太大",
        "occurred_at": "2026-11-22T01:30:00+00:00",
        "caller_phone": "13800138000",
        "caller_name": "李女士",
        "reporter_id": "resident-1029",
        "location": {"lon": 106.53, "lat": 29.63, "address": "清晖岸小区3栋"},
        "tasks": tasks or [],
    }


def task(task_id: str, responder_id: str, state: str = "offered") -> dict[str, Any]:
    return {"task_id": task_id, "responder_id": responder_id, "state": state, "kind": "response"}


@dataclass
class Centre:
    hub: LiveHub
    board: Board
    sessions: Sessions
    url: str
    tokens: dict[str, str]  # person -> session token
    responder_ids: dict[str, str]  # person -> responder id
    commands: list[dict[str, Any]] = field(default_factory=list)
    positions: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    incident_a: str = ""
    incident_b: str = ""
    task_a: str = ""
    task_b: str = ""

    def event(self, incident_id: str, status: str = "dispatched", **extra: Any) -> dict[str, Any]:
        """The next `incidents.events` message for an incident (its version one higher)."""
        version = self.versions.get(incident_id, 0) + 1
        self.versions[incident_id] = version
        tasks = extra.pop("tasks", None)
        if tasks is None:
            current = self.board.incident(incident_id)
            tasks = list(current["tasks"]) if current else []
        view = incident_view(incident_id, version, status, tasks)
        view.update(extra)
        return {
            "event_id": f"{incident_id}:{version}",
            "incident_id": incident_id,
            "version": version,
            "type": "incident.note",
            "actor": "system:test",
            "at": "2026-11-22T01:40:00+00:00",
            "state": status,
            "public": False,
            "reason": None,
            "incident": view,
        }

    def publish(self, incident_id: str | None = None, **extra: Any) -> int:
        """Publish one change; returns its delta's seq."""
        delta = self.hub.publish(self.event(incident_id or self.incident_a, **extra))
        assert delta is not None
        return delta.seq

    async def open(
        self,
        person: str,
        origin: str | None = None,
        rcvbuf: int | None = None,
        headers: dict[str, str] | None = None,
        **hello: Any,
    ) -> Peer:
        """Connect and authenticate as `person`; the peer has read the ack and the first frame."""
        peer = await Peer.connect(self.url, origin, rcvbuf, headers)
        await peer.send({"type": "auth", "id": "hello", "token": self.tokens[person], **hello})
        ack = await peer.recv()
        assert ack["type"] == "ack" and ack["id"] == "hello", ack
        peer.first = await peer.recv()
        if peer.first["type"] == "snapshot":
            peer.seq = peer.first["seq"]
        return peer


class Peer:
    """A WebSocket client that keeps every frame it read."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.first: dict[str, Any] = {}
        self.seq: int | None = None
        self.n = 0

    @classmethod
    async def connect(
        cls,
        url: str,
        origin: str | None = None,
        rcvbuf: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> Peer:
        """`rcvbuf`: a small kernel receive buffer, for a peer that will stop reading."""
        sock = None
        if rcvbuf is not None:
            host, port = url.removeprefix("ws://").split(":")
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        ws = await connect(
            url,
            origin=origin,  # type: ignore[arg-type]
            max_size=2**25,
            open_timeout=5,
            sock=sock,
            additional_headers=headers,
        )
        return cls(ws)

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            await self.ws.send(orjson.dumps(frame).decode())
        else:
            await self.ws.send(frame)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.frames.append(frame)
        if frame["type"] == "delta":
            assert self.seq is None or frame["seq"] == self.seq + 1, (self.seq, frame["seq"])
            self.seq = frame["seq"]
        return frame

    async def command(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Send a command and return the answer with its id (deltas on the way are kept)."""
        self.n += 1
        cid = f"{type_}-{self.n}"
        await self.send({"type": type_, "id": cid, **fields})
        return await self.answer(cid)

    async def answer(self, cid: Any, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if frame.get("id") == cid and frame["type"] != "snapshot":
                return frame

    async def next_of(self, *types: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if frame["type"] in types:
                return frame

    async def closed_with(self, timeout: float = 5.0) -> tuple[int | None, list[dict[str, Any]]]:
        """Read to the end: the close code the server sent and the frames before it."""
        got: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    got.append(orjson.loads(await self.ws.recv()))
        except ConnectionClosed as exc:
            return (exc.rcvd.code if exc.rcvd is not None else None), got

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2)


async def expect_delta(peer: Peer, centre: Centre) -> None:
    """The healthy console still gets the next change, in order."""
    seq = centre.publish()
    while (await peer.next_of("delta"))["seq"] != seq:  # Peer.recv checks there is no gap
        pass


async def _people(pg: asyncpg.Pool, ttl_s: int) -> tuple[Sessions, dict[str, str], dict[str, str]]:
    if not _HASH:
        _HASH.append(hash_password(PASSWORD))
    tag = uuid.uuid4().hex[:8]
    sessions = Sessions(pg, ttl_s)
    tokens: dict[str, str] = {}
    rids: dict[str, str] = {}
    for person, (role, has_rid) in PEOPLE.items():
        username = f"ws-{person}-{tag}"
        rid = f"P-ws-{person}-{tag}" if has_rid else None
        if rid:
            await pg.execute(
                "INSERT INTO responders (responder_id, name, kind, org) VALUES ($1, $2, 'police', $3)",
                rid,
                "测试民警",
                "测试派出所",
            )
            rids[person] = rid
        await pg.execute(
            """INSERT INTO users (username, display_name, role, password_hash, responder_id)
               VALUES ($1, $2, $3, $4, $5)""",
            username,
            f"测试{person}",
            role,
            _HASH[0],
            rid,
        )
        result = await sessions.login(username, PASSWORD)
        assert result is not None
        tokens[person] = result[0]
    return sessions, tokens, rids


@contextlib.asynccontextmanager
async def live_centre(
    pg: asyncpg.Pool,
    ttl_s: int = 3600,
    board: Board | None = None,
    recommender: Callable[[dict[str, Any]], Any] | None = None,
    send_position: SendCommand | None = None,
    trusted_proxies: str = "",
    **limits: Any,
) -> AsyncIterator[Centre]:
    """A live server with two open incidents, A (a task of `responder`) and B (a task of
    `other_responder`), and a logged-in session for each person. Phones' positions are kept in
    `centre.positions`, or handed to `send_position` (the real producer) when given."""
    sessions, tokens, rids = await _people(pg, ttl_s)
    board = board if board is not None else Board()
    tag = uuid.uuid4().hex[:6]
    a, b = f"INC-A-{tag}", f"INC-B-{tag}"
    board.load(
        [
            incident_view(a, tasks=[task(f"T-A-{tag}", rids["responder"])]),
            incident_view(b, tasks=[task(f"T-B-{tag}", rids["other_responder"])]),
        ]
    )

    async def rec(view: dict[str, Any]) -> dict[str, Any]:
        return {"plan": [], "picks": [], "shortfall": []}

    centre = Centre(
        hub=None,  # type: ignore[arg-type]
        board=board,
        sessions=sessions,
        url="",
        tokens=tokens,
        responder_ids=rids,
        versions={a: 1, b: 1},
        incident_a=a,
        incident_b=b,
        task_a=f"T-A-{tag}",
        task_b=f"T-B-{tag}",
    )

    async def send_command(command: dict[str, Any]) -> None:
        centre.commands.append(command)

    async def keep_position(fix: dict[str, Any]) -> None:
        centre.positions.append(fix)

    hub = LiveHub(
        board,
        sessions,
        send_command,
        recommender or rec,
        send_position or keep_position,
        LiveLimits.for_session_ttl(ttl_s, **{"auth_timeout_s": 1.0, **limits}),
        trusted_proxies=trusted_networks(trusted_proxies),
    )
    centre.hub = hub
    stopping = asyncio.Event()
    async with serve_live(hub, "127.0.0.1", 0, [ORIGIN]) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        centre.url = f"ws://127.0.0.1:{port}"
        watcher = asyncio.create_task(hub.watch_sessions(stopping))
        try:
            yield centre
        finally:
            stopping.set()
            await watcher
            await hub.close_all()
