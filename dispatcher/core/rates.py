"""三率: response, resolution and satisfaction rates, from recorded facts. Pure, no I/O.

The caller reads the facts out of the database (the incident timeline, tasks and residents'
ratings) into the plain records below; `compute_rates` counts them per grid, community,
organisation, Beijing day, or overall.

Definitions. Everything is as of `now`: a fact stamped after `now` is treated as not having
happened yet (an incident filed later does not exist, a later acceptance, close or rating has not
happened), so a report for a past moment is reproducible.

- Counted incidents: incidents filed at or before `now` that are neither cancelled nor merged.
  Cancelled (false alarm) and merged (its reports live on in the incident it was merged into)
  incidents are excluded from all three rates, and so are their tasks and their feedback.
- filed: the counted incidents.
- responded: counted incidents whose first task was accepted (`first_accepted_at`, at or before
  `now`) within the incident's `response_limit` of `filed_at`, inclusive.
- resolved: counted incidents closed (`closed_at`, at or before `now`) no later than their
  `due_at`, inclusive. `closed_at` is the time of the incident's current close; the lifecycle only
  closes a verified incident, so a close is a verified resolution. A reopened incident that has
  not been closed again has `closed_at = None`. An incident still open and not yet due counts in
  `filed` but not in `resolved` (the definition is "closed by the deadline / filed").
- rated / satisfied: counted incidents with at least one rating at or before `now` / those whose
  latest such rating (by `at`; on equal `at`, the one later in the input) is satisfied. A resident
  who rated, then said "not fixed", then rated again counts once, with the last word.
- response_rate = responded / filed; resolution_rate = resolved / filed;
  satisfaction_rate = satisfied / rated. None when the denominator is zero.
- tasks_offered / tasks_accepted (every row): tasks of counted incidents offered at or before
  `now` / those accepted (at or before `now`) within the task's own `accept_limit` of
  `offered_at`, inclusive. Each TaskFact carries its accept limit (the plan's accept timeout when
  it was offered) because plans are data and change over time; a re-offer is a new task.

Groupings (`by`):
- "grid" / "community": the incident's `grid_id` / `community_id`; an out-of-area incident
  (None) goes under the key `OUT_OF_AREA`. Feedback is grouped by its incident, not by the
  feedback's own grid and community fields.
- "day": the Beijing (UTC+8) calendar date of `filed_at`, as "YYYY-MM-DD".
- "all": one row, key "all", always present (zeros and None when there is nothing).
- "org": one row per organisation that was offered a task. The task counts are that
  organisation's tasks and its **response_rate is tasks_accepted / tasks_offered**. The incident
  counts (filed, responded, resolved, rated, satisfied) and the other two rates are over the
  counted incidents in which the organisation was offered at least one task; an incident with
  several organisations counts in each, so org rows' incident counts need not sum to "all".

For "grid", "community" and "day" every count sums over the rows to the "all" row; for "org" the
task counts do. Rows come sorted by key.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Final, Literal

GroupBy = Literal["grid", "community", "org", "day", "all"]
GROUPINGS: Final[tuple[GroupBy, ...]] = ("grid", "community", "org", "day", "all")
BEIJING: Final = timezone(timedelta(hours=8), "Asia/Shanghai")
OUT_OF_AREA: Final = "out_of_area"
ALL: Final = "all"


@dataclass(frozen=True, slots=True)
class IncidentFact:
    incident_id: str
    grid_id: str | None  # None: out of area
    community_id: str | None
    filed_at: datetime
    first_accepted_at: datetime | None  # the first acceptance of any of its tasks
    response_limit: timedelta
    closed_at: datetime | None  # the current close (after verification); None if open or reopened
    due_at: datetime
    cancelled: bool
    merged: bool


@dataclass(frozen=True, slots=True)
class TaskFact:
    task_id: str
    incident_id: str
    responder_id: str
    org: str
    offered_at: datetime
    accepted_at: datetime | None
    kind: str  # responder kind: police | grid_worker | volunteer
    accept_limit: timedelta  # the accept timeout in force when the task was offered


@dataclass(frozen=True, slots=True)
class FeedbackFact:
    incident_id: str
    grid_id: str | None
    community_id: str | None
    at: datetime
    satisfied: bool


@dataclass(frozen=True, slots=True)
class RateRow:
    key: str
    filed: int
    responded: int
    resolved: int
    rated: int
    satisfied: int
    response_rate: float | None
    resolution_rate: float | None
    satisfaction_rate: float | None
    tasks_offered: int = 0
    tasks_accepted: int = 0  # within the task's accept limit


def beijing_day(at: datetime) -> str:
    """The Beijing calendar date of an aware datetime, "YYYY-MM-DD"."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {at!r}")
    return at.astimezone(BEIJING).date().isoformat()


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def _responded(i: IncidentFact, now: datetime) -> bool:
    a = i.first_accepted_at
    return a is not None and a <= now and a - i.filed_at <= i.response_limit


