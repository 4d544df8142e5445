"""What makes a record unusable: every kind of undecodable value, a key that is not the record's id
and a contract violation are refused with one wording that names the problem."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.positions import PositionFix
from contracts.validation import MAX_RECORD_BYTES, BadRecord, check_key, decode_object, validated

_NUMBERS = st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
_SCALARS = st.none() | st.booleans() | _NUMBERS | st.text()
_JSON = st.recursive(_SCALARS, lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids), max_leaves=8)
_KIND = {
    type(None): "null",
    bool: "a boolean",
    str: "a string",
    list: "an array",
    int: "a number",
    float: "a number",
}


@given(st.dictionaries(st.text(), _JSON, max_size=5))
def test_a_json_object_is_decoded_as_it_was_written(obj: dict[str, object]) -> None:
    assert decode_object(orjson.dumps(obj)) == obj


@given(_JSON.filter(lambda v: not isinstance(v, dict)))
def test_json_that_is_not_an_object_is_refused_saying_what_it_is(value: object) -> None:
    with pytest.raises(BadRecord, match=f"^value: not a JSON object but {_KIND[type(value)]}$"):
        decode_object(orjson.dumps(value))


def test_a_tombstone_is_refused() -> None:
    with pytest.raises(BadRecord, match=r"^value: null \(a tombstone\)"):
        decode_object(None)


def test_a_value_over_the_limit_is_refused_before_it_is_parsed() -> None:
    at_limit = b'{"a":"' + b"x" * (MAX_RECORD_BYTES - 8) + b'"}'
    assert len(at_limit) == MAX_RECORD_BYTES and decode_object(at_limit)
    with pytest.raises(BadRecord, match=f"oversized, {MAX_RECORD_BYTES + 1} bytes"):
        decode_object(at_limit + b" ")
    with pytest.raises(BadRecord, match="oversized, 3 bytes \\(at most 2\\)"):
        decode_object(b"{ }", limit=2)


@given(st.text(max_size=20), st.sampled_from([b"\xff", b"\xc3", b"\xe4\xb8", b"\xed\xa0\x80"]))
def test_invalid_utf8_is_refused_naming_the_byte(prefix: str, bad: bytes) -> None:
    head = b'{"a":"' + prefix.encode()
    with pytest.raises(BadRecord, match=f"^value is not JSON: invalid UTF-8 .* at byte {len(head)}\\)$"):
        decode_object(head + bad + b'"}')


@pytest.mark.parametrize("text", [b"", b"{", b"{'a': 1}", b"NaN", b'{"a":1}{"b":2}', b"\xef\xbb\xbf{}"])
def test_text_that_is_not_json_is_refused(text: bytes) -> None:
    with pytest.raises(BadRecord, match=r"^value is not JSON: "):
        decode_object(text)


@given(st.text(min_size=1, max_size=64))
def test_a_record_keyed_by_its_own_id_passes_and_any_other_key_is_refused(rid: str) -> None:
    check_key(rid.encode(), "incident_id", rid)
    with pytest.raises(BadRecord, match=r"^key: missing \(must be the record's incident_id "):
        check_key(None, "incident_id", rid)
    with pytest.raises(BadRecord, match=r"^key: .* is not the record's incident_id "):
        check_key(rid.encode() + b"x", "incident_id", rid)


def test_a_long_or_binary_wrong_key_is_shown_short_and_readable() -> None:
    with pytest.raises(BadRecord) as exc:
        check_key(b"\xff" + b"k" * 500, "responder_id", "R1")
    shown = "\ufffd" + "k" * 99  # the undecodable byte replaced, cut to 100 characters
    assert str(exc.value) == f"key: {shown!r} is not the record's responder_id 'R1'"


_GOOD = {"responder_id": "R1", "lon": 106.5, "lat": 29.5, "at": "2026-12-05T09:30:00+08:00"}
_BAD = {"responder_id": "../x", "lon": True, "lat": 91.0, "at": "2026-12-05T09:30:00", "accuracy_m": -1.0}


@given(st.sets(st.sampled_from(sorted(_BAD)), min_size=1))
def test_every_broken_field_is_named_and_no_other(broken: set[str]) -> None:
    data = {**_GOOD, **{f: _BAD[f] for f in broken}}
    with pytest.raises(BadRecord) as exc:
        validated(PositionFix, data, prefix="positions.3.")
    named = {part.split(":")[0] for part in str(exc.value).split("; ")}
    assert named == {f"positions.3.{f}" for f in broken}


def test_a_valid_record_is_returned_as_the_model_and_a_non_object_named_as_the_record() -> None:
    assert validated(PositionFix, _GOOD) == PositionFix.model_validate(_GOOD)
    with pytest.raises(BadRecord, match=r"^\(record\): Input should be a valid dictionary"):
        validated(PositionFix, [1])  # type: ignore[arg-type]
