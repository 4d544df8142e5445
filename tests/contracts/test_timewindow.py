"""The plausible window for a source's own time: pure rules, fed by hand and by hypothesis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.timewindow import EARLIEST, HARD, LATEST, TimeWindow, representable
from infra.settings import Settings

NOW = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)
WINDOW = TimeWindow(timedelta(minutes=5), timedelta(days=30))
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


def test_the_edges_of_the_window_are_inside_and_a_second_beyond_is_not() -> None:
    assert WINDOW.problem(NOW + timedelta(minutes=5), NOW) is None
    assert WINDOW.problem(NOW - timedelta(days=30), NOW) is None
    assert "future (more than 5 minutes" in str(WINDOW.problem(NOW + timedelta(minutes=5, seconds=1), NOW))
    assert "too old (more than 30 days" in str(WINDOW.problem(NOW - timedelta(days=30, seconds=1), NOW))


@pytest.mark.parametrize(
    ("at", "words"),
    [
        (datetime(1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=8))), "outside any time"),  # year 0 in UTC
        (datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-8))), "outside any time"),
        (datetime(9999, 12, 31, 12, 0, tzinfo=UTC), "future"),
        (datetime(1970, 1, 1, tzinfo=UTC), "too old"),
        (datetime(2100, 1, 1, tzinfo=UTC), "future"),
        (datetime(2026, 12, 5, 9, 30), "offset"),  # naive
    ],
)
def test_what_hostile_senders_tried_is_refused_with_a_reason(at: datetime, words: str) -> None:
    assert words in str(WINDOW.problem(at, NOW))


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets),
    st.timedeltas(timedelta(0), timedelta(days=1)),
    st.timedeltas(timedelta(0), timedelta(days=366)),
)
def test_a_time_is_accepted_exactly_when_it_lies_within_the_window(
    at: datetime, ahead: timedelta, behind: timedelta
) -> None:
    window = TimeWindow(ahead, behind)
    inside = NOW - behind <= at <= NOW + ahead  # an independent oracle: aware comparison
    assert (window.problem(at, NOW) is None) == inside
    if inside:  # whatever a window accepts, the pipeline's hard window accepts too
        assert HARD.problem(at, NOW) is None
        assert representable(at) is None
        assert representable(at + timedelta(days=15)) is None  # the longest clock can be added


def test_a_window_wider_than_the_pipelines_or_negative_is_refused() -> None:
    with pytest.raises(ValueError, match="at most"):
        TimeWindow(timedelta(days=2), timedelta(days=1))
    with pytest.raises(ValueError, match="at most"):
        TimeWindow(timedelta(minutes=1), timedelta(days=400))
    with pytest.raises(ValueError, match="negative"):
        TimeWindow(timedelta(minutes=-1), timedelta(days=1))
    with pytest.raises(ValueError, match="INTAKE_MAX_AGE_S"):
        Settings(intake_max_age_s=400 * 86400)


def test_the_window_is_configured_by_settings() -> None:
    s = Settings(intake_max_future_s=60, intake_max_age_s=7 * 86400)
    assert s.time_window == TimeWindow(timedelta(minutes=1), timedelta(days=7))


def test_representable_times_lie_between_the_pipelines_bounds() -> None:
    assert representable(EARLIEST) is None
    assert representable(LATEST - timedelta(seconds=1)) is None
    assert "outside 2000 to 2200" in str(representable(LATEST))
    assert "outside" in str(representable(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=8)))))
    assert "offset" in str(representable(datetime(2026, 1, 1)))
