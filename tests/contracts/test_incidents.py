"""`incidents.located` and `incidents.enriched`: a record survives its wire form, and a time the
dispatcher could not store is refused by the field's name instead of failing the insert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts.incidents import EnrichedIncident, IncidentRecord, Location, Recommended

AT = datetime(2026, 12, 5, 9, 30, tzinfo=timezone(timedelta(hours=8)))
RECORD: dict[str, Any] = {
    "incident_id": "INC-1", "tracking_no": "T-1", "source": "app", "source_id": "R-9",
    "category": "streetlight", "category_label": "路灯损坏", "severity": 4, "title": "路灯损坏",
    "occurred_at": AT, "received_at": AT, "due_at": AT + timedelta(hours=24),
    "location": {"lon": 106.55, "lat": 29.56, "grid_id": "G1"},
}  # fmt: skip
NEAR = Recommended(responder_id="P1", name="王警官", kind="police", org="派出所", distance_m=420.5, eta_s=66)
ENRICHED: dict[str, Any] = {
    **RECORD,
    "nearest": {"police": [NEAR]},
    "enriched_at": AT + timedelta(seconds=1),
    "enrichment_id": "E1",
}
TIMES = ("occurred_at", "received_at", "due_at")
# Times valid in ISO 8601 that no later stage can use, with the words of their refusal.
UNUSABLE = st.sampled_from(
    [
        (datetime(1970, 1, 1, tzinfo=UTC), "outside 2000 to 2200"),
        (datetime(2300, 1, 1, tzinfo=UTC), "outside 2000 to 2200"),
        (datetime(2026, 12, 5, 9, 30), "UTC offset"),
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=8))), "outside any time"),
    ]
)


def test_an_enriched_incident_survives_its_wire_form() -> None:
    enriched = EnrichedIncident.model_validate(ENRICHED)
    again = EnrichedIncident.model_validate_json(enriched.model_dump_json())
    assert again == enriched and again.occurred_at == AT and again.nearest["police"] == [NEAR]
    assert again.location == Location(lon=106.55, lat=29.56, grid_id="G1") and not again.location.out_of_area
    assert again.photo_urls == [] and again.own_grid_worker is None
    # What enrichment adds is dropped when read as the located record it extends.
    assert IncidentRecord.model_validate(enriched.model_dump(include=set(IncidentRecord.model_fields))).title


@given(st.sets(st.sampled_from((*TIMES, "enriched_at")), min_size=1), UNUSABLE)
def test_each_unusable_time_is_refused_by_its_name(fields: set[str], bad: tuple[datetime, str]) -> None:
    at, words = bad
    with pytest.raises(ValidationError) as exc:
        EnrichedIncident.model_validate({**ENRICHED, **dict.fromkeys(fields, at)})
    errors = exc.value.errors()
    assert {e["loc"][0] for e in errors} == fields
    assert all(words in e["msg"] for e in errors)


@given(st.datetimes(datetime(2000, 1, 2), datetime(2199, 12, 30), timezones=st.just(UTC)))
def test_any_time_between_2000_and_2200_is_kept_as_the_same_instant(at: datetime) -> None:
    record = IncidentRecord.model_validate({**RECORD, **dict.fromkeys(TIMES, at.astimezone(AT.tzinfo))})
    assert (record.occurred_at, record.received_at, record.due_at) == (at, at, at)


def test_an_unknown_source_or_a_missing_location_is_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        IncidentRecord.model_validate(
            {**{k: v for k, v in RECORD.items() if k != "location"}, "source": "fax"}
        )
    assert {e["loc"][0] for e in exc.value.errors()} == {"source", "location"}