def _resolved(i: IncidentFact, now: datetime) -> bool:
    c = i.closed_at
    return c is not None and c <= now and c <= i.due_at


def _accepted_in_time(t: TaskFact, now: datetime) -> bool:
    a = t.accepted_at
    return a is not None and a <= now and a - t.offered_at <= t.accept_limit


@dataclass(slots=True)
class _Tally:
    incidents: set[str] = field(default_factory=set)
    tasks_offered: int = 0
    tasks_accepted: int = 0


def compute_rates(
    incidents: Iterable[IncidentFact],
    tasks: Iterable[TaskFact],
    feedback: Iterable[FeedbackFact],
    *,
    by: GroupBy,
    now: datetime,
) -> list[RateRow]:
    """The 三率 rows for one grouping; see the module docstring for the exact definitions."""
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}; known: {', '.join(GROUPINGS)}")
    counted: dict[str, IncidentFact] = {}
    seen: set[str] = set()
    for inc in incidents:
        if inc.incident_id in seen:
            raise ValueError(f"incident {inc.incident_id} given twice")
        seen.add(inc.incident_id)
        beijing_day(inc.filed_at)  # rejects naive datetimes early
        if inc.filed_at <= now and not inc.cancelled and not inc.merged:
            counted[inc.incident_id] = inc

    latest: dict[str, FeedbackFact] = {}
    for fb in feedback:
        if fb.incident_id in counted and fb.at <= now:
            prev = latest.get(fb.incident_id)
            if prev is None or fb.at >= prev.at:
                latest[fb.incident_id] = fb

    live_tasks = [t for t in tasks if t.incident_id in counted and t.offered_at <= now]

    tallies: dict[str, _Tally] = defaultdict(_Tally)
    if by == "org":
        for t in live_tasks:
            tally = tallies[t.org]
            tally.incidents.add(t.incident_id)
            tally.tasks_offered += 1
            tally.tasks_accepted += _accepted_in_time(t, now)
    else:
        key_of = _key_function(by)
        if by == ALL:
            tallies[ALL] = _Tally()
        for inc in counted.values():
            tallies[key_of(inc)].incidents.add(inc.incident_id)
        for t in live_tasks:
            tally = tallies[key_of(counted[t.incident_id])]
            tally.tasks_offered += 1
            tally.tasks_accepted += _accepted_in_time(t, now)

    return [_row(key, tallies[key], counted, latest, now, org=by == "org") for key in sorted(tallies)]


def _key_function(by: GroupBy) -> Callable[[IncidentFact], str]:
    if by == "grid":
        return lambda i: i.grid_id if i.grid_id is not None else OUT_OF_AREA
    if by == "community":
        return lambda i: i.community_id if i.community_id is not None else OUT_OF_AREA
    if by == "day":
        return lambda i: beijing_day(i.filed_at)
    return lambda i: ALL


def _row(
    key: str,
    tally: _Tally,
    counted: dict[str, IncidentFact],
    latest: dict[str, FeedbackFact],
    now: datetime,
    *,
    org: bool,
) -> RateRow:
    group: Sequence[IncidentFact] = [counted[i] for i in tally.incidents]
    filed = len(group)
    responded = sum(_responded(i, now) for i in group)
    resolved = sum(_resolved(i, now) for i in group)
    ratings = [latest[i.incident_id] for i in group if i.incident_id in latest]
    rated = len(ratings)
    satisfied = sum(fb.satisfied for fb in ratings)
    response_rate = _ratio(tally.tasks_accepted, tally.tasks_offered) if org else _ratio(responded, filed)
    return RateRow(
        key=key,
        filed=filed,
        responded=responded,
        resolved=resolved,
        rated=rated,
        satisfied=satisfied,
        response_rate=response_rate,
        resolution_rate=_ratio(resolved, filed),
        satisfaction_rate=_ratio(satisfied, rated),
        tasks_offered=tally.tasks_offered,
        tasks_accepted=tally.tasks_accepted,
    )
