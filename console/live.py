"""Live consoles over WebSocket (the `websockets` library): snapshot, then ordered deltas.

Protocol (docs/live-protocol.md): the client authenticates with its first frame, gets a
snapshot with a sequence number, then every delta numbered after it. A client that
reconnects may ask to resume from its last sequence number and gets exactly the deltas it
missed, or a fresh snapshot marked as a resync. Every command carries an id and is answered
by an ack or an error frame naming the problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from console.auth import Sessions, User
from console.board import Board, Delta

log = logging.getLogger(__name__)
MAX_FRAME = 64 * 1024
AUTH_TIMEOUT_S = 10.0
QUEUE_LIMIT = 2_000  # a console this far behind is cut off rather than slowing others
CLOSE_UNAUTHORISED = 4401
CLOSE_TOO_SLOW = 4408


def error_frame(code: str, message: str, command_id: Any = None) -> bytes:
    return orjson.dumps({"type": "error", "id": command_id, "code": code, "message": message})


def ack_frame(command_id: Any, **extra: Any) -> bytes:
    return orjson.dumps({"type": "ack", "id": command_id, **extra})


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


class LiveHub:
    """Owns the board and the connected consoles. `publish` is called for each Kafka event."""

    def __init__(self, board: Board, sessions: Sessions) -> None:
        self.board = board
        self._sessions = sessions
        self._clients: set[Client] = set()
        self._closing: set[asyncio.Task[None]] = set()  # owned until each close completes

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def publish(self, message: dict[str, Any]) -> Delta | None:
        delta = self.board.apply(message)
        if delta is None:
            return None
        for client in list(self._clients):
            if not client.offer(delta.frame):
                log.warning("console %s too slow, disconnecting", client.user.username)
                self._clients.discard(client)
                task = asyncio.create_task(client.ws.close(CLOSE_TOO_SLOW, "too slow"))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        return delta

    async def handler(self, ws: ServerConnection) -> None:
        auth = await self._authenticate(ws)
        if auth is None:
            return
        user, hello = auth
        # No await between the first frames and joining: no delta can fall in between.
        client = Client(ws, user)
        client.offer(
            ack_frame(
                hello.get("id"),
                user={"username": user.username, "display_name": user.display_name, "role": user.role},
            )
        )
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
            self._clients.discard(client)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

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
        if kind == "ping":
            client.offer(ack_frame(cid, seq=self.board.seq))
        elif kind == "snapshot":
            client.offer(ack_frame(cid))
            client.offer(self.board.snapshot())
        elif kind == "resume":
            since = msg.get("since")
            if not isinstance(since, int):
                client.offer(error_frame("invalid", "resume needs an integer 'since'", cid))
                return
            client.offer(ack_frame(cid))
            for frame in self._start_frames(since):
                client.offer(frame)
        else:
            client.offer(error_frame("unknown_command", f"unknown command type {kind!r}", cid))


def _decode(raw: str | bytes) -> dict[str, Any] | None:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return msg if isinstance(msg, dict) else None
