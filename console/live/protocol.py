"""The live socket's protocol, sans I/O (docs/live-protocol.md): frames in, validated requests or
refusals out, and the frames the server answers with.

Nothing here reads a socket, a clock or a store: `LiveHub` (console.live.hub) feeds it a frame
and what it needs to judge one (the caller's role and responder id, the board, the time), and
carries out what comes back. Every rule on a command's fields is here, with the limits the domain
sets (a note's length, a task's photos: `dispatcher.core`), so that what a console is told was
queued is what the dispatcher will take.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Protocol

import orjson
from pydantic import ValidationError
from websockets.frames import CloseCode

from console.permissions import USER_PERMISSIONS, Perm
from contracts.positions import PositionFix
from contracts.validation import describe_validation_error
from dispatcher.core.case import MAX_INCIDENT_NOTE_CHARS
from dispatcher.core.lifecycle import MAX_REASON_CHARS, IllegalTransition
from dispatcher.core.plan import MAX_COUNT
from dispatcher.core.task import check_note, check_photos
from infra.settings import Settings

MAX_FRAME = 64 * 1024  # a larger command frame is answered `too_large`
MAX_MESSAGE = 2 * MAX_FRAME  # a larger one is not even read: the library closes with 1009
AUTH_TIMEOUT_S = 10.0
QUEUE_LIMIT = 2_000  # a connection this many frames behind is cut off rather than slowing others
PENDING_LIMIT = 10_000  # commands awaiting the dispatcher's answer, all clients together
MAX_ID_CHARS = 100  # a command id longer than this is not echoed, nor taken

CLOSE_POLICY = int(CloseCode.POLICY_VIOLATION)  # 1008: flooding after being told to slow down
CLOSE_TOO_BIG = int(CloseCode.MESSAGE_TOO_BIG)  # 1009: sent by the library itself
CLOSE_UNAUTHORISED = 4401  # no, a bad or an ended session: log in again
CLOSE_FORBIDDEN = 4403  # a valid session whose role has no live access
CLOSE_TOO_SLOW = 4408  # the client did not read its frames in time: reconnect and resume
CLOSE_SUPERSEDED = 4409  # the same user opened more connections than allowed: the oldest goes


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
# The fields an operator's command may carry: (name, type, longest).
OPERATOR_FIELDS: Final[tuple[tuple[str, type[Any], int], ...]] = (
    ("responders", list, MAX_COUNT),  # as many as a plan's role may ask for
    ("responder_id", str, 100),
    ("passed", bool, 0),
    ("into", str, 100),
    ("from", str, 100),
    ("text", str, MAX_INCIDENT_NOTE_CHARS),
)


def live_access(role: str, responder_id: str | None) -> bool:
    """Whether a session of this role may hold a live socket at all."""
    return role in CONSOLE_ROLES or (role in RESPONDERS and bool(responder_id))


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


# --- frames out -------------------------------------------------------------------------------
def error_frame(code: str, message: str, command_id: Any = None) -> bytes:
    return orjson.dumps({"type": "error", "id": command_id, "code": code, "message": message})


def ack_frame(cid: Any, /, **extra: Any) -> bytes:
    return orjson.dumps({"type": "ack", "id": cid, **extra})


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


def task_frame(event_type: str, task: dict[str, Any], incident: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": "task", "event": event_type, "task": responder_task(task, incident)})


def tasks_frame(tasks: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"type": "tasks", "tasks": tasks})


def resumed_frame(resume_from: int, seq: int) -> bytes:
    return orjson.dumps({"type": "resumed", "from": resume_from, "seq": seq})


def recommendation_frame(cid: Any, incident_id: str, recommendation: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": "recommendation", "id": cid, "incident_id": incident_id, **recommendation})


def command_of(event_id: Any) -> str | None:
    """The command an event came from: its id is the command id, or the command id + `#n`."""
    return event_id.split("#", 1)[0] if isinstance(event_id, str) else None


# --- frames in --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Refusal:
    """An error frame to send back (the connection stays)."""

    code: str
    message: str
    cid: Any = None

    @property
    def frame(self) -> bytes:
        return error_frame(self.code, self.message, self.cid)


class BoardView(Protocol):
    """What the protocol asks of the board (console.board.Board)."""

    def incident(self, incident_id: str) -> dict[str, Any] | None: ...
    def task_owner(self, task_id: str) -> tuple[str, str] | None: ...


@dataclass(frozen=True, slots=True)
class Frame:
    """A command frame that passed the checks every frame gets: its type, its id, the body."""

    kind: str
    cid: str | int | None
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Enqueue:
    """A command for the dispatcher, valid as far as anything here can tell."""

    cid: str | int  # the client's own id for it
    incident_id: str
    action: str
    data: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


def echo_id(value: Any) -> str | int | None:
    """The command id to answer with: only a short string or a number is echoed back."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    if isinstance(value, str) and len(value) > MAX_ID_CHARS:
        return None
    return value


