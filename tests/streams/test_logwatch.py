"""The log watch: a partition whose log ends at or below an offset already read has restarted."""

from __future__ import annotations

from streams.logwatch import OffsetWatch


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
