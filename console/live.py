"""Live connections over WebSocket (the `websockets` library): consoles and responders' phones.

Protocol (docs/live-protocol.md). Consoles authenticate with their first frame, get a snapshot
with a sequence number, then every delta numbered after it, and may resume after a reconnect.
Responders get their own active tasks, then each change to one of their tasks, pushed at once.
Commands (dispatch, accept, ...) carry an id; the server checks who may send them, puts them on
the incident's command partition and acks; the dispatcher's refusal, if any, comes back as an
error frame with the same id, and the effect as deltas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from pydantic import ValidationError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from console.auth import Sessions, User
from console.board import Board, Delta
from streams.normalise import describe_validation_error
from streams.records import PositionFix

log = logging.getLogger(__name__)
MAX_FRAME = 64 * 1024
AUTH_TIMEOUT_S = 10.0
QUEUE_LIMIT = 2_000  # a connection this far behind is cut off rather than slowing others
CLOSE_UNAUTHORISED = 4401
CLOSE_TOO_SLOW = 4408
PENDING_LIMIT = 10_000

SendCommand = Callable[[dict[str, Any]], Awaitable[None]]
Recommender = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

# Operator commands and the fields each must carry (besides incident_id).
OPERATOR_COMMANDS: Final = {"dispatch", "remove", "resolve", "verify", "cancel", "merge", "split", "note"}
COMMANDERS_AND_OPERATORS: Final = {"operator", "commander"}
TASK_ACTIONS: Final = {"accept", "decline", "en_route", "on_scene", "done"}


def error_frame(code: str, message: str, command_id: Any = None) -> bytes:
    return orjson.dumps({"type": "error", "id": command_id, "code": code, "message": message})


def ack_frame(cid: Any, /, **extra: Any) -> bytes:
    return orjson.dumps({"type": "ack", "id": cid, **extra})


class Client:
    def __init__(self, ws: ServerConnection, user: User) -> None:
        self.ws = ws
        self.user = user
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_LIMIT)

    def offer(self, frame: bytes) -> bool:
        try:
            self.queue.put_nowait(frame)
            return True
        except asyncio.QueueFull:
            return False


def responder_task(task: dict[str, Any], incident: dict[str, Any]) -> dict[str, Any]:
    """What a responder's phone shows: the task and the incident, without personal data."""
    loc = incident.get("location") or {}
    return {
        **task,
        "incident": {
            "incident_id": incident["incident_id"],
            "title": incident["title"],
            "category_label": incident.get("category_label"),
            "severity": incident["severity"],
            "description": incident.get("description", ""),
            "status": incident["status"],
            "status_label": incident.get("status_label"),
            "occurred_at": incident.get("occurred_at"),
            "location": {k: loc.get(k) for k in ("lon", "lat", "address", "grid_name", "community_name")},
            "camera": incident.get("camera"),
            "photo_urls": incident.get("photo_urls", []),
        },
    }


