"""When a report's or a fix's own time is plausible: the window every stage holds it to.

A time that is valid ISO 8601 can still be one no later stage can use: the year 9999 with an
offset overflows when a clock is added to it, the year 1 becomes the year 0 in UTC, and 1970 or
2100 file a case whose clocks were due decades ago or are due decades ahead. The intake refuses
such a time at the door (422 naming the field), measured from when the report arrives, so that a
202 is a promise the pipeline can keep. The later stages hold a record to the same rule,
measured from the intake's `received_at`, with the pipeline's hard window (`HARD`), which no
configured window may exceed: whatever the intake accepted they accept too, and a record written
by anything else is refused with a reason instead of failing inside them.

Pure: no clock is read here; the caller says what "now" is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

# Any time anywhere in the pipeline lies between these (PostgreSQL and Python both represent
# every instant between them, with any offset and with the longest clock added).
EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2200, 1, 1, tzinfo=UTC)
# The pipeline's own limits (`HARD`): a configured window lies within them.
HARD_MAX_FUTURE: Final = timedelta(days=1)
HARD_MAX_AGE: Final = timedelta(days=366)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """How far a source's own time may lie from its arrival: ahead (clock skew) and behind (a
    platform re-sending after an outage)."""

    max_future: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(days=30)

    def __post_init__(self) -> None:
        if self.max_future < timedelta(0) or self.max_age < timedelta(0):
            raise ValueError("a time window cannot be negative")
        if self.max_future > HARD_MAX_FUTURE or self.max_age > HARD_MAX_AGE:
            raise ValueError(
                f"a time window may allow at most {HARD_MAX_FUTURE} ahead and {HARD_MAX_AGE} behind "
                "(the pipeline's own limits)"
            )

    def problem(self, at: datetime, now: datetime) -> str | None:
        """Why `at` is not plausible for something arriving at `now`, or None."""
        utc = _in_utc(at)
        if isinstance(utc, str):
            return utc
        if utc > now + self.max_future:
            return f"lies in the future (more than {_words(self.max_future)} after it arrived)"
        if utc < now - self.max_age:
            return f"is too old (more than {_words(self.max_age)} before it arrived)"
        return None


def _in_utc(at: datetime) -> datetime | str:
    """`at` in UTC, or why it has no place in UTC (no offset; the year 0 or 10000 there)."""
    if at.tzinfo is None or at.utcoffset() is None:
        return "must carry its UTC offset, e.g. 2026-11-22T09:30:00+08:00"
    try:
        return at.astimezone(UTC)
    except (OverflowError, ValueError):
        return "lies outside any time the centre can record"


def _words(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


HARD: Final = TimeWindow(HARD_MAX_FUTURE, HARD_MAX_AGE)


def representable(at: datetime) -> str | None:
    """Why `at` cannot be carried through the pipeline at all (stored, have clocks added), or
    None. For times that are not measured against an arrival (a record's own `received_at`)."""
    utc = _in_utc(at)
    if isinstance(utc, str):
        return utc
    if not EARLIEST <= utc < LATEST:
        return f"lies outside {EARLIEST:%Y} to {LATEST:%Y}"
    return None


__all__ = ["EARLIEST", "HARD", "LATEST", "TimeWindow", "representable"]
