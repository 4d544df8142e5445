"""Live connections over WebSocket (the `websockets` library): consoles and responders' phones.

Protocol (docs/live-protocol.md). Consoles authenticate with their first frame, get a snapshot
with a sequence number, then every delta numbered after it, and may resume after a reconnect.
Responders get their own active tasks, then each change to one of their tasks, pushed at once.
Commands (dispatch, accept, ...) carry an id; the server checks who may send them, puts them on
the incident's command partition and acks; the dispatcher's refusal, if any, comes back as an
error frame with the same id, and the effect as deltas.

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
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from pydantic import ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from console.addresses import Networks, client_address
from console.auth import Sessions, User
from console.board import Board, Delta
from console.permissions import USER_PERMISSIONS, Perm
from console.ratelimit import TokenBucket
from contracts.commands import Command, command_json
from contracts.positions import PositionFix
from contracts.states import ACTIVE_TASK_STATES
from contracts.validation import describe_validation_error
from dispatcher.core.case import MAX_INCIDENT_NOTE_CHARS
from dispatcher.core.lifecycle import IllegalTransition
from dispatcher.core.task import check_note, check_photos
from infra.settings import Settings

log = logging.getLogger(__name__)

MAX_FRAME = 64 * 1024  # a larger command frame is answered `too_large`
MAX_MESSAGE = 2 * MAX_FRAME  # a larger one is not even read: the library closes with 1009
AUTH_TIMEOUT_S = 10.0
QUEUE_LIMIT = 2_000  # a connection this many frames behind is cut off rather than slowing others
PENDING_LIMIT = 10_000  # commands awaiting the dispatcher's answer, all clients together

CLOSE_POLICY = int(CloseCode.POLICY_VIOLATION)  # 1008: flooding after being told to slow down
CLOSE_TOO_BIG = int(CloseCode.MESSAGE_TOO_BIG)  # 1009: sent by the library itself
CLOSE_UNAUTHORISED = 4401  # no, a bad or an ended session: log in again
CLOSE_FORBIDDEN = 4403  # a valid session whose role has no live access
CLOSE_TOO_SLOW = 4408  # the client did not read its frames in time: reconnect and resume
CLOSE_SUPERSEDED = 4409  # the same user opened more connections than allowed: the oldest goes

SendCommand = Callable[[dict[str, Any]], Awaitable[None]]
Recommender = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


# --- who may do what ------------------------------------------------------------------------
def _roles_with(perm: Perm) -> frozenset[str]:
    return frozenset(role for role, perms in USER_PERMISSIONS.items() if perm in perms)


# From the one permission table (console/permissions.py): roles that watch the board (masked
# incidents), roles that may change a case, and responders, who see only their own tasks. A
# viewer and the system administrator watch and may ask for a recommendation (read-only).
CONSOLE_ROLES: Final = _roles_with(Perm.BOARD_READ)
COMMANDERS_AND_OPERATORS: Final = _roles_with(Perm.DISPATCH)
RESPONDERS: Final = _roles_with(Perm.OWN_TASKS_READ)
EVERYONE: Final = CONSOLE_ROLES | RESPONDERS
OPERATOR_COMMANDS: Final = frozenset(
    {"dispatch", "remove", "resolve", "verify", "cancel", "merge", "split", "note"}
)
TASK_ACTIONS: Final = frozenset({"accept", "decline", "en_route", "on_scene", "done"})

# Every command type the hub accepts and the roles that may send it. The hub routes only what
# is listed here (a handler without a rule cannot exist: see LiveHub.__init__), and
# tests/console/test_live_access.py sends every type as every role.
COMMAND_ROLES: Final[Mapping[str, frozenset[str]]] = {
    "ping": EVERYONE,
    "snapshot": CONSOLE_ROLES,
    "resume": CONSOLE_ROLES,
    "recommend": CONSOLE_ROLES,
    **dict.fromkeys(sorted(OPERATOR_COMMANDS), COMMANDERS_AND_OPERATORS),
    "task": RESPONDERS,
    "position": RESPONDERS,
}


@dataclass(frozen=True, slots=True)
class LiveLimits:
    """Every bound on one connection (docs/live-protocol.md, "Limits")."""

    max_frame: int = MAX_FRAME
    max_message: int = MAX_MESSAGE
    auth_timeout_s: float = AUTH_TIMEOUT_S
    queue_frames: int = QUEUE_LIMIT
    queue_bytes: int = 16 * 1024 * 1024  # frames are shared between clients: this over-counts
    positions_backlog: int = 32  # a console with this many frames queued skips positions frames
    write_limit: int = 64 * 1024  # the library's own buffer before `send` waits for the peer
    send_timeout_s: float = 20.0  # one frame not taken by the peer in this long: cut off
    close_timeout_s: float = 5.0  # closing handshake; then the TCP connection is aborted
    rate_per_s: float = 20.0  # commands a second, sustained
    rate_burst: int = 40  # commands at once
    strikes: int = 40  # frames refused for the rate (decaying one a second) before 1008
    pending_per_client: int = 100  # commands awaiting the dispatcher's answer
    pending_ttl_s: float = 120.0  # after which the server forgets to route the answer
    session_check_s: float = 30.0  # how often every socket's session is looked at
    connections_per_user: int = 6  # one user's sockets at once; a newer one closes the oldest
    snapshot_every_s: float = 2.0  # a client's own snapshot or resume at most this often
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0

    @classmethod
    def for_session_ttl(cls, ttl_s: float, **overrides: Any) -> LiveLimits:
        """Sessions are checked a few times per idle lifetime, never less often than every 30 s."""
        return replace(cls(session_check_s=max(0.2, min(30.0, ttl_s / 3))), **overrides)


def allowed_origins(settings: Settings) -> list[str] | None:
    """Origins whose pages may open the socket (None: any). Default: the console's own pages."""
    raw = settings.ws_allowed_origins.strip()
    if raw == "*":
        return None
    if raw:
        return [o.strip().rstrip("/") for o in raw.split(",") if o.strip()]
    hosts = {settings.http_host, "127.0.0.1", "localhost"} - {"", "0.0.0.0", "::"}
    return sorted(f"http://{h}:{settings.http_port}" for h in hosts)


