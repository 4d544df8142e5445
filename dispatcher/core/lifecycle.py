"""The incident lifecycle: a pure state machine (no I/O), in the sans-I/O style.

Feed it the incident's current state and a command; it answers with the decision (the new
state) and the events to record, or refuses with `IllegalTransition`. Every change of state
is an event carrying who, when and why, numbered by the incident's version, so the stored
timeline is the audit trail. Persistence and publishing belong to the service layer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from contracts.commands import Command
from contracts.states import IncidentState


class Action(StrEnum):
    FILE = "file"
    DISPATCH = "dispatch"
    START = "start"  # first responder on scene
    RESOLVE = "resolve"
    VERIFY_PASS = "verify_pass"
    VERIFY_FAIL = "verify_fail"
    CLOSE = "close"
    REOPEN = "reopen"  # resident says "not fixed"
    CANCEL = "cancel"
    MERGE = "merge"
    SPLIT = "split"  # an operator undoes a merge: the incident stands on its own again


_S, _A = IncidentState, Action
# (state before, action) -> state after. None as "before" means the incident does not exist yet.
TRANSITIONS: Final[dict[tuple[IncidentState | None, Action], IncidentState]] = {
    (None, _A.FILE): _S.NEW,
    (_S.NEW, _A.DISPATCH): _S.DISPATCHED,
    (_S.REOPENED, _A.DISPATCH): _S.DISPATCHED,
    (_S.DISPATCHED, _A.DISPATCH): _S.DISPATCHED,  # more forces added
    (_S.IN_PROGRESS, _A.DISPATCH): _S.IN_PROGRESS,
    (_S.DISPATCHED, _A.START): _S.IN_PROGRESS,
    (_S.IN_PROGRESS, _A.RESOLVE): _S.RESOLVED,
    (_S.RESOLVED, _A.VERIFY_PASS): _S.VERIFIED,
    (_S.RESOLVED, _A.VERIFY_FAIL): _S.REOPENED,
    (_S.VERIFIED, _A.CLOSE): _S.CLOSED,
    (_S.CLOSED, _A.REOPEN): _S.REOPENED,
    **{(s, _A.CANCEL): _S.CANCELLED for s in (_S.NEW, _S.DISPATCHED, _S.IN_PROGRESS, _S.REOPENED)},
    **{(s, _A.MERGE): _S.MERGED for s in (_S.NEW, _S.DISPATCHED, _S.REOPENED)},
    (_S.MERGED, _A.SPLIT): _S.NEW,
}
REASON_REQUIRED: Final = frozenset({_A.VERIFY_FAIL, _A.REOPEN, _A.CANCEL})
MAX_REASON_CHARS: Final = 500  # why a case was cancelled, reopened...: what the consoles take
# Steps a resident may see on the public progress page (进度随时查).
PUBLIC_ACTIONS: Final = frozenset(
    {_A.FILE, _A.DISPATCH, _A.START, _A.RESOLVE, _A.CLOSE, _A.REOPEN, _A.CANCEL, _A.MERGE}
)


class IllegalTransition(Exception):
    """The command does not apply to the incident in its current state."""


@dataclass(frozen=True, slots=True)
class Incident:
    incident_id: str
    state: IncidentState
    version: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    incident_id: str
    version: int
    type: str  # "incident.<action>"
    actor: str
    at: datetime
    state: IncidentState
    public: bool
    reason: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Decision:
    incident: Incident
    events: tuple[Event, ...]


def transition(incident: Incident | None, cmd: Command) -> Decision:
    """The one guarded transition function."""
    before = None if incident is None else incident.state
    if incident is not None and incident.incident_id != cmd.incident_id:
        raise IllegalTransition(f"command for {cmd.incident_id} applied to {incident.incident_id}")
    try:
        action = Action(cmd.action)
    except ValueError:
        raise IllegalTransition(f"unknown action {cmd.action!r}") from None
    after = TRANSITIONS.get((before, action))
    if after is None:
        where = "a new incident" if before is None else f"an incident in state {before.value}"
        raise IllegalTransition(f"cannot {action.value} {where}")
    if action in REASON_REQUIRED and not (cmd.reason and cmd.reason.strip()):
        raise IllegalTransition(f"{action.value} needs a reason")
    if incident is not None and cmd.at < incident.updated_at:
        # Clocks never run backwards: a late command is stamped with the incident's own time.
        cmd = replace(cmd, at=incident.updated_at)
    version = 1 if incident is None else incident.version + 1
    new = Incident(cmd.incident_id, after, version, cmd.at)
    event = Event(
        event_id=cmd.command_id,
        incident_id=cmd.incident_id,
        version=version,
        type=f"incident.{action.value}",
        actor=cmd.actor,
        at=cmd.at,
        state=after,
        public=action in PUBLIC_ACTIONS,
        reason=cmd.reason,
        data=cmd.data,
    )
    return Decision(new, (event,))
