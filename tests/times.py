"""Times for test reports: a report's own time must lie within the intake's plausible window of
its arrival (contracts.timewindow), so tests date their reports from the clock, not the calendar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

BEIJING = timezone(timedelta(hours=8))


def recent(ago: timedelta = timedelta(minutes=1)) -> str:
    """ISO 8601 with the Beijing offset, `ago` before now (as a platform would send it)."""
    return (datetime.now(UTC) - ago).astimezone(BEIJING).isoformat(timespec="seconds")
