"""The live socket's protocol without a socket: every frame is judged by name, nothing a client
sends makes it raise, and what it accepts is what the dispatcher's own rules take."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from console.live.protocol import (
    COMMAND_ROLES,
    MAX_FRAME,
    Enqueue,
    Frame,
    LiveLimits,
    Refusal,
    hello,
    live_access,
    operator_command,
    position_fix,
    read_frame,
    recommend_for,
    resume_since,
    task_command,
)
from dispatcher.core.case import MAX_INCIDENT_NOTE_CHARS

LIMITS = LiveLimits()


class Board:
    """One open incident with one task, as the board holds them."""

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        return {"incident_id": "INC-1"} if incident_id == "INC-1" else None

    def task_owner(self, task_id: str) -> tuple[str, str] | None:
        return ("INC-1", "G-0001") if task_id == "T-1" else None


BOARD = Board()


def frame(kind: str, **body: Any) -> Frame:
    checked = read_frame(
        orjson.dumps({"type": kind, **body}),
        "responder" if kind in ("task", "position") else "operator",
        LIMITS,
    )
    assert isinstance(checked, Frame), checked
    return checked


def refused(result: object, code: str, words: str) -> None:
    assert isinstance(result, Refusal), result
    assert result.code == code and words in result.message, result


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_no_frame_makes_the_protocol_raise(raw: bytes | str) -> None:
    for role in ("operator", "viewer", "responder"):
        result = read_frame(raw, role, LIMITS)
        assert isinstance(result, Frame | Refusal)
        if isinstance(result, Frame):
            operator_command(result, BOARD)
            task_command(result, "G-0001", BOARD)
            position_fix(result, "G-0001", datetime.now(UTC))
    assert isinstance(hello(raw, LIMITS), tuple | Refusal)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "type",
                "id",
                "incident_id",
                "responders",
                "text",
                "reason",
                "task_id",
                "task_action",
                "note",
                "photo_urls",
                "passed",
                "since",
                "lon",
                "lat",
            ]
        ),
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=20)
        | st.lists(st.text(max_size=5), max_size=3),
    )
)
def test_no_json_object_makes_a_command_check_raise(body: dict[str, Any]) -> None:
    checked = Frame("dispatch", None, body)
    for result in (
        operator_command(checked, BOARD),
        task_command(checked, "G-0001", BOARD),
        resume_since(checked),
        recommend_for(checked, BOARD),
        position_fix(checked, "G-0001", datetime.now(UTC)),
    ):
        assert result is not None


@pytest.mark.parametrize(
    ("raw", "role", "code", "words"),
    [
        (b"x" * (MAX_FRAME + 1), "operator", "too_large", "frame larger than"),
        (b"[1, 2]", "operator", "malformed", "not a JSON object"),
        (orjson.dumps({"type": "note", "text": "a\x00b"}), "operator", "invalid", "text: must not contain"),
        (orjson.dumps({"type": "auth", "token": "t"}), "operator", "out_of_order", "already authenticated"),
        (orjson.dumps({"type": "launch"}), "operator", "unknown_command", "unknown command type 'launch'"),
        (orjson.dumps({"type": "dispatch"}), "viewer", "forbidden", "a viewer cannot dispatch"),
        (orjson.dumps({"type": "task"}), "operator", "forbidden", "a operator cannot task"),
    ],
)
def test_a_bad_frame_is_refused_by_name(raw: bytes, role: str, code: str, words: str) -> None:
    refused(read_frame(raw, role, LIMITS), code, words)


def test_every_command_type_has_roles_and_the_console_roles_are_not_the_phones() -> None:
    assert set(COMMAND_ROLES) >= {"ping", "dispatch", "task", "position"}
    assert live_access("viewer", None) and live_access("responder", "G-0001")
    assert not live_access("responder", None)


def test_the_first_frame_must_authenticate() -> None:
    refused(hello(orjson.dumps({"type": "ping"}), LIMITS), "unauthorised", "first frame must be")
    assert hello(orjson.dumps({"type": "auth", "token": 7, "id": 1}), LIMITS) == (
        None,
        {"type": "auth", "token": 7, "id": 1},
    )
    assert hello(orjson.dumps({"type": "auth", "token": "t"}), LIMITS)[0] == "t"  # type: ignore[index]


def test_an_operator_command_is_checked_against_the_board_and_its_fields() -> None:
    refused(operator_command(frame("dispatch", id=1), BOARD), "invalid", "incident_id: missing")
    refused(operator_command(frame("dispatch", id=1, incident_id="INC-9"), BOARD), "invalid", "is not open")
    refused(
        operator_command(frame("dispatch", id=1, incident_id="INC-1", responders=[""]), BOARD),
        "invalid",
        "responders: a list of responder ids",
    )
    long_note = "字" * (MAX_INCIDENT_NOTE_CHARS + 1)
    refused(
        operator_command(frame("note", id=1, incident_id="INC-1", text=long_note), BOARD),
        "invalid",
        "text: wrong type or too long",
    )
    refused(
        operator_command(frame("dispatch", incident_id="INC-1"), BOARD), "invalid", "id: each command needs"
    )
    refused(
        operator_command(frame("cancel", id=1, incident_id="INC-1", reason="x" * 501), BOARD),
        "invalid",
        "reason: a string of at most 500 characters",
    )
    ok = operator_command(
        frame("dispatch", id="c1", incident_id="INC-1", responders=["P-0001"], other=1), BOARD
    )
    assert ok == Enqueue(
        "c1", "INC-1", "dispatch", {"responders": ["P-0001"]}, None
    )  # unknown fields dropped


def test_a_task_command_is_the_responders_own_and_follows_the_tasks_rules() -> None:
    refused(task_command(frame("task", id=1, task_action="fly"), "G-0001", BOARD), "invalid", "task_action")
    refused(
        task_command(frame("task", id=1, task_action="accept", task_id="T-1"), "G-0002", BOARD),
        "forbidden",
        "not one of your open tasks",
    )
    refused(
        task_command(
            frame("task", id=1, task_action="done", task_id="T-1", photo_urls=["ftp://x"]), "G-0001", BOARD
        ),
        "invalid",
        "photo",
    )
    refused(
        task_command(frame("task", id=1, task_action="done", task_id="T-1", passed="yes"), "G-0001", BOARD),
        "invalid",
        "passed: true or false",
    )
    ok = task_command(
        frame("task", id=2, task_action="done", task_id="T-1", note="已清理", passed=True), "G-0001", BOARD
    )
    assert ok == Enqueue(
        2, "INC-1", "task", {"task_id": "T-1", "task_action": "done", "note": "已清理", "passed": True}
    )


def test_a_position_and_a_resume_are_validated() -> None:
    now = datetime.now(UTC)
    refused(position_fix(frame("position", lon=200, lat=29.6), "G-0001", now), "invalid", "lon")
    fix = position_fix(frame("position", lon=106.53, lat=29.63, accuracy_m=8.0), "G-0001", now)
    assert not isinstance(fix, Refusal) and (fix.responder_id, fix.at) == ("G-0001", now)
    refused(resume_since(frame("resume", since=-1)), "invalid", "since: a sequence number")
    refused(resume_since(frame("resume", since=True)), "invalid", "since")
    assert resume_since(frame("resume", since=41)) == 41
    refused(recommend_for(frame("recommend", incident_id="INC-9"), BOARD), "invalid", "not an open incident")
