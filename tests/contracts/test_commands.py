"""`incidents.commands`: a command survives its wire form, and a malformed one is refused by name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.commands import Command, command_json, parse_command

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@given(
    action=_TEXT,
    incident_id=_TEXT,
    command_id=_TEXT,
    actor=_TEXT,
    at=st.datetimes(timezones=st.just(UTC)),
    reason=st.none() | _TEXT,
    data=st.dictionaries(_TEXT, st.integers(-(2**63), 2**63 - 1) | _TEXT, max_size=3),
    origin=st.none() | st.text(max_size=64),
)
def test_a_command_survives_its_wire_form(
    action: str, incident_id: str, command_id: str, actor: str, at: datetime,
    reason: str | None, data: dict[str, object], origin: str | None,
) -> None:
    cmd = Command(action, incident_id, command_id, actor, at, reason, data, origin)
    assert parse_command(orjson.dumps(command_json(cmd))) == cmd


def test_an_offset_time_is_kept_as_the_same_instant() -> None:
    at = datetime(2026, 12, 5, 20, 0, tzinfo=timezone(timedelta(hours=8)))
    back = parse_command(orjson.dumps(command_json(Command("dispatch", "INC-1", "c1", "operator:duty", at))))
    assert back.at == at


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"command_id": ""}, "command_id: missing or not a string"),
        ({"incident_id": 7}, "incident_id: missing or not a string"),
        ({"at": "yesterday"}, "at: not an ISO time"),
        ({"at": "2026-12-05T20:00:00"}, "at: needs a UTC offset"),
        ({"data": [1]}, "data: must be an object"),
        ({"reason": 3}, "reason: must be a string"),
        ({"origin": "x" * 65}, "origin: must be an address"),
    ],
)
def test_a_malformed_command_is_refused_by_name(patch: dict[str, object], reason: str) -> None:
    body = command_json(Command("dispatch", "INC-1", "c1", "operator:duty", datetime.now(UTC)))
    with pytest.raises(ValueError, match=reason):
        parse_command(orjson.dumps({**body, **patch}))


@pytest.mark.parametrize("raw", [None, b"", b"[1]", b"not json"])
def test_what_is_not_a_command_object_is_refused(raw: bytes | None) -> None:
    with pytest.raises(ValueError):
        parse_command(raw)
