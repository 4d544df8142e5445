"""`positions.raw`: a responder's position fix, alone (a phone) or in a batch (gateways, AVL units).

How fixes travel on the topic (one record per fix, or one batch per partition) is
`infra.fixes`; this is what one fix must be.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AwareDatetime, Field

from contracts.fields import Contract, Lat, Lon, SourceId


class PositionFix(Contract):
    responder_id: SourceId
    lon: Lon
    lat: Lat
    at: AwareDatetime
    accuracy_m: float | None = Field(default=None, strict=True, ge=0, le=100_000)


class PositionBatch(Contract):
    positions: Annotated[list[PositionFix], Field(min_length=1, max_length=1000)]
