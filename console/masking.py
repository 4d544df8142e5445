"""Personal data on screens: callers' phones and names and reporters' identities are masked.

Every incident, report payload and timeline event a console or the read API shows passes
through here; the unmasked values leave the server only through the audited reveal endpoint.
Responders' phones get `responder_incident`, which carries no personal data at all.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

# The personal fields of reports and incidents (DESIGN: masked on screens).
PERSONAL_FIELDS: Final = ("caller_phone", "caller_name", "reporter_id")
# What a responder's phone may know of an incident they hold a task on.
RESPONDER_FIELDS: Final = (
    "incident_id",
    "status",
    "status_label",
    "category",
    "category_label",
    "severity",
    "title",
    "description",
    "occurred_at",
    "due_at",
    "location",
    "out_of_area",
    "round",
)


def mask_phone(phone: str | None) -> str | None:
    """13800138000 -> 138****8000; short numbers keep only their last two digits."""
    if not phone:
        return phone
    digits = phone.strip()
    if len(digits) >= 11:
        return f"{digits[:3]}****{digits[-4:]}"
    return "*" * max(0, len(digits) - 2) + digits[-2:]


def mask_id(value: str | None) -> str | None:
    if not value:
        return value
    return value[:2] + "***" + value[-2:] if len(value) > 4 else "***"


def mask_name(name: str | None) -> str | None:
    """李女士 -> 李** ; keeps the surname the way hotline operators address callers."""
    if not name:
        return name
    return name[0] + "*" * (len(name) - 1)


def masked_incident(view: dict[str, Any]) -> dict[str, Any]:
    out = dict(view)
    out["caller_phone"] = mask_phone(view.get("caller_phone"))
    out["caller_name"] = mask_name(view.get("caller_name"))
    out["reporter_id"] = mask_id(view.get("reporter_id"))
    return out


def masked_payload(source: str, payload: dict[str, Any]) -> dict[str, Any]:
    out = dict(payload)
    if "caller_phone" in out:
        out["caller_phone"] = mask_phone(out["caller_phone"])
    if "caller_name" in out:
        out["caller_name"] = mask_name(out["caller_name"])
    if "reporter_id" in out:
        out["reporter_id"] = mask_id(out["reporter_id"])
    return out


def masked_event(event: dict[str, Any]) -> dict[str, Any]:
    """A timeline event whose data might carry a report's personal fields."""
    data = event.get("data")
    if not isinstance(data, dict) or not any(f in data for f in PERSONAL_FIELDS):
        return event
    return {**event, "data": masked_payload("event", data)}


def responder_incident(view: dict[str, Any], my_tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """The incident as a tasked responder sees it: the job, no personal data, no other
    responders (their positions and names are not theirs to know), only their own tasks."""
    out = {k: view.get(k) for k in RESPONDER_FIELDS}
    out["tasks"] = my_tasks
    return out


_MASKERS: Final = {"caller_phone": mask_phone, "caller_name": mask_name, "reporter_id": mask_id}


def masked_tree(value: Any) -> Any:
    """Any JSON value with every personal field masked wherever it sits (records on the ops
    tail: raw reports, incidents, dead letters, whose `value` is the original record's text)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            masker = _MASKERS.get(k)
            if masker is not None and (v is None or isinstance(v, str)):
                out[k] = masker(v)
            elif k == "value" and isinstance(v, str) and v.startswith("{"):
                out[k] = _masked_text(v)
            else:
                out[k] = masked_tree(v)
        return out
    if isinstance(value, list):
        return [masked_tree(v) for v in value]
    return value


def _masked_text(text: str) -> str:
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return orjson.dumps(masked_tree(parsed)).decode()