def show(value: Any) -> str:
    """A client's value quoted in an error message, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def decode(raw: str | bytes) -> dict[str, Any] | None:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return msg if isinstance(msg, dict) else None


def nul_at(value: Any, where: str = "") -> str | None:
    """The path of the first string (or key) in a frame that holds U+0000, or None."""
    if isinstance(value, str):
        return (where or "frame") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if "\x00" in str(key):
                return path.replace("\x00", "\\u0000")
            found = nul_at(item, path)
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = nul_at(item, f"{where}.{i}" if where else str(i))
            if found is not None:
                return found
    return None


def hello(raw: str | bytes, limits: LiveLimits) -> tuple[str | None, dict[str, Any]] | Refusal:
    """The first frame: `{"type": "auth", "token": ...}` (the token, None if it is not a string,
    and the frame, for its id and `resume_from`), or why not. Whether the token is a live session
    is the hub's to ask."""
    if len(raw) > limits.max_frame:
        return Refusal("too_large", f"frame larger than {limits.max_frame} bytes")
    msg = decode(raw)
    cid = echo_id(msg.get("id")) if msg else None
    if msg is None or msg.get("type") != "auth":
        return Refusal("unauthorised", 'first frame must be {"type": "auth", "token": ...}', cid)
    token = msg.get("token")
    return (token if isinstance(token, str) else None), msg


def read_frame(raw: str | bytes, role: str, limits: LiveLimits) -> Frame | Refusal:
    """Every frame after the first: its size, JSON object, no NUL, a known type this role may send."""
    if len(raw) > limits.max_frame:
        return Refusal("too_large", f"frame larger than {limits.max_frame} bytes")
    msg = decode(raw)
    if msg is None:
        return Refusal("malformed", "frame is not a JSON object")
    cid = echo_id(msg.get("id"))
    nul = nul_at(msg)
    if nul is not None:  # PostgreSQL cannot store it: refused here, not failed later
        return Refusal("invalid", f"{nul}: must not contain the NUL character", cid)
    kind = msg.get("type")
    if kind == "auth":
        return Refusal("out_of_order", "already authenticated on this connection", cid)
    roles = COMMAND_ROLES.get(kind) if isinstance(kind, str) else None
    if roles is None:
        return Refusal("unknown_command", f"unknown command type {show(kind)}", cid)
    if role not in roles:
        return Refusal("forbidden", f"a {role} cannot {kind}", cid)
    return Frame(str(kind), cid, msg)


def resume_since(frame: Frame) -> int | Refusal:
    since = frame.body.get("since")
    if not isinstance(since, int) or isinstance(since, bool) or since < 0:
        return Refusal("invalid", "since: a sequence number (integer >= 0)", frame.cid)
    return since


def recommend_for(frame: Frame, board: BoardView) -> dict[str, Any] | Refusal:
    """The open incident a `recommend` names, as the board holds it."""
    incident_id = frame.body.get("incident_id")
    view = board.incident(incident_id) if isinstance(incident_id, str) else None
    if view is None:
        return Refusal("invalid", "incident_id: not an open incident", frame.cid)
    return view