def error_frame(code: str, message: str, command_id: Any = None) -> bytes:
    return orjson.dumps({"type": "error", "id": command_id, "code": code, "message": message})


def ack_frame(cid: Any, /, **extra: Any) -> bytes:
    return orjson.dumps({"type": "ack", "id": cid, **extra})


def _echo_id(value: Any) -> str | int | None:
    """The command id to answer with: only a short string or a number is echoed back."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    if isinstance(value, str) and len(value) > 100:
        return None
    return value


def _show(value: Any) -> str:
    """A client's value quoted in an error message, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Client:
    """One socket: its user and token, its outgoing queue (bounded in frames and bytes), its
    rate-limit bucket and the commands it is waiting on."""

    def __init__(
        self, ws: ServerConnection, user: User, token: str, limits: LiveLimits, origin: str | None = None
    ) -> None:
        self.ws = ws
        self.user = user
        self.token = token
        self.origin = origin  # the client's address (console.addresses), for the audit log
        self._limits = limits
        self._frames: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self.queued_bytes = 0
        self.closed = False  # being cut off: no more frames in or out
        self.sender: asyncio.Task[None] | None = None
        self.pending: set[str] = set()  # command ids awaiting the dispatcher
        self.last_snapshot = -float("inf")  # when this client last asked for a snapshot
        self._bucket = TokenBucket(limits.rate_per_s, float(limits.rate_burst))
        self._strikes = 0.0
        self._stamp = time.monotonic()

    @property
    def queued(self) -> int:
        return len(self._frames)

    def offer(self, frame: bytes) -> bool:
        """Queue a frame; False if the client is too far behind (nothing was queued)."""
        if self.closed:
            return True
        if self._frames and (
            len(self._frames) >= self._limits.queue_frames
            or self.queued_bytes + len(frame) > self._limits.queue_bytes
        ):
            return False
        self._frames.append(frame)
        self.queued_bytes += len(frame)
        self._ready.set()
        return True

    async def next_frame(self) -> bytes:
        while not self._frames:
            self._ready.clear()
            await self._ready.wait()
        frame = self._frames.popleft()
        self.queued_bytes -= len(frame)
        return frame

    def drop_queue(self) -> None:
        self._frames.clear()
        self.queued_bytes = 0

    def take_token(self, now: float | None = None) -> bool:
        """Token bucket (console.ratelimit): True if this frame is within the rate; a refusal
        counts as a strike, and strikes fade at one a second."""
        now = time.monotonic() if now is None else now
        elapsed, self._stamp = max(0.0, now - self._stamp), now
        self._strikes = max(0.0, self._strikes - elapsed)
        if self._bucket.take(now):
            return True
        self._strikes += 1.0
        return False

    @property
    def abusive(self) -> bool:
        return self._strikes > self._limits.strikes


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


def _command_of(event_id: Any) -> str | None:
    """The command an event came from: its id is the command id, or the command id + `#n`."""
    return event_id.split("#", 1)[0] if isinstance(event_id, str) else None


