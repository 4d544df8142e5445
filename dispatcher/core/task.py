"""The task lifecycle: one task per responder per incident, a pure state machine (no I/O).

Same sans-I/O style as `dispatcher.core.lifecycle`: feed it the task's current state and a command;
it answers with the decision (the new state) and the event to record, or refuses with
`IllegalTransition`. A task is offered to one responder, who accepts or declines it (or lets it
expire), then reports en route, on scene and done with a note and photo URLs; an operator may
cancel it. A verification task (网格核查) ends in done with `data["passed"]`.

Who may do what: the task's own responder (actor `responder:<responder_id>`) drives its own
task; the system (`system:*`) offers and expires; operators (`operator:*`, `commander:*`) offer
and cancel; the system may also cancel (the cascade when an incident is closed, cancelled or
merged while tasks are still open).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

from contracts.states import TaskKind, TaskState
from dispatcher.core.lifecycle import IllegalTransition


class TaskAction(StrEnum):
    OFFER = "offer"
    ACCEPT = "accept"
    DECLINE = "decline"
    EXPIRE = "expire"  # not accepted within the plan's accept timeout
    EN_ROUTE = "en_route"
    ON_SCENE = "on_scene"
    DONE = "done"
    CANCEL = "cancel"


_S, _A = TaskState, TaskAction
# (state before, action) -> state after. None as "before" means the task does not exist yet.
TRANSITIONS: Final[dict[tuple[TaskState | None, TaskAction], TaskState]] = {
    (None, _A.OFFER): _S.OFFERED,
    (_S.OFFERED, _A.ACCEPT): _S.ACCEPTED,
    (_S.OFFERED, _A.DECLINE): _S.DECLINED,
    (_S.OFFERED, _A.EXPIRE): _S.EXPIRED,
    (_S.ACCEPTED, _A.EN_ROUTE): _S.EN_ROUTE,
    (_S.ACCEPTED, _A.ON_SCENE): _S.ON_SCENE,  # already there: no travel
    (_S.EN_ROUTE, _A.ON_SCENE): _S.ON_SCENE,
    (_S.ON_SCENE, _A.DONE): _S.DONE,
    **{(s, _A.CANCEL): _S.CANCELLED for s in (_S.OFFERED, _S.ACCEPTED, _S.EN_ROUTE, _S.ON_SCENE)},
}
REASON_REQUIRED: Final = frozenset({_A.DECLINE, _A.CANCEL})

# Who may take each action, by the actor's prefix ("responder" means the task's own responder only).
ALLOWED_ACTORS: Final[dict[TaskAction, frozenset[str]]] = {
    _A.OFFER: frozenset({"operator", "commander", "system"}),
    _A.ACCEPT: frozenset({"responder"}),
    _A.DECLINE: frozenset({"responder"}),
    _A.EXPIRE: frozenset({"system"}),
    _A.EN_ROUTE: frozenset({"responder"}),
    _A.ON_SCENE: frozenset({"responder"}),
    _A.DONE: frozenset({"responder"}),
    _A.CANCEL: frozenset({"operator", "commander", "system"}),
}

MAX_NOTE_CHARS: Final = 500
MAX_PHOTOS: Final = 9  # a phone's photo picker (九宫格)
MAX_URL_CHARS: Final = 2048


def responder_actor(responder_id: str) -> str:
    """The actor string a responder's own commands carry."""
    return f"responder:{responder_id}"


@dataclass(frozen=True, slots=True)
class Task:
    task_id: str
    incident_id: str
    responder_id: str
    kind: TaskKind
    state: TaskState
    version: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TaskCommand:
    action: TaskAction
    task_id: str
    incident_id: str
    responder_id: str
    command_id: str  # idempotency key: one effect per command id
    actor: str
    at: datetime
    reason: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # "note", "photo_urls", "passed", ...


@dataclass(frozen=True, slots=True)
class TaskEvent:
    event_id: str
    task_id: str
    incident_id: str
    responder_id: str
    version: int
    type: str  # "task.<action>"
    actor: str
    at: datetime
    state: TaskState
    reason: str | None
    data: dict[str, Any]
    kind: TaskKind  # so the task can be rebuilt from its events alone


@dataclass(frozen=True, slots=True)
class TaskDecision:
    task: Task
    events: tuple[TaskEvent, ...]