class LiveHub:
    """Owns the board and every connection. `publish` is called for each Kafka event."""

    def __init__(
        self,
        board: Board,
        sessions: Sessions,
        send_command: SendCommand | None = None,
        recommender: Recommender | None = None,
        send_position: SendCommand | None = None,
    ) -> None:
        self.board = board
        self._sessions = sessions
        self._send_command = send_command
        self._recommender = recommender
        self._send_position = send_position
        self._clients: set[Client] = set()  # consoles
        self._responders: dict[str, set[Client]] = {}  # responder id -> their phones
        self._pending: OrderedDict[str, tuple[Client, Any]] = OrderedDict()  # command id -> who asked
        self._closing: set[asyncio.Task[None]] = set()  # owned until each close completes

    @property
    def client_count(self) -> int:
        return len(self._clients) + sum(len(c) for c in self._responders.values())

    # --- from Kafka -----------------------------------------------------------------------
    def publish(self, message: dict[str, Any]) -> Delta | None:
        if message.get("type") == "command.refused":
            self._refused(message)
            return None
        delta = self.board.apply(message)
        if delta is None:
            return None
        for client in list(self._clients):
            self._push(client, delta.frame)
        self._push_tasks(message)
        return delta

    def _push(self, client: Client, frame: bytes) -> None:
        if client.offer(frame):
            return
        log.warning("%s too slow, disconnecting", client.user.username)
        self._forget(client)
        task = asyncio.create_task(client.ws.close(CLOSE_TOO_SLOW, "too slow"))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _push_tasks(self, message: dict[str, Any]) -> None:
        data = message.get("data") or {}
        if not str(message.get("type", "")).startswith("task.") or "task_id" not in data:
            return
        phones = self._responders.get(str(data.get("responder_id")))
        if not phones:
            return
        incident = message["incident"]
        task = next((t for t in incident.get("tasks", []) if t["task_id"] == data["task_id"]), None)
        if task is None:
            return
        frame = orjson.dumps(
            {"type": "task", "event": message["type"], "task": responder_task(task, incident)}
        )
        for phone in list(phones):
            self._push(phone, frame)

    def _refused(self, message: dict[str, Any]) -> None:
        asked = self._pending.pop(str(message.get("command_id")), None)
        if asked is None:
            return  # asked on another console server, or long ago
        client, client_id = asked
        client.offer(error_frame("refused", str(message.get("reason")), client_id))

    # --- connections ----------------------------------------------------------------------
    async def handler(self, ws: ServerConnection) -> None:
        auth = await self._authenticate(ws)
        if auth is None:
            return
        user, hello = auth
        # No await between the first frames and joining: no delta can fall in between.
        client = Client(ws, user)
        me = {
            "username": user.username,
            "display_name": user.display_name,
            "role": user.role,
            "responder_id": user.responder_id,
        }
        client.offer(ack_frame(hello.get("id"), user=me))
        if user.role == "responder" and user.responder_id:
            client.offer(self._my_tasks(user.responder_id))
            self._responders.setdefault(user.responder_id, set()).add(client)
        else:
            resume = hello.get("resume_from")
            for frame in self._start_frames(resume if isinstance(resume, int) else None):
                client.offer(frame)
            self._clients.add(client)
        sender = asyncio.create_task(self._send_loop(client), name=f"ws-send-{user.username}")
        try:
            async for raw in ws:
                await self._command(client, raw)
        except ConnectionClosed:
            pass
        finally:
            self._forget(client)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    def _forget(self, client: Client) -> None:
        self._clients.discard(client)
        rid = client.user.responder_id
        if rid and rid in self._responders:
            self._responders[rid].discard(client)
            if not self._responders[rid]:
                del self._responders[rid]

    def _my_tasks(self, responder_id: str) -> bytes:
        tasks = [
            responder_task(t, incident)
            for incident in self.board.open_incidents()
            for t in incident.get("tasks", [])
            if t["responder_id"] == responder_id
            and t["state"] in ("offered", "accepted", "en_route", "on_scene")
        ]
        return orjson.dumps({"type": "tasks", "tasks": tasks})

    async def _send_loop(self, client: Client) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                frame = await client.queue.get()
                await client.ws.send(frame.decode())

    async def _authenticate(self, ws: ServerConnection) -> tuple[User, dict[str, Any]] | None:
        try:
            raw = await asyncio.wait_for(ws.recv(), AUTH_TIMEOUT_S)
        except (TimeoutError, ConnectionClosed):
            with contextlib.suppress(ConnectionClosed):
                await ws.close(CLOSE_UNAUTHORISED, "authenticate first")
            return None
        msg = _decode(raw)
        if msg is None or msg.get("type") != "auth":
            await ws.send(
                error_frame(
                    "unauthorised",
                    'first frame must be {"type": "auth", "token": ...}',
                    msg.get("id") if msg else None,
                ).decode()
            )
            await ws.close(CLOSE_UNAUTHORISED, "authenticate first")
            return None
        user = await self._sessions.user(msg.get("token") if isinstance(msg.get("token"), str) else None)
        if user is None:
            await ws.send(
                error_frame("unauthorised", "invalid or expired session token", msg.get("id")).decode()
            )
            await ws.close(CLOSE_UNAUTHORISED, "invalid token")
            return None
        return user, msg

    def _start_frames(self, resume_from: int | None) -> list[bytes]:
        if resume_from is not None:
            missed = self.board.since(resume_from)
            if missed is not None:
                return [
                    orjson.dumps({"type": "resumed", "from": resume_from, "seq": self.board.seq}),
                    *(d.frame for d in missed),
                ]
            snap = orjson.loads(self.board.snapshot())
            snap["resync"] = True
            return [orjson.dumps(snap)]
        return [self.board.snapshot()]

    # --- commands -------------------------------------------------------------------------
    async def _command(self, client: Client, raw: str | bytes) -> None:
        if len(raw) > MAX_FRAME:
            client.offer(error_frame("too_large", f"frame larger than {MAX_FRAME} bytes"))
            return
        msg = _decode(raw)
        if msg is None:
            client.offer(error_frame("malformed", "frame is not a JSON object"))
            return
        cid = msg.get("id")
        kind = msg.get("type")
        is_responder = client.user.role == "responder"
        if kind == "ping":
            client.offer(ack_frame(cid, seq=self.board.seq))
        elif kind == "snapshot" and not is_responder:
            client.offer(ack_frame(cid))
            client.offer(self.board.snapshot())
        elif kind == "resume" and not is_responder:
            since = msg.get("since")
            if not isinstance(since, int):
                client.offer(error_frame("invalid", "resume needs an integer 'since'", cid))
                return
            client.offer(ack_frame(cid))
            for frame in self._start_frames(since):
                client.offer(frame)
        elif kind == "recommend" and not is_responder:
            await self._recommend(client, msg)
        elif kind in OPERATOR_COMMANDS:
            await self._operator_command(client, msg)
        elif kind == "task":
            await self._task_command(client, msg)
        elif kind == "position":
            await self._position(client, msg)
        else:
            client.offer(error_frame("unknown_command", f"unknown command type {kind!r}", cid))

    async def _operator_command(self, client: Client, msg: dict[str, Any]) -> None:
        cid = msg.get("id")
        if client.user.role not in COMMANDERS_AND_OPERATORS:
            client.offer(error_frame("forbidden", f"a {client.user.role} cannot {msg['type']}", cid))
            return
        incident_id = msg.get("incident_id")
        if not isinstance(incident_id, str) or not incident_id:
            client.offer(error_frame("invalid", "incident_id: missing", cid))
            return
        data: dict[str, Any] = {}
        fields = (
            ("responders", list),
            ("responder_id", str),
            ("passed", bool),
            ("into", str),
            ("from", str),
            ("text", str),
        )
        for name, types in fields:
            if name in msg:
                if not isinstance(msg[name], types):
                    client.offer(error_frame("invalid", f"{name}: wrong type", cid))
                    return
                data[name] = msg[name]
        await self._enqueue(client, msg, incident_id, msg["type"], data)

    async def _recommend(self, client: Client, msg: dict[str, Any]) -> None:
        """The plan filled from live state now: it follows positions and statuses (read-only)."""
        cid = msg.get("id")
        incident_id = msg.get("incident_id")
        view = self.board.incident(incident_id) if isinstance(incident_id, str) else None
        if view is None:
            client.offer(error_frame("invalid", "incident_id: not an open incident", cid))
            return
        if self._recommender is None:
            client.offer(error_frame("unavailable", "recommendations are not served here", cid))
            return
        try:
            rec = await self._recommender(view)
        except Exception as exc:
            log.warning("recommendation for %s failed: %r", view["incident_id"], exc)
            client.offer(error_frame("unavailable", "live state unavailable, retry", cid))
            return
        client.offer(
            orjson.dumps({"type": "recommendation", "id": cid, "incident_id": view["incident_id"], **rec})
        )

    async def _task_command(self, client: Client, msg: dict[str, Any]) -> None:
        cid = msg.get("id")
        rid = client.user.responder_id
        if client.user.role != "responder" or not rid:
            client.offer(error_frame("forbidden", "only responders act on tasks", cid))
            return
        action = msg.get("task_action")
        if action not in TASK_ACTIONS:
            client.offer(
                error_frame("invalid", f"task_action: one of {', '.join(sorted(TASK_ACTIONS))}", cid)
            )
            return
        task_id = msg.get("task_id")
        owner = self.board.task_owner(task_id) if isinstance(task_id, str) else None
        if owner is None or owner[1] != rid:
            client.offer(error_frame("forbidden", f"task {task_id!r} is not yours", cid))
            return
        data: dict[str, Any] = {"task_id": task_id, "task_action": action}
        for name in ("note", "photo_urls", "passed"):
            if name in msg:
                data[name] = msg[name]
        await self._enqueue(client, msg, owner[0], "task", data)

    async def _position(self, client: Client, msg: dict[str, Any]) -> None:
        """A responder's phone shares where it is (geolocation, or typed in by hand)."""
        cid = msg.get("id")
        rid = client.user.responder_id
        if client.user.role != "responder" or not rid:
            client.offer(error_frame("forbidden", "only responders share a position", cid))
            return
        if self._send_position is None:
            client.offer(error_frame("unavailable", "positions are not accepted here", cid))
            return
        try:
            fix = PositionFix.model_validate(
                {
                    "responder_id": rid,
                    "lon": msg.get("lon"),
                    "lat": msg.get("lat"),
                    "at": datetime.now(UTC),
                    "accuracy_m": msg.get("accuracy_m"),
                }
            )
        except ValidationError as exc:
            client.offer(error_frame("invalid", describe_validation_error(exc), cid))
            return
        try:
            await self._send_position(fix.model_dump(mode="json"))
        except Exception as exc:
            log.warning("could not queue a position for %s: %r", rid, exc)
            client.offer(error_frame("unavailable", "position not accepted, retry", cid))
            return
        client.offer(ack_frame(cid))

    async def _enqueue(
        self, client: Client, msg: dict[str, Any], incident_id: str, action: str, data: dict[str, Any]
    ) -> None:
        cid = msg.get("id")
        if not isinstance(cid, str | int) or isinstance(cid, bool) or len(str(cid)) > 100:
            client.offer(error_frame("invalid", "id: each command needs a string or number id", cid))
            return
        reason = msg.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
            client.offer(error_frame("invalid", "reason: a string of at most 500 characters", cid))
            return
        if self._send_command is None:
            client.offer(error_frame("unavailable", "commands are not accepted here", cid))
            return
        command_id = f"{client.user.actor}:{cid}"  # a client's retry of the same id has one effect
        command = {
            "command_id": command_id,
            "incident_id": incident_id,
            "action": action,
            "actor": client.user.actor,
            "at": datetime.now(UTC).isoformat(),
            "reason": reason,
            "data": data,
        }
        try:
            await self._send_command(command)
        except Exception as exc:
            log.warning("could not queue %s: %r", command_id, exc)
            client.offer(error_frame("unavailable", "command not queued, retry", cid))
            return
        self._pending[command_id] = (client, cid)
        while len(self._pending) > PENDING_LIMIT:
            self._pending.popitem(last=False)
        client.offer(ack_frame(cid, queued=True, command_id=command_id))


def _decode(raw: str | bytes) -> dict[str, Any] | None:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return msg if isinstance(msg, dict) else None
