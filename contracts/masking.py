"""Personal data on screens: callers' phones and names and reporters' identities are masked.

Every incident, report payload and timeline event a console or the read API shows passes
through here; the unmasked values leave the server only through the audited reveal endpoint.
Responders' phones get `responder_incident`, which carries no personal data at all.

Free text is masked too (PIPL): a caller's "回电13800138000" in a description, a responder's note or
an operator's reason is personal data whatever field it was typed into. Mobile and landline
numbers and resident ID-card numbers in any free-text field (`FREE_TEXT_FIELDS`) are masked where
they sit; the audited 查看号码 returns the texts unmasked (`unmasked_texts`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

import orjson

# The personal fields of reports and incidents (DESIGN: masked on screens).
PERSONAL_FIELDS: Final = ("caller_phone", "caller_name", "reporter_id")
# Fields people type into, wherever they sit (incidents, reports, tasks, timeline events).
FREE_TEXT_FIELDS: Final = frozenset(
    {"description", "title", "address", "text", "note", "reason", "comment", "message"}
)
# A number that identifies a person, not part of a longer run of digits (camera ids are 20
# digits; tracking numbers and times never match): resident ID cards (18, or the old 15), mobile
# numbers (with an optional +86), landlines (area code 0xx or 0xxx, optional separator).
_ID_CARD = (
    r"(?<![0-9A-Za-z])(?:[1-9]\d{5}(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
    r"|[1-9]\d{14})(?![0-9A-Za-z])"
)
_MOBILE = r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d(?:[- ]?\d{4}){2}(?!\d)"
_LANDLINE = r"(?<!\d)0\d{2,3}[- ]?\d{7,8}(?!\d)"
_NUMBERS: Final = re.compile(f"{_ID_CARD}|{_MOBILE}|{_LANDLINE}")
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


def _mask_number(match: re.Match[str]) -> str:
    digits = match.group(0)
    keep_head = 3 if len(digits) < 15 else 4  # 138****8000; an ID card keeps its region's start
    hidden = len(digits) - keep_head - 4
    return digits[:keep_head] + "*" * max(hidden, 4) + digits[-4:]


def mask_text(text: str | None) -> str | None:
    """Free text with every phone and ID-card number in it masked (names cannot be found
    reliably in free text; the structured caller_name is masked on its own)."""
    if not text:
        return text
    return _NUMBERS.sub(_mask_number, text)


_MASKERS: Final = {"caller_phone": mask_phone, "caller_name": mask_name, "reporter_id": mask_id}


def masked_tree(value: Any) -> Any:
    """Any JSON value with every personal field and every free-text field masked wherever it
    sits (views, payloads, events; records on the ops tail, whose dead letters carry the
    original record's text in `value`)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            masker = _MASKERS.get(k)
            if masker is not None and (v is None or isinstance(v, str)):
                out[k] = masker(v)
            elif k in FREE_TEXT_FIELDS and isinstance(v, str):
                out[k] = mask_text(v)
            elif k == "value" and isinstance(v, str) and v.startswith("{"):
                out[k] = _masked_text(v)
            else:
                out[k] = masked_tree(v)
        return out
    if isinstance(value, list):
        return [masked_tree(v) for v in value]
    return value


def masked_incident(view: dict[str, Any]) -> dict[str, Any]:
    """An incident view as consoles and the read API show it (its tasks' notes included)."""
    out: dict[str, Any] = masked_tree(view)
    for field in PERSONAL_FIELDS:  # present, masked or None, whatever the view carried
        out.setdefault(field, None)
    return out


def masked_payload(source: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A report's payload as accepted, masked."""
    out: dict[str, Any] = masked_tree(payload)
    return out


def masked_event(event: dict[str, Any]) -> dict[str, Any]:
    """A timeline event: its data may carry a report's personal fields, its reason and note
    text what people typed."""
    out: dict[str, Any] = masked_tree(event)
    return out


def responder_incident(view: dict[str, Any], my_tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """The incident as a tasked responder sees it: the job, no personal data, no other
    responders (their positions and names are not theirs to know), only their own tasks."""
    out = {k: view.get(k) for k in RESPONDER_FIELDS}
    out["tasks"] = my_tasks
    masked: dict[str, Any] = masked_tree(out)
    return masked


def unmasked_texts(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(path, text) of every free-text field in `value` that masking changes: what the audited
    查看号码 reveals besides the contact fields."""
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{where}.{k}" if where else str(k)
            if k in FREE_TEXT_FIELDS and isinstance(v, str) and mask_text(v) != v:
                yield path, v
            else:
                yield from unmasked_texts(v, path)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from unmasked_texts(v, f"{where}.{i}")


def _masked_text(text: str) -> str:
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return orjson.dumps(masked_tree(parsed)).decode()
