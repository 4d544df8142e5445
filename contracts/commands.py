"""`incidents.commands`: what consoles, phones and timers ask of an incident, and its wire form.

A command names its incident (the record's key: one writer per incident) and carries its own id,
the idempotency key of its one effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Command:
    """One command on one incident; `action` names an incident or task action, or a timer."""

    action: str
    incident_id: str
    command_id: str
    actor: str
    at: datetime
    reason: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    origin: str | None = None  # the sender's network address, for the audit log


def command_json(cmd: Command) -> dict[str, Any]:
    return {
        "command_id": cmd.command_id,
        "incident_id": cmd.incident_id,
        "action": cmd.action,
        "actor": cmd.actor,
        "at": cmd.at.isoformat(),
        "reason": cmd.reason,
        "data": cmd.data,
        "origin": cmd.origin,
    }


def parse_command(raw: bytes | None) -> Command:
    """ValueError names what is wrong (the record is dead-lettered with it)."""
    try:
        d = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"value is not JSON: {exc}") from None
    if not isinstance(d, dict):
        raise ValueError("command must be a JSON object")
    for name in ("command_id", "incident_id", "action", "actor", "at"):
        if not isinstance(d.get(name), str) or not d[name]:
            raise ValueError(f"{name}: missing or not a string")
    try:
        at = datetime.fromisoformat(d["at"])
    except ValueError:
        raise ValueError(f"at: not an ISO time: {d['at']!r}") from None
    if at.tzinfo is None:
        raise ValueError("at: needs a UTC offset")
    data = d.get("data") or {}
    if not isinstance(data, dict):
        raise ValueError("data: must be an object")
    reason = d.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ValueError("reason: must be a string")
    origin = d.get("origin")
    if origin is not None and (not isinstance(origin, str) or len(origin) > 64):
        raise ValueError("origin: must be an address (a string of at most 64 characters)")
    return Command(d["action"], d["incident_id"], d["command_id"], d["actor"], at, reason, data, origin)
