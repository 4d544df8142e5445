"""The console's live board: open incidents, numbered deltas, the resume buffer."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from console.board import Board, Delta
from contracts.states import INCIDENT_STATE_LABELS, IncidentState

S = IncidentState


def view(
    incident_id: str,
    version: int = 1,
    status: IncidentState = S.NEW,
    severity: int = 3,
    occurred_at: str = "2026-11-22T01:30:00+00:00",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "incident_id": incident_id,
        "status": status.value,
        "status_label": INCIDENT_STATE_LABELS[status],
        "version": version,
        "source": "hotline",
        "category": "cooking_fumes",
        "severity": severity,
        "title": "餐饮油烟·清晖岸小区3栋",
        "occurred_at": occurred_at,
        "caller_phone": "13800138000",
        "caller_name": "李女士",
        "reporter_id": "resident-1029",
        **extra,
    }


def message(incident_id: str, version: int, status: IncidentState = S.NEW, **extra: Any) -> dict[str, Any]:
    """An `incidents.events` message as the dispatcher publishes it: the event plus the incident view."""
    return {
        "event_id": f"{incident_id}:{version}",
        "incident_id": incident_id,
        "version": version,
        "type": "incident.file" if version == 1 else "incident.dispatch",
        "actor": "system:intake",
        "at": f"2026-11-22T01:{30 + version:02d}:00+00:00",
        "state": status.value,
        "public": True,
        "reason": None,
        "incident": view(incident_id, version, status, **extra),
    }


def decode(delta: Delta) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(delta.frame)
    return out


def test_apply_new_incident() -> None:
    board = Board()
    delta = board.apply(message("INC-1", 1))
    assert delta is not None and (delta.seq, delta.incident_id) == (1, "INC-1")
    frame = decode(delta)
    assert frame["type"] == "delta" and frame["seq"] == 1
    assert frame["event"]["event_id"] == "INC-1:1" and "incident" not in frame["event"]
    assert frame["incident"]["incident_id"] == "INC-1" and frame["incident"]["version"] == 1
    assert len(board) == 1 and board.seq == 1


def test_personal_data_masked_in_frames_and_snapshot() -> None:
    board = Board()
    delta = board.apply(message("INC-1", 1))
    assert delta is not None
    for payload in (delta.frame, board.snapshot()):
        assert b"13800138000" not in payload and "李女士".encode() not in payload
        assert b"resident-1029" not in payload
    incident = decode(delta)["incident"]
    assert (incident["caller_phone"], incident["caller_name"], incident["reporter_id"]) == (
        "138****8000", "李**", "re***29",
    )  # fmt: skip
    board.load([view("INC-2", 4)])
    assert b"13800138000" not in board.snapshot()


def test_duplicates_and_old_versions_ignored() -> None:
    board = Board()
    assert board.apply(message("INC-1", 1)) is not None
    assert board.apply(message("INC-1", 2, S.DISPATCHED)) is not None
    assert board.apply(message("INC-1", 2, S.DISPATCHED)) is None  # duplicate
    assert board.apply(message("INC-1", 1)) is None  # replay of older news
    assert board.seq == 2
    assert orjson.loads(board.snapshot())["incidents"][0]["status"] == "dispatched"  # not rolled back


def test_seq_increments_by_one_per_applied_delta_across_incidents() -> None:
    board = Board()
    seqs = []
    for msg in [message("A", 1), message("B", 1), message("A", 1), message("A", 2), message("B", 1)]:
        delta = board.apply(msg)
        if delta is not None:
            seqs.append(delta.seq)
    assert seqs == [1, 2, 3] and board.seq == 3


@pytest.mark.parametrize("final", [S.CLOSED, S.CANCELLED, S.MERGED])
def test_closed_cancelled_merged_leave_the_open_set(final: IncidentState) -> None:
    board = Board()
    board.apply(message("INC-1", 1))
    board.apply(message("INC-2", 1))
    delta = board.apply(message("INC-1", 2, final))
    assert delta is not None and decode(delta)["incident"]["status"] == final.value  # consoles see it go
    assert len(board) == 1
    ids = [i["incident_id"] for i in orjson.loads(board.snapshot())["incidents"]]
    assert ids == ["INC-2"]
    if final is S.CLOSED:  # a resident's "not fixed" brings it back
        assert board.apply(message("INC-1", 3, S.REOPENED)) is not None
        assert len(board) == 2


@pytest.mark.parametrize("state", [S.RESOLVED, S.VERIFIED, S.REOPENED, S.IN_PROGRESS, S.DISPATCHED])
def test_open_states_stay(state: IncidentState) -> None:
    board = Board()
    board.apply(message("INC-1", 5, state))
    assert len(board) == 1


def test_load_then_apply() -> None:
    board = Board()
    board.load([view("INC-1", 3, S.IN_PROGRESS), view("INC-2", 7, S.CLOSED), view("INC-3", 1)])
    assert len(board) == 2 and board.seq == 0
    snap = orjson.loads(board.snapshot())
    assert snap["type"] == "snapshot" and snap["seq"] == 0
    assert {i["incident_id"] for i in snap["incidents"]} == {"INC-1", "INC-3"}
    assert board.apply(message("INC-1", 3, S.IN_PROGRESS)) is None  # already loaded
    assert board.apply(message("INC-2", 6, S.RESOLVED)) is None  # older than the closed state loaded
    delta = board.apply(message("INC-1", 4, S.RESOLVED))
    assert delta is not None and delta.seq == 1
    assert board.since(0) == [delta]


def test_snapshot_sorted_by_severity_then_time() -> None:
    board = Board()
    board.apply(message("late-IV", 1, severity=4, occurred_at="2026-11-22T03:00:00+00:00"))
    board.apply(message("late-I", 1, severity=1, occurred_at="2026-11-22T03:00:00+00:00"))
    board.apply(message("early-IV", 1, severity=4, occurred_at="2026-11-22T01:00:00+00:00"))
    board.apply(message("early-I", 1, severity=1, occurred_at="2026-11-22T01:00:00+00:00"))
    board.apply(message("mid-II", 1, severity=2, occurred_at="2026-11-22T02:00:00+00:00"))
    snap = orjson.loads(board.snapshot())
    assert snap["seq"] == 5
    assert [i["incident_id"] for i in snap["incidents"]] == [
        "early-I",
        "late-I",
        "mid-II",
        "early-IV",
        "late-IV",
    ]


def test_since() -> None:
    board = Board(history=3)
    deltas = [board.apply(message(f"INC-{n}", 1)) for n in range(5)]
    assert [d.seq for d in deltas if d] == [1, 2, 3, 4, 5]
    assert board.since(5) == []  # up to date
    assert board.since(4) == deltas[4:]
    assert board.since(2) == deltas[2:]  # exactly the three held
    assert board.since(1) is None  # seq 2 no longer held: resync
    assert board.since(0) is None
    assert board.since(6) is None  # from the future (another server, or a restart)
    assert board.since(-1) is None


def test_since_on_a_fresh_board() -> None:
    board = Board()
    assert board.since(0) == []
    assert board.since(1) is None
    board.apply(message("INC-1", 1))
    assert [d.seq for d in board.since(0) or []] == [1]


def test_since_with_no_history_kept() -> None:
    board = Board(history=0)
    board.apply(message("INC-1", 1))
    assert board.since(0) is None and board.since(1) == []


# --- at-least-once delivery: duplicates and replays never show twice --------------------------------

STATES = [S.DISPATCHED, S.IN_PROGRESS, S.RESOLVED, S.VERIFIED, S.CLOSED, S.REOPENED]


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[dict[str, Any]], int]:
    """Per-incident ordered streams interleaved, with random redeliveries of anything already sent."""
    n = draw(st.integers(1, 4))
    streams = {
        f"INC-{i}": [
            message(f"INC-{i}", v, S.NEW if v == 1 else draw(st.sampled_from(STATES)))
            for v in range(1, draw(st.integers(1, 6)) + 1)
        ]
        for i in range(n)
    }
    total = sum(len(s) for s in streams.values())
    delivered: list[dict[str, Any]] = []
    while any(streams.values()):
        incident_id = draw(st.sampled_from(sorted(k for k, v in streams.items() if v)))
        delivered.append(streams[incident_id].pop(0))
        for _ in range(draw(st.integers(0, 2))):  # a rebalance or a producer retry resends old messages
            delivered.append(draw(st.sampled_from(delivered)))
    return delivered, total


@settings(max_examples=150, deadline=None)
@given(deliveries(), st.integers(1, 20))
def test_replays_never_produce_a_delta_twice(case: tuple[list[dict[str, Any]], int], history: int) -> None:
    delivered, total = case
    board = Board(history=history)
    seen: set[tuple[str, int]] = set()
    applied: list[Delta] = []
    last: dict[str, dict[str, Any]] = {}
    for msg in delivered:
        delta = board.apply(msg)
        if delta is None:
            continue
        key = (msg["incident_id"], msg["version"])
        assert key not in seen, f"delta for {key} twice"
        seen.add(key)
        applied.append(delta)
        last[msg["incident_id"]] = msg
    assert len(applied) == total  # each version once, none lost (per-incident order was kept)
    assert [d.seq for d in applied] == list(range(1, total + 1))  # contiguous
    assert board.seq == total
    for k in range(total + 1):  # resuming from any held point yields exactly the missed deltas
        missed = board.since(k)
        if k >= total - history:
            assert missed == applied[k:]
        else:
            assert missed is None
    open_ids = {i for i, m in last.items() if m["state"] not in ("closed", "cancelled", "merged")}
    assert {i["incident_id"] for i in orjson.loads(board.snapshot())["incidents"]} == open_ids


def test_a_delta_masks_numbers_typed_into_the_incident_and_into_the_event() -> None:
    """What a console receives: the view's and the event's free text masked (PIPL); the event's
    reason and note text went out verbatim before."""
    board = Board()
    msg = message("INC-9", 1, description="回电13700001111")
    msg["reason"] = "居民改约023-68881234"
    msg["data"] = {"text": "身份证500101199001011234", "caller_phone": "13800138000"}
    delta = board.apply(msg)
    assert delta is not None
    frame = delta.frame.decode()
    for number in ("13700001111", "023-68881234", "500101199001011234", "13800138000"):
        assert number not in frame, number
    sent = orjson.loads(delta.frame)
    assert sent["incident"]["description"] == "回电137****1111"
    assert sent["event"]["reason"] == "居民改约023*****1234"
    snapshot = board.snapshot().decode()
    assert "13700001111" not in snapshot and "137****1111" in snapshot
