"""The live hub: every WebSocket connection of one console server (the `websockets` library),
consoles and responders' phones, around the sans-I/O protocol (console.live.protocol).

Consoles authenticate with their first frame, get a snapshot with a sequence number, then every
delta numbered after it, and may resume after a reconnect. Responders get their own active tasks,
then each change to one of their tasks, pushed at once. Commands (dispatch, accept, ...) carry an
id; the protocol checks who may send them and what they hold, the hub puts them on the incident's
command partition and acks; the dispatcher's refusal, if any, comes back as an error frame with
the same id, and the effect as deltas.

It is long (some 600 lines) because every connection's life is here in one place: joining,
fan-out of the board's deltas, commands awaiting the dispatcher, cutting slow or abusive clients
off and closing; what a frame may say is `protocol`, a socket's queue is `client`.

Hostile or broken clients are contained per connection: the handshake checks the Origin, every
frame is size-checked, rate-limited and validated, every command is checked against the user's
role and the object it names, each client's outgoing queue is bounded in frames and bytes, a
send that does not complete in time cuts the client off, and sockets whose session ended (idle
expiry, logout, account disabled) are closed. None of it slows the other clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from console.addresses import Networks, client_address
from console.auth import Sessions, User
from console.board import Board, Delta
from console.live.client import Client
from console.live.protocol import (
    CLOSE_FORBIDDEN,
    CLOSE_POLICY,
    CLOSE_SUPERSEDED,
    CLOSE_TOO_SLOW,
    CLOSE_UNAUTHORISED,
    COMMAND_ROLES,
    OPERATOR_COMMANDS,
    PENDING_LIMIT,
    RESPONDERS,
    Enqueue,
    Frame,
    LiveLimits,
    Refusal,
    ack_frame,
    command_of,
    echo_id,
    error_frame,
    hello,
    live_access,
    operator_command,
    position_fix,
    read_frame,
    recommend_for,
    recommendation_frame,
    responder_task,
    resume_since,
    resumed_frame,
    task_command,
    task_frame,
    tasks_frame,
)
from contracts.commands import Command, command_json
from contracts.states import ACTIVE_TASK_STATES

log = logging.getLogger(__name__)

SendCommand = Callable[[dict[str, Any]], Awaitable[None]]
Recommender = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
Handler = Callable[[Client, Frame], Awaitable[None]]


class LiveHub:
    """Owns the board and every connection. `publish` is called for each Kafka event."""

    def __init__(
        self,
        board: Board,
        sessions: Sessions,
        send_command: SendCommand | None = None,
        recommender: Recommender | None = None,
        send_position: SendCommand | None = None,
        limits: LiveLimits | None = None,
        trusted_proxies: Networks = (),
    ) -> None:
        self.board = board
        self._trusted = trusted_proxies
        self.limits = limits or LiveLimits.for_session_ttl(sessions.ttl_s)
        self._sessions = sessions
        self._send_command = send_command
        self._recommender = recommender
        self._send_position = send_position
        self._clients: set[Client] = set()  # consoles
        self._by_user: dict[str, list[Client]] = {}  # username -> their sockets, oldest first
        self._responders: dict[str, set[Client]] = {}  # responder id -> their phones
        # command id -> (who asked, their id for it, when to stop waiting for an answer)
        self._pending: OrderedDict[str, tuple[Client, Any, float]] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()  # owned until each close completes
        self._handlers: dict[str, Handler] = {
            "ping": self._ping,
            "snapshot": self._snapshot,
            "resume": self._resume,
            "recommend": self._recommend,
            **dict.fromkeys(OPERATOR_COMMANDS, self._operator_command),
            "task": self._task_command,
            "position": self._position,
        }
        if set(self._handlers) != set(COMMAND_ROLES):  # every command has a rule, every rule a command
            raise AssertionError("COMMAND_ROLES and the hub's handlers disagree")

    @property
    def client_count(self) -> int:
        return len(self._clients) + sum(len(c) for c in self._responders.values())

    def connected(self) -> list[Client]:
        return [*self._clients, *(p for phones in self._responders.values() for p in phones)]

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def console_count(self) -> int:
        return len(self._clients)

    def push_positions(self, frame: bytes) -> int:
        """One `positions` frame, encoded once by the feed (console/positions.py), to every
        console (the roles that read the board; phones are never sent one); returns how many
        took it. Positions are ephemeral and superseded by the next frames, so a console with
        `positions_backlog` frames or more queued skips this one instead of queueing it:
        positions never grow a slow client's queue nor get it cut off (deltas still do, `_push`)."""
        took = 0
        for client in self._clients:
            if client.closed or client.queued >= self.limits.positions_backlog or not client.offer(frame):
                continue
            took += 1
        return took

    # --- from Kafka -----------------------------------------------------------------------
    def publish(self, message: dict[str, Any]) -> Delta | None:
        if message.get("type") == "command.refused":
            self._refused(message)
            return None
        if message.get("type") == "command.done":  # applied without a visible change
            self._answered(str(message.get("command_id")))
            return None
        self._answered(command_of(message.get("event_id")))
        delta = self.board.apply(message)
        if delta is None:
            return None
        for client in list(self._clients):
            self._push(client, delta.frame)
        self._push_tasks(message)
        return delta

    def _make_room_for(self, user: User) -> None:
        """One user holds at most `connections_per_user` sockets: past it, their oldest are
        closed (4409). A stale tab goes; a script opening sockets in a loop holds no more."""
        mine = [c for c in self._by_user.get(user.username, ()) if not c.closed]
        for old in mine[: max(0, len(mine) - self.limits.connections_per_user + 1)]:
            log.warning("%s opened more than %d sockets: closing the oldest", user.actor, len(mine))
            last = error_frame(
                "superseded",
                f"more than {self.limits.connections_per_user} connections for this user: closed the oldest",
            )
            self._cut_off(old, CLOSE_SUPERSEDED, "superseded", last)

    def _snapshot_allowed(self, client: Client, cid: Any) -> bool:
        """A client's own snapshot (or resume, which may be one) at most every `snapshot_every_s`:
        deltas keep a board current, and a snapshot costs the server a whole board."""
        now = time.monotonic()
        if now - client.last_snapshot < self.limits.snapshot_every_s:
            wait = self.limits.snapshot_every_s - (now - client.last_snapshot)
            message = f"one snapshot every {self.limits.snapshot_every_s:g} s: ask again in {wait:.1f} s"
            self._push(client, error_frame("rate_limited", message, cid))
            return False
        client.last_snapshot = now
        return True

    def _push(self, client: Client, frame: bytes) -> None:
        if not client.offer(frame):
            log.warning("%s too slow (%d frames queued), disconnecting", client.user.actor, client.queued)
            self._cut_off(client, CLOSE_TOO_SLOW, "too slow")

    def _push_tasks(self, message: dict[str, Any]) -> None:
        """A task event goes to the phones of the responder it belongs to, and nobody else."""
        data = message.get("data") or {}
        if not str(message.get("type", "")).startswith("task.") or "task_id" not in data:
            return
        phones = self._responders.get(str(data.get("responder_id")))
        if not phones:
            return
        incident = message["incident"]
        task = next((t for t in incident.get("tasks", []) if t["task_id"] == data["task_id"]), None)
        if task is None or task.get("responder_id") != data.get("responder_id"):
            return
        frame = task_frame(message["type"], task, incident)
        for phone in list(phones):
            self._push(phone, frame)

    def _refused(self, message: dict[str, Any]) -> None:
        asked = self._answered(str(message.get("command_id")))
        if asked is None:
            return  # asked on another console server, or long ago
        client, client_id = asked
        self._push(client, error_frame("refused", str(message.get("reason")), client_id))

    def _answered(self, command_id: str | None) -> tuple[Client, Any] | None:
        """The dispatcher answered this command (applied or refused): stop waiting for it."""
        if command_id is None:
            return None
        entry = self._pending.pop(command_id, None)
        if entry is None:
            return None
        client, cid, _ = entry
        client.pending.discard(command_id)
        return client, cid

    def _expire_pending(self) -> None:
        now = time.monotonic()
        while self._pending:
            command_id, (client, _, deadline) = next(iter(self._pending.items()))
            if deadline > now and len(self._pending) <= PENDING_LIMIT:
                return
            self._pending.popitem(last=False)
            client.pending.discard(command_id)

    # --- connections ----------------------------------------------------------------------
    async def handler(self, ws: ServerConnection) -> None:
        auth = await self._authenticate(ws)
        if auth is None:
            return
        user, token, hello = auth
        # No await between the first frames and joining: no delta can fall in between.
        peer = ws.remote_address[0] if ws.remote_address else None
        forwarded = ws.request.headers.get("X-Forwarded-For") if ws.request is not None else None
        client = Client(ws, user, token, self.limits, client_address(peer, forwarded, self._trusted))
        me = {
            "username": user.username,
            "display_name": user.display_name,
            "role": user.role,
            "responder_id": user.responder_id,
        }
        client.offer(ack_frame(echo_id(hello.get("id")), user=me))
        self._make_room_for(user)
        self._by_user.setdefault(user.username, []).append(client)
        if user.role in RESPONDERS and user.responder_id:
            client.offer(self._my_tasks(user.responder_id))
            self._responders.setdefault(user.responder_id, set()).add(client)
        else:
            resume = hello.get("resume_from")
            valid = isinstance(resume, int) and not isinstance(resume, bool)
            for frame in self._start_frames(resume if valid else None):
                client.offer(frame)
            self._clients.add(client)
        sender = asyncio.create_task(self._send_loop(client), name=f"ws-send-{user.actor}")
        client.sender = sender
        try:
            async for raw in ws:
                if client.closed:
                    continue  # being cut off: the rest is not read
                await self._command(client, raw)
        except ConnectionClosed:
            pass
        finally:
            self._forget(client)
            client.drop_queue()
            if not client.closed:
                sender.cancel()
            await asyncio.wait([sender])

    def _forget(self, client: Client) -> None:
        self._clients.discard(client)
        mine = self._by_user.get(client.user.username)
        if mine is not None and client in mine:
            mine.remove(client)
            if not mine:
                del self._by_user[client.user.username]
        rid = client.user.responder_id
        if rid and rid in self._responders:
            self._responders[rid].discard(client)
            if not self._responders[rid]:
                del self._responders[rid]
        for command_id in client.pending:
            self._pending.pop(command_id, None)
        client.pending.clear()

    def _my_tasks(self, responder_id: str) -> bytes:
        tasks = [
            responder_task(t, incident)
            for incident in self.board.open_incidents()
            for t in incident.get("tasks", [])
            if t["responder_id"] == responder_id
            and t["state"] in ACTIVE_TASK_STATES
        ]
        return tasks_frame(tasks)

    async def _send_loop(self, client: Client) -> None:
        """The only writer of the socket while it is open; a frame the peer does not take in
        `send_timeout_s` (it stopped reading) cuts the client off."""
        try:
            while True:
                frame = await client.next_frame()
                async with asyncio.timeout(self.limits.send_timeout_s):
                    await client.ws.send(frame, text=True)
        except TimeoutError:
            log.warning(
                "%s did not read for %.0f s, disconnecting", client.user.actor, self.limits.send_timeout_s
            )
            self._cut_off(client, CLOSE_TOO_SLOW, "too slow")
        except ConnectionClosed:
            pass

    def _cut_off(self, client: Client, code: int, reason: str, last: bytes | None = None) -> None:
        """Stop serving a client now and close its socket in the background, bounded in time:
        `last` (an error frame) is sent first if the peer takes it."""
        if client.closed:
            return
        client.closed = True
        self._forget(client)
        client.drop_queue()
        sender = client.sender
        if sender is not None and sender is not asyncio.current_task():
            sender.cancel()
        task = asyncio.create_task(self._close(client, code, reason, last))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, client: Client, code: int, reason: str, last: bytes | None) -> None:
        ws = client.ws
        try:
            if client.sender is not None and client.sender is not asyncio.current_task():
                await asyncio.wait([client.sender])  # the writer has stopped
            async with asyncio.timeout(self.limits.close_timeout_s):
                if last is not None:
                    with contextlib.suppress(ConnectionClosed):
                        await ws.send(last, text=True)
                await ws.close(code, reason)
        except TimeoutError:
            log.warning("%s did not take the close frame, aborting the connection", client.user.actor)
            ws.transport.abort()
        except Exception:
            log.exception("closing %s failed", client.user.actor)
            ws.transport.abort()

    async def close_all(
        self, code: int = int(CloseCode.GOING_AWAY), reason: str = "server shutting down"
    ) -> None:
        """Shutdown: close every socket, bounded in time (a stuck peer cannot hold the server)."""
        for client in self.connected():
            self._cut_off(client, code, reason)
        if self._closing:
            await asyncio.wait(list(self._closing))

    async def _authenticate(self, ws: ServerConnection) -> tuple[User, str, dict[str, Any]] | None:
        try:
            raw = await asyncio.wait_for(ws.recv(), self.limits.auth_timeout_s)
        except (TimeoutError, ConnectionClosed):
            await self._refuse(ws, None, CLOSE_UNAUTHORISED, "authenticate first")
            return None
        first = hello(raw, self.limits)
        if isinstance(first, Refusal):
            await self._refuse(ws, first.frame, CLOSE_UNAUTHORISED, "authenticate first")
            return None
        token, msg = first
        cid = echo_id(msg.get("id"))
        user = await self._sessions.user(token) if token is not None else None
        if user is None or token is None:
            frame = error_frame("unauthorised", "invalid or expired session token", cid)
            await self._refuse(ws, frame, CLOSE_UNAUTHORISED, "invalid token")
            return None
        if not live_access(user.role, user.responder_id):
            log.warning("%s has no live access", user.actor)
            frame = error_frame("forbidden", f"the role {user.role!r} has no live access", cid)
            await self._refuse(ws, frame, CLOSE_FORBIDDEN, "no live access")
            return None
        return user, token, msg

    async def _refuse(self, ws: ServerConnection, frame: bytes | None, code: int, reason: str) -> None:
        """Before authentication: one error frame and the close, bounded in time."""
        try:
            async with asyncio.timeout(self.limits.close_timeout_s):
                if frame is not None:
                    await ws.send(frame, text=True)
                await ws.close(code, reason)
        except ConnectionClosed:
            pass
        except TimeoutError:
            ws.transport.abort()

    def _start_frames(self, resume_from: int | None) -> list[bytes]:
        if resume_from is not None:
            missed = self.board.since(resume_from)
            if missed is not None:
                return [resumed_frame(resume_from, self.board.seq), *(d.frame for d in missed)]
            return [self.board.snapshot(resync=True)]
        return [self.board.snapshot()]

    # --- sessions -------------------------------------------------------------------------
    async def watch_sessions(self, stopping: asyncio.Event) -> None:
        """Every `session_check_s`, close the sockets whose session has ended."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.limits.session_check_s)
            if stopping.is_set():
                return
            try:
                await self.check_sessions()
            except Exception as exc:
                log.warning("session check failed: %r", exc)

    async def check_sessions(self) -> int:
        """Look at (without refreshing) each socket's session; close those that ended. Returns
        how many were closed. An unreachable session store closes nobody."""
        ended = 0
        clients = self.connected()
        for start in range(0, len(clients), 50):
            chunk = clients[start : start + 50]
            found = await asyncio.gather(
                *(self._sessions.peek(c.token) for c in chunk), return_exceptions=True
            )
            for client, user in zip(chunk, found, strict=True):
                if isinstance(user, BaseException):
                    log.warning("session of %s not checked: %r", client.user.actor, user)
                elif user is None and not client.closed:
                    self._session_ended(client)
                    ended += 1
        return ended

    def _session_ended(self, client: Client, cid: Any = None) -> None:
        log.info("session of %s ended, closing its socket", client.user.actor)
        last = error_frame("session_expired", "your session has ended: log in again", cid)
        self._cut_off(client, CLOSE_UNAUTHORISED, "session expired", last)

    # --- commands -------------------------------------------------------------------------
    async def _command(self, client: Client, raw: str | bytes) -> None:
        if not client.take_token():
            if client.abusive:
                log.warning("%s keeps flooding, disconnecting", client.user.actor)
                last = error_frame("rate_limited", "too many frames, disconnected")
                self._cut_off(client, CLOSE_POLICY, "too many frames", last)
            else:
                self._push(
                    client,
                    error_frame(
                        "rate_limited",
                        f"more than {self.limits.rate_per_s:g} frames a second: frame dropped, slow down",
                    ),
                )
            return
        frame = read_frame(raw, client.user.role, self.limits)
        if isinstance(frame, Refusal):
            self._push(client, frame.frame)
            return
        cid = frame.cid
        if frame.kind != "ping":  # a command is activity: it keeps the session alive, if it still is
            try:
                alive = await self._sessions.user(client.token)
            except Exception as exc:
                log.warning("session of %s not checked: %r", client.user.actor, exc)
                self._push(client, error_frame("unavailable", "session store unavailable, retry", cid))
                return
            if alive is None:
                self._session_ended(client, cid)
                return
        await self._handlers[frame.kind](client, frame)

    async def _ping(self, client: Client, frame: Frame) -> None:
        self._push(client, ack_frame(frame.cid, seq=self.board.seq))

    async def _snapshot(self, client: Client, frame: Frame) -> None:
        if not self._snapshot_allowed(client, frame.cid):
            return
        self._push(client, ack_frame(frame.cid))
        self._push(client, self.board.snapshot())

    async def _resume(self, client: Client, frame: Frame) -> None:
        since = resume_since(frame)
        if isinstance(since, Refusal):
            self._push(client, since.frame)
            return
        if not self._snapshot_allowed(client, frame.cid):
            return
        self._push(client, ack_frame(frame.cid))
        for start in self._start_frames(since):
            self._push(client, start)

    async def _operator_command(self, client: Client, frame: Frame) -> None:
        await self._enqueue(client, operator_command(frame, self.board))

    async def _task_command(self, client: Client, frame: Frame) -> None:
        await self._enqueue(client, task_command(frame, client.user.responder_id, self.board))

    async def _recommend(self, client: Client, frame: Frame) -> None:
        """The plan filled from live state now: it follows positions and statuses (read-only)."""
        view = recommend_for(frame, self.board)
        if isinstance(view, Refusal):
            self._push(client, view.frame)
            return
        if self._recommender is None:
            self._push(client, error_frame("unavailable", "recommendations are not served here", frame.cid))
            return
        try:
            rec = await self._recommender(view)
        except Exception as exc:
            log.warning("recommendation for %s failed: %r", view["incident_id"], exc)
            self._push(client, error_frame("unavailable", "live state unavailable, retry", frame.cid))
            return
        self._push(client, recommendation_frame(frame.cid, view["incident_id"], rec))

    async def _position(self, client: Client, frame: Frame) -> None:
        """A responder's phone shares where it is (geolocation, or typed in by hand)."""
        rid = client.user.responder_id
        if self._send_position is None or not rid:
            self._push(client, error_frame("unavailable", "positions are not accepted here", frame.cid))
            return
        fix = position_fix(frame, rid, datetime.now(UTC))
        if isinstance(fix, Refusal):
            self._push(client, fix.frame)
            return
        try:
            await self._send_position(fix.model_dump(mode="json"))
        except Exception as exc:
            log.warning("could not queue a position for %s: %r", rid, exc)
            self._push(client, error_frame("unavailable", "position not accepted, retry", frame.cid))
            return
        self._push(client, ack_frame(frame.cid))

    async def _enqueue(self, client: Client, request: Enqueue | Refusal) -> None:
        """Queue a validated command for the dispatcher and wait for its answer (routed back to
        this client as an error frame if it is refused)."""
        if isinstance(request, Refusal):
            self._push(client, request.frame)
            return
        cid = request.cid
        if self._send_command is None:
            self._push(client, error_frame("unavailable", "commands are not accepted here", cid))
            return
        self._expire_pending()
        if len(client.pending) >= self.limits.pending_per_client:
            self._push(
                client,
                error_frame(
                    "too_many_pending",
                    f"{len(client.pending)} commands still await the dispatcher: wait for their answers",
                    cid,
                ),
            )
            return
        command_id = f"{client.user.actor}:{cid}"  # a client's retry of the same id has one effect
        actor, now, origin = client.user.actor, datetime.now(UTC), client.origin
        action, incident_id, reason, data = request.action, request.incident_id, request.reason, request.data
        command = command_json(Command(action, incident_id, command_id, actor, now, reason, data, origin))
        try:
            await self._send_command(command)
        except Exception as exc:
            log.warning("could not queue %s: %r", command_id, exc)
            self._push(client, error_frame("unavailable", "command not queued, retry", cid))
            return
        if client.closed:
            return
        self._pending[command_id] = (client, cid, time.monotonic() + self.limits.pending_ttl_s)
        self._pending.move_to_end(command_id)
        client.pending.add(command_id)
        self._expire_pending()
        self._push(client, ack_frame(cid, queued=True, command_id=command_id))


def serve_live(hub: LiveHub, host: str, port: int, origins: Iterable[str] | None) -> Server:
    """The WebSocket server (use as `async with`): Origin allowlist at the handshake (a missing
    Origin is allowed: browsers always send one; scripts and phones' apps authenticate by token
    like everyone), frames over `max_message` closed by the library with 1009, a bounded write
    buffer, keepalive pings, and no compression (see below)."""
    limits = hub.limits
    return serve(
        hub.handler,
        host,
        port,
        origins=None if origins is None else [*origins, None],  # type: ignore[list-item]
        max_size=limits.max_message,
        max_queue=16,
        write_limit=limits.write_limit,
        # No permessage-deflate: it compresses every frame again for every connection (its
        # context is per connection), so a delta shared by 20 consoles was deflated 20 times;
        # the benchmark's profile had it at a fifth of the console server's CPU.
        compression=None,
        ping_interval=limits.ping_interval_s,
        ping_timeout=limits.ping_timeout_s,
        close_timeout=limits.close_timeout_s,
    )
