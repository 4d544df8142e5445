"""The strict field types: numbers are numbers, latitudes stay searchable, ids cannot name a path,
text is neither blank nor carries NUL, and each refusal names the field it is about."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from pydantic import Field, ValidationError
from redis.exceptions import ResponseError

from contracts.categories import CATEGORIES
from contracts.fields import (
    GEO_MAX_LAT,
    Contract,
    Lat,
    Lon,
    SourceId,
    Text,
    check_category,
    representable_time,
)


class Probe(Contract):
    lon: Lon = 0.0
    lat: Lat = 0.0
    sid: SourceId = "a"
    text: Text = "x"
    tags: list[str] = Field(default_factory=list)


def refused(**fields: object) -> dict[str, str]:
    """The refused fields of a Probe built from `fields`, each with its message."""
    with pytest.raises(ValidationError) as exc:
        Probe.model_validate(fields)
    return {".".join(map(str, e["loc"])): e["msg"] for e in exc.value.errors()}


_NOT_NUMBERS = st.booleans() | st.floats(-90, 90).map(str) | st.none() | st.lists(st.floats(0, 1), max_size=2)
# Unicode White_Space (what the contract strips before it checks that a text is not blank).
_SPACE = st.text(st.sampled_from(" \t\n\x0b\x0c\r\x85\xa0\u1680\u2000\u2009\u200a\u2028\u2029\u202f\u3000"))


@given(field=st.sampled_from(["lon", "lat"]), value=_NOT_NUMBERS)
def test_a_coordinate_that_is_not_a_number_is_refused_by_name(field: str, value: object) -> None:
    assert list(refused(**{field: value})) == [field]


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_latitude_is_accepted_exactly_within_the_geo_index_limit(lat: float) -> None:
    if -GEO_MAX_LAT <= lat <= GEO_MAX_LAT:
        assert Probe(lat=lat).lat == lat
    else:  # beyond the Web Mercator limit, NaN and infinities alike
        assert list(refused(lat=lat)) == ["lat"]


@pytest.mark.parametrize("lat", [85.05112878, -85.05112878, 85.0511287, 85.0511288, -85.051129, 89.9, 0.0])
async def test_the_latitude_bound_is_the_redis_geo_limit(redis: aioredis.Redis, lat: float) -> None:
    try:
        await redis.geoadd("fields:geo", (106.5, lat, "probe"))
        indexed = True
    except ResponseError:  # "invalid longitude,latitude pair"
        indexed = False
    finally:
        await redis.delete("fields:geo")
    assert indexed == (lat not in (85.0511288, -85.051129, 89.9))  # both sides of the edge are probed
    if indexed:  # the oracle is Redis itself: what it can index is accepted, nothing else
        assert Probe(lat=lat).lat == lat
    else:
        assert list(refused(lat=lat)) == ["lat"]


@given(st.floats(-1000, 1000))
def test_a_longitude_is_accepted_exactly_within_plus_or_minus_180(lon: float) -> None:
    if abs(lon) <= 180:
        assert Probe(lon=lon).lon == lon
    else:
        assert list(refused(lon=lon)) == ["lon"]


@given(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}\Z"))
def test_an_id_made_of_safe_characters_is_kept(sid: str) -> None:
    assert Probe(sid=sid).sid == sid


@pytest.mark.parametrize("sid", [".", "..", "../etc", "-rf", "_x", "a/b", "a b", "x" * 65, "", "中文"])
def test_an_id_that_could_name_a_path_or_an_option_is_refused(sid: str) -> None:
    assert list(refused(sid=sid)) == ["sid"]


@given(_SPACE)
def test_a_blank_text_is_refused_by_name(blank: str) -> None:
    assert list(refused(text=blank)) == ["text"]


@given(_SPACE, st.text(st.characters(exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1), _SPACE)
def test_surrounding_whitespace_is_stripped_and_the_text_kept(left: str, core: str, right: str) -> None:
    assert Probe(text=left + core[:2000] + right).text == core[:2000]


@given(st.text(), st.text(), st.sampled_from(["sid", "text", "tags"]))
def test_nul_is_refused_in_any_text_field_or_list_of_texts(before: str, after: str, field: str) -> None:
    value = before + "\x00" + after
    problems = refused(**{field: [value] if field == "tags" else value})
    assert "NUL character (U+0000)" in problems[field]


def test_an_unknown_field_is_refused_by_its_name() -> None:
    assert refused(colour="red") == {"colour": "Extra inputs are not permitted"}


def test_an_unknown_category_is_refused_listing_the_known_ones() -> None:
    assert check_category("smoke_fire") == "smoke_fire"
    with pytest.raises(ValueError, match=r"unknown category 'arson'; known: .*smoke_fire") as exc:
        check_category("arson")
    assert all(code in str(exc.value) for code in CATEGORIES)


@pytest.mark.parametrize(
    ("at", "words"),
    [
        (datetime(2026, 12, 5, 9, 30), "UTC offset"),
        (datetime(1970, 1, 1, tzinfo=UTC), "outside 2000 to 2200"),
        (datetime(2200, 1, 1, tzinfo=UTC), "outside 2000 to 2200"),
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=8))), "outside any time"),
    ],
)
def test_a_time_the_pipeline_cannot_carry_is_refused(at: datetime, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        representable_time(at)
    ok = datetime(2026, 12, 5, 9, 30, tzinfo=timezone(timedelta(hours=8)))
    assert representable_time(ok) is ok
