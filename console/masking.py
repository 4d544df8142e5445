"""Personal data on screens: callers' phones and reporters' identities are masked."""

from __future__ import annotations

from typing import Any


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