Handler = Callable[["Client", dict[str, Any]], Awaitable[None]]


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
        self._answered(_command_of(message.get("event_id")))
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
        frame = orjson.dumps(
            {"type": "task", "event": message["type"], "task": responder_task(task, incident)}
        )
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
        client.offer(ack_frame(_echo_id(hello.get("id")), user=me))
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
        return orjson.dumps({"type": "tasks", "tasks": tasks})

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
        if len(raw) > self.limits.max_frame:
            frame = error_frame("too_large", f"frame larger than {self.limits.max_frame} bytes")
            await self._refuse(ws, frame, CLOSE_UNAUTHORISED, "authenticate first")
            return None
        msg = _decode(raw)
        cid = _echo_id(msg.get("id")) if msg else None
        if msg is None or msg.get("type") != "auth":
            frame = error_frame("unauthorised", 'first frame must be {"type": "auth", "token": ...}', cid)
            await self._refuse(ws, frame, CLOSE_UNAUTHORISED, "authenticate first")
            return None
        token = msg.get("token")
        user = await self._sessions.user(token) if isinstance(token, str) else None
        if user is None or not isinstance(token, str):
            frame = error_frame("unauthorised", "invalid or expired session token", cid)
            await self._refuse(ws, frame, CLOSE_UNAUTHORISED, "invalid token")
            return None
        if not (user.role in CONSOLE_ROLES or (user.role in RESPONDERS and user.responder_id)):
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
                return [
                    orjson.dumps({"type": "resumed", "from": resume_from, "seq": self.board.seq}),
                    *(d.frame for d in missed),
                ]
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
        if len(raw) > self.limits.max_frame:
            self._push(client, error_frame("too_large", f"frame larger than {self.limits.max_frame} bytes"))
            return
        msg = _decode(raw)
        if msg is None:
            self._push(client, error_frame("malformed", "frame is not a JSON object"))
            return
        cid = _echo_id(msg.get("id"))
        nul = _nul_at(msg)
        if nul is not None:  # PostgreSQL cannot store it: refused here, not failed later
            self._push(client, error_frame("invalid", f"{nul}: must not contain the NUL character", cid))
            return
        kind = msg.get("type")
        if kind == "auth":
            self._push(client, error_frame("out_of_order", "already authenticated on this connection", cid))
            return
        roles = COMMAND_ROLES.get(kind) if isinstance(kind, str) else None
        if roles is None:
            self._push(client, error_frame("unknown_command", f"unknown command type {_show(kind)}", cid))
            return
        if client.user.role not in roles:
            self._push(client, error_frame("forbidden", f"a {client.user.role} cannot {kind}", cid))
            return
        if kind != "ping":  # a command is activity: it keeps the session alive, if it still is
            try:
                alive = await self._sessions.user(client.token)
            except Exception as exc:
                log.warning("session of %s not checked: %r", client.user.actor, exc)
                self._push(client, error_frame("unavailable", "session store unavailable, retry", cid))
                return
            if alive is None:
                self._session_ended(client, cid)
                return
        await self._handlers[str(kind)](client, msg)

    async def _ping(self, client: Client, msg: dict[str, Any]) -> None:
        self._push(client, ack_frame(_echo_id(msg.get("id")), seq=self.board.seq))

    async def _snapshot(self, client: Client, msg: dict[str, Any]) -> None:
        if not self._snapshot_allowed(client, _echo_id(msg.get("id"))):
            return
        self._push(client, ack_frame(_echo_id(msg.get("id"))))
        self._push(client, self.board.snapshot())

    async def _resume(self, client: Client, msg: dict[str, Any]) -> None:
        cid = _echo_id(msg.get("id"))
        since = msg.get("since")
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            self._push(client, error_frame("invalid", "since: a sequence number (integer >= 0)", cid))
            return
        if not self._snapshot_allowed(client, cid):
            return
        self._push(client, ack_frame(cid))
        for frame in self._start_frames(since):
            self._push(client, frame)

    async def _operator_command(self, client: Client, msg: dict[str, Any]) -> None:
        cid = _echo_id(msg.get("id"))
        incident_id = msg.get("incident_id")
        if not isinstance(incident_id, str) or not incident_id:
            self._push(client, error_frame("invalid", "incident_id: missing", cid))
            return
        if self.board.incident(incident_id) is None:
            self._push(client, error_frame("invalid", f"incident_id: {_show(incident_id)} is not open", cid))
            return
        data: dict[str, Any] = {}
        fields: tuple[tuple[str, type[Any], int], ...] = (
            ("responders", list, 50),
            ("responder_id", str, 100),
            ("passed", bool, 0),
            ("into", str, 100),
            ("from", str, 100),
            ("text", str, MAX_INCIDENT_NOTE_CHARS),
        )
        for name, kind, size in fields:
            if name not in msg:
                continue
            value = msg[name]
            if not isinstance(value, kind) or (size and len(value) > size):
                self._push(client, error_frame("invalid", f"{name}: wrong type or too long", cid))
                return
            if name == "responders" and not all(isinstance(r, str) and 0 < len(r) <= 100 for r in value):
                self._push(client, error_frame("invalid", "responders: a list of responder ids", cid))
                return
            data[name] = value
        await self._enqueue(client, msg, incident_id, msg["type"], data)

    async def _recommend(self, client: Client, msg: dict[str, Any]) -> None:
        """The plan filled from live state now: it follows positions and statuses (read-only)."""
        cid = _echo_id(msg.get("id"))
        incident_id = msg.get("incident_id")
        view = self.board.incident(incident_id) if isinstance(incident_id, str) else None
        if view is None:
            self._push(client, error_frame("invalid", "incident_id: not an open incident", cid))
            return
        if self._recommender is None:
            self._push(client, error_frame("unavailable", "recommendations are not served here", cid))
            return
        try:
            rec = await self._recommender(view)
        except Exception as exc:
            log.warning("recommendation for %s failed: %r", view["incident_id"], exc)
            self._push(client, error_frame("unavailable", "live state unavailable, retry", cid))
            return
        self._push(
            client,
            orjson.dumps({"type": "recommendation", "id": cid, "incident_id": view["incident_id"], **rec}),
        )

    async def _task_command(self, client: Client, msg: dict[str, Any]) -> None:
        cid = _echo_id(msg.get("id"))
        rid = client.user.responder_id
        action = msg.get("task_action")
        if action not in TASK_ACTIONS:
            self._push(
                client, error_frame("invalid", f"task_action: one of {', '.join(sorted(TASK_ACTIONS))}", cid)
            )
            return
        task_id = msg.get("task_id")
        owner = self.board.task_owner(task_id) if isinstance(task_id, str) else None
        if owner is None or owner[1] != rid:
            self._push(
                client, error_frame("forbidden", f"task {_show(task_id)} is not one of your open tasks", cid)
            )
            return
        data: dict[str, Any] = {"task_id": task_id, "task_action": action}
        note, photos, passed = msg.get("note"), msg.get("photo_urls"), msg.get("passed")
        try:  # the domain's own rules: what is acknowledged here, the dispatcher takes
            if note is not None:
                check_note(note)
            if photos is not None:
                check_photos(photos)
        except IllegalTransition as exc:
            self._push(client, error_frame("invalid", str(exc), cid))
            return
        if passed is not None and not isinstance(passed, bool):
            self._push(client, error_frame("invalid", "passed: true or false", cid))
            return
        for name, value in (("note", note), ("photo_urls", photos), ("passed", passed)):
            if name in msg:
                data[name] = value
        await self._enqueue(client, msg, owner[0], "task", data)

    async def _position(self, client: Client, msg: dict[str, Any]) -> None:
        """A responder's phone shares where it is (geolocation, or typed in by hand)."""
        cid = _echo_id(msg.get("id"))
        rid = client.user.responder_id
        if self._send_position is None or not rid:
            self._push(client, error_frame("unavailable", "positions are not accepted here", cid))
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
            self._push(client, error_frame("invalid", describe_validation_error(exc), cid))
            return
        try:
            await self._send_position(fix.model_dump(mode="json"))
        except Exception as exc:
            log.warning("could not queue a position for %s: %r", rid, exc)
            self._push(client, error_frame("unavailable", "position not accepted, retry", cid))
            return
        self._push(client, ack_frame(cid))

    async def _enqueue(
        self, client: Client, msg: dict[str, Any], incident_id: str, action: str, data: dict[str, Any]
    ) -> None:
        cid = msg.get("id")
        if not isinstance(cid, str | int) or isinstance(cid, bool) or len(str(cid)) > 100:
            self._push(client, error_frame("invalid", "id: each command needs a string or number id", None))
            return
        reason = msg.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
            self._push(client, error_frame("invalid", "reason: a string of at most 500 characters", cid))
            return
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


def _nul_at(value: Any, where: str = "") -> str | None:
    """The path of the first string (or key) in a frame that holds U+0000, or None."""
    if isinstance(value, str):
        return (where or "frame") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if "\x00" in str(key):
                return path.replace("\x00", "\\u0000")
            found = _nul_at(item, path)
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_at(item, f"{where}.{i}" if where else str(i))
            if found is not None:
                return found
    return None


def _decode(raw: str | bytes) -> dict[str, Any] | None:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return msg if isinstance(msg, dict) else None


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
