"""The dead letter for a refused record: it names the record exactly, keeps a readable value that is
never cut inside a character and always fits where the record did, and survives its wire form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from contracts.deadletters import MAX_LETTER_VALUE, DeadLetter, cut_utf8, dead_letter


@given(st.text(max_size=200), st.integers(0, 900))
def test_a_cut_keeps_whole_characters_and_loses_at_most_one(text: str, limit: int) -> None:
    raw = text.encode()
    cut = cut_utf8(raw, limit)
    kept = cut.decode("utf-8")  # raises if the cut fell inside a character
    assert raw.startswith(cut) and len(cut) <= limit
    assert cut == raw or len(text[len(kept)].encode()) > limit - len(cut)  # the next one did not fit


@given(st.binary(max_size=50), st.integers(0, 60))
def test_a_cut_of_any_bytes_is_a_prefix_at_most_three_bytes_short(value: bytes, limit: int) -> None:
    cut = cut_utf8(value, limit)
    assert (
        value.startswith(cut) and len(cut) == len(value)
        if len(value) <= limit
        else limit - 3 <= len(cut) <= limit
    )


@given(
    st.sampled_from(["deadletter", "reports.raw"]),
    st.none() | st.binary(max_size=30),
    st.none() | st.binary(max_size=300),
    st.none() | st.integers(0, 1000),
    st.none() | st.text(max_size=20),
)
def test_a_letter_names_the_record_and_survives_its_wire_form(
    topic: str, key: bytes | None, value: bytes | None, offset: int | None, stuck: str | None
) -> None:
    before = datetime.now(UTC)
    letter = dead_letter("enrich", "value: oversized", topic, key, value, 3, offset, stuck)
    assert (letter.topic, letter.partition, letter.offset, letter.stage, letter.stuck) == (
        topic, 3, offset, "enrich", stuck
    )  # fmt: skip
    assert letter.key == (None if key is None else key.decode("utf-8", "replace"))
    assert letter.value == ("" if value is None else value.decode("utf-8", "replace"))
    assert before <= letter.at <= datetime.now(UTC) + timedelta(seconds=1)
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter


def test_a_huge_value_is_cut_and_says_how_long_it_was() -> None:
    value = ("垃圾桶满了" * 20_000).encode()  # 300,000 bytes; the limit falls inside a character
    letter = dead_letter("normalise", "value: oversized", "reports.raw", b"T-1", value, 0, 9)
    shown, tail = letter.value.split("…")
    assert tail == f"[cut: {len(value)} bytes in all]"
    assert "\ufffd" not in shown and value.startswith(shown.encode())
    assert MAX_LETTER_VALUE - 3 < len(shown.encode()) <= MAX_LETTER_VALUE
    assert len(letter.model_dump_json()) < 2 * MAX_LETTER_VALUE


def test_a_value_exactly_at_the_limit_is_kept_whole() -> None:
    value = b"x" * MAX_LETTER_VALUE
    assert dead_letter("s", "r", "t", None, value, None, None).value == value.decode()
