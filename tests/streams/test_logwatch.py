"""The log watch: a partition whose log ends at or below an offset already read has restarted."""

from __future__ import annotations

from streams.logwatch import OffsetWatch, beyond_log_end


def test_a_log_that_restarted_below_what_was_read_is_noticed() -> None:
    watch = OffsetWatch()
    for offset in (0, 1, 2, 41):
        watch.saw("reports.raw", 0, offset)
    watch.saw("reports.raw", 1, 7)
    watch.saw("reports.raw", 1, 3)  # out of order: the highest counts
    ends = {("reports.raw", 0): 42, ("reports.raw", 1): 8}
    assert watch.truncated(lambda t, p: ends.get((t, p))) == []  # normal: the log is past us
    ends[("reports.raw", 0)] = 0  # the broker came back empty
    ends[("reports.raw", 1)] = None  # type: ignore[assignment]  # not fetched yet: no verdict
    assert watch.truncated(lambda t, p: ends.get((t, p))) == [
        "reports.raw[0] ends at 0, but offset 41 was read"
    ]
    ends[("reports.raw", 1)] = 7
    assert len(watch.truncated(lambda t, p: ends.get((t, p)))) == 2  # ends exactly at what we read: gone


def test_committed_offsets_past_the_end_of_a_restarted_log_are_not_trusted() -> None:
    committed = {"raw-0": 117, "raw-1": 9, "raw-2": None, "raw-3": 40, "raw-4": -1}
    ends = {"raw-0": 5, "raw-1": 9, "raw-2": 3, "raw-3": 52, "raw-4": 0}
    assert beyond_log_end(committed, ends) == ["raw-0"]  # at the end (9) or before it: fine
    assert beyond_log_end({"raw-0": 117}, {}) == []  # no end known: no verdict
