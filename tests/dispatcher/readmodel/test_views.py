"""How incidents, timeline events and tasks look to every reader, shaped from stored rows: the
fields, the Chinese labels of states, and the same shape whether a row comes as a dict, a record
with jsonb decoded, or a record with jsonb still as text."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from contracts.states import IncidentState
from dispatcher.core.lifecycle import Event
from dispatcher.core.plan import load_plans
from dispatcher.readmodel.views import event_view, incident_view, task_view
from dispatcher.service import IncidentService
from tests.dispatcher.test_service import enriched

T0 = datetime(2026, 11, 22, 1, 30, tzinfo=UTC)


def incident_dict(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "incident_id": "INC-1",
        "status": "new",
        "version": 3,
        "source": "app",
        "category": "garbage_overflow",
        "severity": 4,
        "title": "垃圾满溢",
        "description": "垃圾桶满了",
        "occurred_at": T0,
        "due_at": None,
        "out_of_area": False,
        "created_at": T0,
        "updated_at": T0 + timedelta(minutes=5),
        "record": {"category_label": "垃圾满溢", "caller_phone": "13912345678", "tracking_no": "TRK-1"},
    }
    return {**row, **over}


@pytest.mark.parametrize(
    ("status", "label"),
    [("new", "待派遣"), ("resolved", "已处置待核查"), ("closed", "已办结"), ("merged", "已合并")],
)
def test_an_incident_shows_its_state_in_chinese(status: str, label: str) -> None:
    view = incident_view(incident_dict(status=status))
    assert (view["status"], view["status_label"]) == (status, label)


def test_an_incident_view_from_a_dict_fills_what_the_row_lacks() -> None:
    view = incident_view(incident_dict())
    assert view["occurred_at"] == "2026-11-22T01:30:00+00:00" and view["due_at"] is None
    assert view["updated_at"] == "2026-11-22T01:35:00+00:00"
    assert (view["round"], view["merged_into"], view["camera"]) == (0, None, None)
    assert (view["category_label"], view["caller_phone"], view["tracking_no"]) == (
        "垃圾满溢",
        "13912345678",
        "TRK-1",
    )
    assert view["photo_urls"] == [] and view["location"] == {}
    assert view["recommended"] == {"nearest": {}, "own_grid_worker": None, "enriched_at": None}
    # no label in the record: the category's own code
    assert incident_view(incident_dict(record="{}"))["category_label"] == "garbage_overflow"


def test_only_a_camera_incident_has_a_camera() -> None:
    record = {"camera_confidence": 0.93, "snapshot_url": "https://cam/s.jpg", "stream_url": "rtsp://cam/1"}
    view = incident_view(incident_dict(source="camera", record=orjson.dumps(record).decode(), round=2))
    assert view["camera"] == {
        "confidence": 0.93,
        "snapshot_url": "https://cam/s.jpg",
        "stream_url": "rtsp://cam/1",
    }
    assert view["round"] == 2
    assert incident_view(incident_dict(source="hotline", record=record))["camera"] is None


def test_a_task_shows_its_state_in_chinese_and_its_times() -> None:
    row = {
        "task_id": "T-1", "incident_id": "INC-1", "responder_id": "G-1", "responder_name": "网格员甲",
        "responder_kind": "grid_worker", "org": "清晖社区", "kind": "response", "round": 0,
        "reasons": ("最近",), "distance_m": 420.0, "eta_s": 300, "note": None, "photo_urls": (),
        "offered_at": T0, "accepted_at": None, "finished_at": None, "updated_at": T0,
    }  # fmt: skip
    offered = task_view({**row, "state": "offered"})
    assert (offered["state"], offered["state_label"], offered["accepted_at"]) == ("offered", "待接单", None)
    assert offered["reasons"] == ["最近"] and offered["photo_urls"] == []
    accepted = task_view({**row, "state": "en_route", "accepted_at": T0 + timedelta(minutes=2)})
    assert (accepted["state_label"], accepted["accepted_at"]) == ("前往途中", "2026-11-22T01:32:00+00:00")
    with pytest.raises(ValueError):
        task_view({**row, "state": "lost"})


async def test_stored_rows_read_as_the_views_of_what_was_filed(pool: asyncpg.Pool, pg: asyncpg.Pool) -> None:
    rec = enriched(f"VW-{uuid.uuid4().hex[:8]}")
    await IncidentService(pool, load_plans()).file(rec)
    row = await pool.fetchrow("SELECT * FROM incidents WHERE incident_id = $1", rec.incident_id)
    view = incident_view(row)
    assert (view["incident_id"], view["status_label"], view["version"], view["round"]) == (
        rec.incident_id,
        "待派遣",
        1,
        0,
    )
    assert view["category_label"] == "垃圾满溢" and view["tracking_no"] == rec.tracking_no
    assert view["location"]["lon"] == rec.location.lon and view["merged_into"] is None
    assert datetime.fromisoformat(view["occurred_at"]) == rec.occurred_at

    # an event reads the same from the stored timeline (jsonb decoded or not) as decided
    decoded = await pool.fetchrow("SELECT * FROM incident_events WHERE incident_id = $1", rec.incident_id)
    raw = await pg.fetchrow("SELECT * FROM incident_events WHERE incident_id = $1", rec.incident_id)
    assert isinstance(raw["data"], str)  # a pool without the jsonb codec
    assert event_view(decoded) == event_view(raw)
    stored = event_view(decoded)
    assert (stored["type"], stored["state"], stored["version"], stored["actor"]) == (
        "incident.file",
        "new",
        1,
        "system:intake",
    )
    assert "state" not in stored["data"] and "reason" not in stored["data"]
    decided = Event(
        stored["event_id"],
        rec.incident_id,
        1,
        "incident.file",
        "system:intake",
        decoded["at"],
        IncidentState.NEW,
        decoded["public"],
        None,
        {},
    )
    assert event_view(decided) == {k: v for k, v in stored.items() if k != "data"}
