"""The field types every record contract is built from: coordinates, ids, text, times.

Strict on purpose: `true` or "106.5" is not a coordinate, a blank text is not a description, an
id that starts with a dot names a path. Each refusal is worded for the field it names, so the
intake's 422 and a stage's dead letter say the same thing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.categories import CAMERA_ALARM_TYPES, CATEGORIES, HOTLINE_TIME_LIMITS
from contracts.timewindow import representable

# Numbers are numbers: `true` or "106.5" is not a coordinate (lax parsing made `true` lon 1.0).
Lon = Annotated[float, Field(strict=True, ge=-180, le=180, description="WGS-84 longitude, degrees")]
# Latitudes nearer the poles than Redis's GEO index can hold (the Web Mercator limit) could not
# be searched for nearby responders: refused at the door, not failed in enrichment.
GEO_MAX_LAT = 85.05112878
Lat = Annotated[
    float,
    Field(
        strict=True, ge=-GEO_MAX_LAT, le=GEO_MAX_LAT, description="WGS-84 latitude, degrees (±85.05112878)"
    ),
]
# An id starts with a letter or digit: "..", "." or "-x" would name a path or an option.
SourceId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")]
# Text a person reads: not blank (whitespace is stripped first), so a blank field is refused
# by name instead of filing an incident that says nothing.
Text = Annotated[str, Field(min_length=1, max_length=2000)]
Source = Literal["camera", "hotline", "app"]
# Closed vocabularies, declared in the OpenAPI document (the validators below word the refusal).
AlarmType = Annotated[str, Field(json_schema_extra={"enum": list(CAMERA_ALARM_TYPES)})]
CategoryCode = Annotated[str, Field(json_schema_extra={"enum": sorted(CATEGORIES)})]
TimeLimit = Annotated[str, Field(json_schema_extra={"enum": list(HOTLINE_TIME_LIMITS)})]




def refuse_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000: refuse it at the edge (a 422 naming the
    field) rather than fail on the insert (a 500)."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    if isinstance(value, list):
        for item in value:
            refuse_nul(item)
    return value


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    _no_nul = field_validator("*", mode="before")(refuse_nul)


def check_category(value: str) -> str:
    if value not in CATEGORIES:
        raise ValueError(f"unknown category {value!r}; known: {', '.join(sorted(CATEGORIES))}")
    return value


def representable_time(value: datetime) -> datetime:
    problem = representable(value)
    if problem is not None:
        raise ValueError(problem)
    return value