def _check_actor(task_responder: str, cmd: TaskCommand) -> None:
    role, sep, who = cmd.actor.partition(":")
    allowed = ALLOWED_ACTORS[cmd.action]
    if not sep or not who:
        raise IllegalTransition(f"actor {cmd.actor!r} is not '<role>:<id>'")
    if role == "responder" and "responder" in allowed:
        if who != task_responder:
            raise IllegalTransition(
                f"only responder {task_responder} may {cmd.action.value} this task, not {cmd.actor}"
            )
        return
    if role not in allowed:
        roles = ", ".join(sorted("its own responder" if r == "responder" else r for r in allowed))
        raise IllegalTransition(f"{cmd.actor} may not {cmd.action.value} a task (allowed: {roles})")


def _check_url(url: object, where: str) -> None:
    if not isinstance(url, str):
        raise IllegalTransition(f"{where} must be a URL string, got {type(url).__name__}")
    if len(url) > MAX_URL_CHARS:
        raise IllegalTransition(f"{where} is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise IllegalTransition(f"{where} is not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
        raise IllegalTransition(f"{where} must be an http(s) URL, got {url[:80]!r}")


def check_note(note: object) -> None:
    """A responder's note, as the domain takes it (the console server checks it the same way
    before it acknowledges a command)."""
    if not isinstance(note, str):
        raise IllegalTransition(f"note must be text, got {type(note).__name__}")
    if len(note) > MAX_NOTE_CHARS:
        raise IllegalTransition(f"note is {len(note)} characters; at most {MAX_NOTE_CHARS}")


def check_photos(urls: object) -> None:
    """A task's photos, as the domain takes them (the console server checks them too)."""
    if not isinstance(urls, list | tuple):
        raise IllegalTransition(f"photo_urls must be a list of URLs, got {type(urls).__name__}")
    if len(urls) > MAX_PHOTOS:
        raise IllegalTransition(f"photo_urls has {len(urls)} photos; at most {MAX_PHOTOS}")
    for i, url in enumerate(urls):
        _check_url(url, f"photo_urls[{i}]")


def _check_data(kind: TaskKind, cmd: TaskCommand) -> None:
    data: Mapping[str, Any] = cmd.data
    if not isinstance(data, Mapping):
        raise IllegalTransition(f"data must be a mapping, got {type(data).__name__}")
    if "note" in data:
        check_note(data["note"])
    if "photo_urls" in data:
        check_photos(data["photo_urls"])
    verifying = kind is TaskKind.VERIFICATION and cmd.action is TaskAction.DONE
    if "passed" in data and not verifying:
        raise IllegalTransition("passed only belongs on a verification task's done")
    if verifying:
        passed = data.get("passed")
        if not isinstance(passed, bool):
            raise IllegalTransition("a verification task's done needs data['passed'] true or false")
        if not passed and not (cmd.reason and cmd.reason.strip()):
            raise IllegalTransition("a failed verification needs a reason")


def transition_task(task: Task | None, cmd: TaskCommand, kind: TaskKind | None = None) -> TaskDecision:
    """The one guarded transition function. `kind` is required to offer, and checked otherwise."""
    before = None if task is None else task.state
    if task is not None:
        for name, have, got in (
            ("task", task.task_id, cmd.task_id),
            ("incident", task.incident_id, cmd.incident_id),
            ("responder", task.responder_id, cmd.responder_id),
        ):
            if have != got:
                raise IllegalTransition(f"command for {name} {got} applied to {name} {have}")
    after = TRANSITIONS.get((before, cmd.action))
    if after is None:
        where = "a new task" if before is None else f"a task in state {before.value}"
        raise IllegalTransition(f"cannot {cmd.action.value} {where}")
    if cmd.action in REASON_REQUIRED and not (cmd.reason and cmd.reason.strip()):
        raise IllegalTransition(f"{cmd.action.value} needs a reason")
    if task is None:
        if kind is None:
            raise IllegalTransition("offer needs the task kind")
        kind = TaskKind(kind)
    else:
        if kind is not None and kind != task.kind:
            raise IllegalTransition(f"kind {kind} given for a {task.kind.value} task")
        kind = task.kind
    _check_actor(cmd.responder_id, cmd)
    _check_data(kind, cmd)
    if task is not None and cmd.at < task.updated_at:
        # Clocks never run backwards: a late command is stamped with the task's own time.
        cmd = replace(cmd, at=task.updated_at)
    version = 1 if task is None else task.version + 1
    new = Task(cmd.task_id, cmd.incident_id, cmd.responder_id, kind, after, version, cmd.at)
    event = TaskEvent(
        event_id=cmd.command_id,
        task_id=cmd.task_id,
        incident_id=cmd.incident_id,
        responder_id=cmd.responder_id,
        version=version,
        type=f"task.{cmd.action.value}",
        actor=cmd.actor,
        at=cmd.at,
        state=after,
        reason=cmd.reason,
        data=cmd.data,
        kind=kind,
    )
    return TaskDecision(new, (event,))
