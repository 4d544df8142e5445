"""`incidents.events`: what the dispatcher publishes about an incident, as every reader takes it.

A state change carries the incident's new version and its view; a routed notice (a refused
command, a command done, a resync) carries only its type and data. The console servers, the
phones' task pushes and the ops tail read a handful of fields of each event; a record without them
is refused with the same words everywhere (`contracts.validation`) and dead-lettered.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.commands import Command
from contracts.states import IncidentState
from contracts.validation import check_key, decode_object, validated

Id = Annotated[str, Field(min_length=1, max_length=200)]


class _Loose(BaseModel):
    """Fields the console does not read are let through: producers may add some."""

    model_config = ConfigDict(extra="allow")


class EventTask(_Loose):
    task_id: Id
    responder_id: Id


class EventIncident(_Loose):
    """The parts of the incident view the board sorts and shows and the phones are sent."""

    incident_id: Id
    status: IncidentState
    severity: int
    title: str
    occurred_at: str
    tasks: list[EventTask] = []


class IncidentEvent(_Loose):
    """A state change (version and incident view) or a routed notice such as a refusal."""

    type: Annotated[str, Field(min_length=1, max_length=100)]
    incident_id: Id
    event_id: str | None = None
    command_id: str | None = None
    version: Annotated[int, Field(ge=1)] | None = None
    incident: EventIncident | None = None
    data: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> IncidentEvent:
        if (self.version is None) != (self.incident is None):
            raise ValueError("version and incident come together (a state change carries both)")
        if self.incident is not None and self.incident.incident_id != self.incident_id:
            raise ValueError(f"incident.incident_id is not the event's incident_id {self.incident_id!r}")
        return self


def check_event(key: bytes | None, value: bytes | None) -> dict[str, Any]:
    """The event as the hub takes it, or `BadRecord` saying why it is unusable."""
    message = decode_object(value)
    event: IncidentEvent = validated(IncidentEvent, message)
    check_key(key, "incident_id", event.incident_id)
    return message


# --- what the dispatcher and the console servers publish ---------------------------------------
def state_change(event: Mapping[str, Any], incident: Mapping[str, Any]) -> dict[str, Any]:
    """One timeline event (its view: id, version, type, actor, at, state, reason, data) with the
    incident's view as it stands after it."""
    return {**event, "incident": dict(incident)}


def command_done(cmd: Command) -> dict[str, Any]:
    """Applied, but changed nothing anyone sees: said so, so the console that queued the command
    stops waiting for an answer."""
    return {
        "type": "command.done",
        "command_id": cmd.command_id,
        "incident_id": cmd.incident_id,
        "action": cmd.action,
        "actor": cmd.actor,
    }


def command_refused(cmd: Command, reason: str) -> dict[str, Any]:
    """Refused: routed to the console (or phone) that sent it, with the reason in Chinese."""
    return {
        "type": "command.refused",
        "command_id": cmd.command_id,
        "incident_id": cmd.incident_id,
        "action": cmd.action,
        "actor": cmd.actor,
        "reason": reason,
    }


def incident_synced(incident: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """A console server's repair of a change it missed: the incident's stored view, as a
    state change of its own version (the board takes it if it is newer than what it shows)."""
    return {
        "type": "incident.synced",
        "incident_id": incident["incident_id"],
        "version": int(incident["version"]),
        "actor": "system:resync",
        "at": at.isoformat(),
        "public": False,
        "data": {},
        "incident": dict(incident),
    }
