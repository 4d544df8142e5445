"""The registry's contracts: a responder or a camera as the registry administrator puts it.

A change is published on `responders.changes` (key: responder id) for the live roster.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool

from contracts.fields import Contract, Lat, Lon, SourceId


class ResponderUpsert(Contract):
    name: Annotated[str, Field(min_length=1, max_length=50)]
    kind: Literal["police", "grid_worker", "volunteer"]
    org: Annotated[str, Field(min_length=1, max_length=100)]
    skills: Annotated[list[Annotated[str, Field(min_length=1, max_length=40)]], Field(max_length=50)] = Field(
        default_factory=list
    )
    on_duty: StrictBool
    grid_id: SourceId | None = None


class CameraUpsert(Contract):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    lon: Lon
    lat: Lat


class ResponderChange(ResponderUpsert):
    """`responders.changes` (key: the responder id): a responder as the registry now holds it, for
    the streams' roster agent to bring live state up to date."""

    responder_id: SourceId
    updated_at: Any = None  # ignored: a record may carry the row's time


def responder_change(responder_id: str, body: ResponderUpsert) -> bytes:
    """The record for `responders.changes`."""
    return ResponderChange(responder_id=responder_id, **body.model_dump()).model_dump_json(
        exclude={"updated_at"}
    ).encode()
