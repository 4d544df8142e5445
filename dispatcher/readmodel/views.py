"""How an incident, a timeline event and a task look to every reader: consoles, the read API,
the phones and the events on `incidents.events`. Shaping only, from stored rows; no queries.

Personal data is still present here: the console layer masks it for each reader.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from contracts.states import INCIDENT_STATE_LABELS, TASK_STATE_LABELS, IncidentState, TaskState
from dispatcher.core.lifecycle import Event


def loads_json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def incident_view(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """The incident as consoles and the read API show it (personal data still present:
    the console layer masks it)."""
    record = loads_json(row["record"])
    state = IncidentState(row["status"])
    return {
        "incident_id": row["incident_id"],
        "status": state.value,
        "status_label": INCIDENT_STATE_LABELS[state],
        "version": row["version"],
        "source": row["source"],
        "category": row["category"],
        "category_label": record.get("category_label", row["category"]),
        "severity": row["severity"],
        "title": row["title"],
        "description": row["description"],
        "occurred_at": row["occurred_at"].isoformat(),
        "due_at": row["due_at"].isoformat() if row["due_at"] else None,
        "location": record.get("location", {}),
        "out_of_area": row["out_of_area"],
        "recommended": {
            "nearest": record.get("nearest", {}),
            "own_grid_worker": record.get("own_grid_worker"),
            "enriched_at": record.get("enriched_at"),
        },
        "camera": {
            "confidence": record.get("camera_confidence"),
            "snapshot_url": record.get("snapshot_url"),
            "stream_url": record.get("stream_url"),
        }
        if row["source"] == "camera"
        else None,
        "caller_phone": record.get("caller_phone"),
        "caller_name": record.get("caller_name"),
        "reporter_id": record.get("reporter_id"),
        "photo_urls": record.get("photo_urls", []),
        "tracking_no": record.get("tracking_no"),
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "intake_ns": record.get("intake_ns"),
        "round": row.get("round", 0) if isinstance(row, dict) else row["round"],
        "merged_into": row.get("merged_into") if isinstance(row, dict) else row["merged_into"],
    }


def event_view(event: Event | asyncpg.Record) -> dict[str, Any]:
    if isinstance(event, Event):
        return {
            "event_id": event.event_id,
            "incident_id": event.incident_id,
            "version": event.version,
            "type": event.type,
            "actor": event.actor,
            "at": event.at.isoformat(),
            "state": event.state.value,
            "public": event.public,
            "reason": event.reason,
        }
    data = dict(loads_json(event["data"]))
    state, reason = data.pop("state", None), data.pop("reason", None)
    return {
        "event_id": event["event_id"],
        "incident_id": event["incident_id"],
        "version": event["version"],
        "type": event["type"],
        "actor": event["actor"],
        "at": event["at"].isoformat(),
        "state": state,
        "public": event["public"],
        "reason": reason,
        "data": data,
    }


def task_view(row: asyncpg.Record) -> dict[str, Any]:
    state = TaskState(row["state"])
    return {
        "task_id": row["task_id"],
        "incident_id": row["incident_id"],
        "responder_id": row["responder_id"],
        "responder_name": row["responder_name"],
        "responder_kind": row["responder_kind"],
        "org": row["org"],
        "kind": row["kind"],
        "state": state.value,
        "state_label": TASK_STATE_LABELS[state],
        "round": row["round"],
        "reasons": list(row["reasons"]),
        "distance_m": row["distance_m"],
        "eta_s": row["eta_s"],
        "note": row["note"],
        "photo_urls": list(row["photo_urls"]),
        "offered_at": row["offered_at"].isoformat(),
        "accepted_at": row["accepted_at"].isoformat() if row["accepted_at"] else None,
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
        "updated_at": row["updated_at"].isoformat(),
    }