def operator_command(frame: Frame, board: BoardView) -> Enqueue | Refusal:
    """dispatch, remove, resolve, verify, cancel, merge, split, note: on an open incident, with
    only the fields those take, each of its type and length."""
    msg, cid = frame.body, frame.cid
    incident_id = msg.get("incident_id")
    if not isinstance(incident_id, str) or not incident_id:
        return Refusal("invalid", "incident_id: missing", cid)
    if board.incident(incident_id) is None:
        return Refusal("invalid", f"incident_id: {show(incident_id)} is not open", cid)
    data: dict[str, Any] = {}
    for name, kind, size in OPERATOR_FIELDS:
        if name not in msg:
            continue
        value = msg[name]
        if not isinstance(value, kind) or (size and len(value) > size):
            return Refusal("invalid", f"{name}: wrong type or too long", cid)
        if name == "responders" and not all(isinstance(r, str) and 0 < len(r) <= 100 for r in value):
            return Refusal("invalid", "responders: a list of responder ids", cid)
        data[name] = value
    return _enqueue(frame, incident_id, frame.kind, data)


def task_command(frame: Frame, responder_id: str | None, board: BoardView) -> Enqueue | Refusal:
    """A responder's step on one of their own open tasks, with a note, photos or a verdict that
    the task's own rules (dispatcher.core.task) accept."""
    msg, cid = frame.body, frame.cid
    action = msg.get("task_action")
    if not isinstance(action, str) or action not in TASK_ACTIONS:  # a list is not even hashable
        return Refusal("invalid", f"task_action: one of {', '.join(sorted(TASK_ACTIONS))}", cid)
    task_id = msg.get("task_id")
    owner = board.task_owner(task_id) if isinstance(task_id, str) else None
    if owner is None or owner[1] != responder_id:
        return Refusal("forbidden", f"task {show(task_id)} is not one of your open tasks", cid)
    data: dict[str, Any] = {"task_id": task_id, "task_action": action}
    note, photos, passed = msg.get("note"), msg.get("photo_urls"), msg.get("passed")
    try:  # the domain's own rules: what is acknowledged here, the dispatcher takes
        if note is not None:
            check_note(note)
        if photos is not None:
            check_photos(photos)
    except IllegalTransition as exc:
        return Refusal("invalid", str(exc), cid)
    if passed is not None and not isinstance(passed, bool):
        return Refusal("invalid", "passed: true or false", cid)
    for name, value in (("note", note), ("photo_urls", photos), ("passed", passed)):
        if name in msg:
            data[name] = value
    return _enqueue(frame, owner[0], "task", data)


def _enqueue(frame: Frame, incident_id: str, action: str, data: dict[str, Any]) -> Enqueue | Refusal:
    """A command needs its own id (its retry has one effect) and at most a short reason."""
    msg = frame.body
    cid = msg.get("id")
    if not isinstance(cid, str | int) or isinstance(cid, bool) or len(str(cid)) > MAX_ID_CHARS:
        return Refusal("invalid", "id: each command needs a string or number id", None)
    reason = msg.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
        return Refusal("invalid", f"reason: a string of at most {MAX_REASON_CHARS} characters", cid)
    return Enqueue(cid, incident_id, action, data, reason)


def position_fix(frame: Frame, responder_id: str, now: datetime) -> PositionFix | Refusal:
    """A responder's phone shares where it is (geolocation, or typed in by hand), as of `now`."""
    msg = frame.body
    try:
        return PositionFix.model_validate(
            {
                "responder_id": responder_id,
                "lon": msg.get("lon"),
                "lat": msg.get("lat"),
                "at": now,
                "accuracy_m": msg.get("accuracy_m"),
            }
        )
    except ValidationError as exc:
        return Refusal("invalid", describe_validation_error(exc), frame.cid)
