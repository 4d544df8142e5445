"""`incidents.events`: every event the dispatcher and the console servers build passes the check
every reader holds an event to, and a malformed one is refused by name."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from contracts.commands import Command
from contracts.events import check_event, command_done, command_refused, incident_synced, state_change
from contracts.validation import BadRecord

VIEW: dict[str, Any] = {
    "incident_id": "INC-1",
    "status": "new",
    "severity": 2,
    "title": "垃圾满溢",
    "occurred_at": "2026-12-05T20:00:00+00:00",
    "version": 3,
    "tasks": [{"task_id": "T-1", "responder_id": "G-0001", "state": "offered"}],
}
CMD = Command("dispatch", "INC-1", "operator:duty:7", "operator:duty", datetime.now(UTC))


def _checked(event: dict[str, Any]) -> dict[str, Any]:
    return check_event(event["incident_id"].encode(), orjson.dumps(event))


def test_every_built_event_passes_the_readers_check() -> None:
    timeline = {"event_id": "e1", "incident_id": "INC-1", "version": 3, "type": "incident.file",
                "actor": "system", "at": "2026-12-05T20:00:00+00:00", "state": "new", "public": True,
                "reason": None, "data": {}}
    built = [
        state_change(timeline, VIEW),
        command_done(CMD),
        command_refused(CMD, "预案力量已派齐"),
        incident_synced(VIEW, datetime.now(UTC)),
    ]
    for event in built:
        assert _checked(event) == orjson.loads(orjson.dumps(event))
    assert built[0]["incident"] == VIEW and built[3]["version"] == 3
    assert built[2]["reason"] == "预案力量已派齐" and built[2]["command_id"] == CMD.command_id


CHANGE = {"type": "incident.file", "incident_id": "INC-1", "version": 1}


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (CHANGE, "version and incident come together"),
        ({**CHANGE, "incident": {**VIEW, "incident_id": "X"}}, "is not the event's incident_id"),
        ({"type": "", "incident_id": "INC-1"}, "type"),
        ({**CHANGE, "incident": {**VIEW, "status": "lost"}}, "status"),
    ],
)
def test_a_malformed_event_is_refused_by_name(event: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadRecord, match=reason):
        _checked(event)


def test_an_event_under_another_key_is_refused() -> None:
    with pytest.raises(BadRecord, match="key"):
        check_event(b"INC-2", orjson.dumps(command_done(CMD)))
