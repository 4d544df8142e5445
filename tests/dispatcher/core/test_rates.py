"""三率: a hand-counted scenario for every grouping, the exclusions, empty denominators, properties."""

from __future__ import annotations

from dataclasses import astuple, replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.core.rates import (
    ALL,
    GROUPINGS,
    OUT_OF_AREA,
    FeedbackFact,
    GroupBy,
    IncidentFact,
    RateRow,
    TaskFact,
    beijing_day,
    compute_rates,
)

BJ = timezone(timedelta(hours=8))
MIN = timedelta(minutes=1)


def bj(day: int, hour: int, minute: int = 0) -> datetime:
    """A Beijing wall-clock time in November 2026."""
    return datetime(2026, 11, day, hour, minute, tzinfo=BJ)


NOW = bj(23, 12)  # 2026-11-23 12:00 Beijing


def inc(
    incident_id: str,
    grid: str | None,
    community: str | None,
    filed: datetime,
    accepted: datetime | None = None,
    closed: datetime | None = None,
    *,
    due: datetime | None = None,
    limit: timedelta = 15 * MIN,
    cancelled: bool = False,
    merged: bool = False,
) -> IncidentFact:
    return IncidentFact(
        incident_id,
        grid,
        community,
        filed,
        accepted,
        limit,
        closed,
        due if due is not None else filed + timedelta(hours=24),
        cancelled,
        merged,
    )


def task(
    task_id: str,
    incident_id: str,
    org: str,
    offered: datetime,
    accepted: datetime | None = None,
    *,
    responder: str = "R-1",
    kind: str = "police",
    accept_limit: timedelta = 5 * MIN,
) -> TaskFact:
    return TaskFact(task_id, incident_id, responder, org, offered, accepted, kind, accept_limit)


def fb(incident: IncidentFact, at: datetime, satisfied: bool) -> FeedbackFact:
    return FeedbackFact(incident.incident_id, incident.grid_id, incident.community_id, at, satisfied)


# --- the scenario ------------------------------------------------------------------------
# Grids G1, G2 in community C1; G3 in community C2; one out-of-area report. Response limit 15 min.
I1 = inc("I1", "G1", "C1", bj(22, 9), bj(22, 9, 10), bj(22, 15))  # responded, resolved
I2 = inc("I2", "G1", "C1", bj(22, 10), bj(22, 10, 20), bj(23, 11))  # accepted late; closed after due
I3 = inc("I3", "G2", "C1", bj(22, 23, 30), bj(22, 23, 45))  # accepted at exactly 15 min; still open
I4 = inc("I4", "G3", "C2", bj(23, 0, 30), bj(23, 0, 40), bj(23, 8), due=bj(23, 2, 30))  # 2h ticket, late
I5 = inc("I5", "G3", "C2", bj(23, 9))  # nobody accepted yet
I6 = inc("I6", None, None, bj(23, 10), bj(23, 10, 5), bj(23, 11))  # out of area; responded, resolved
I7 = inc("I7", "G2", "C1", bj(23, 11, 50), bj(23, 12, 2))  # accepted after `now`: not yet
X1 = inc("X1", "G1", "C1", bj(22, 11), bj(22, 11, 1), bj(22, 12), cancelled=True)  # false alarm
X2 = inc("X2", "G2", "C1", bj(22, 12), merged=True)  # merged into another
F1 = inc("F1", "G1", "C1", bj(23, 13), bj(23, 13, 1))  # filed after `now`
INCIDENTS = [I1, I2, I3, I4, I5, I6, I7, X1, X2, F1]

PS, VOL, COM1, COM2 = "police-station", "volunteers", "community-C1", "community-C2"
TASKS = [
    task("T1", "I1", PS, bj(22, 9, 5), bj(22, 9, 10)),  # exactly 5 min: in time
    task("T2", "I1", VOL, bj(22, 9, 5), None, kind="volunteer"),  # expired
    task("T3", "I1", VOL, bj(22, 9, 7), bj(22, 9, 11), kind="volunteer"),  # the re-offer, in time
    task("T4", "I2", COM1, bj(22, 10, 15), bj(22, 10, 20), kind="grid_worker"),  # in time
    task("T5", "I3", PS, bj(22, 23, 40), bj(22, 23, 45)),  # in time
    task("T6", "I4", COM2, bj(23, 0, 31), bj(23, 0, 40), kind="grid_worker"),  # 9 min: late
    task("T7", "I5", VOL, bj(23, 9, 5), None, kind="volunteer"),  # declined
    task("T8", "I6", PS, bj(23, 10, 2), bj(23, 10, 5)),  # in time
    task("T9", "I7", COM1, bj(23, 11, 58), bj(23, 12, 2), kind="grid_worker"),  # accepted after `now`
    task("T10", "X1", PS, bj(22, 11), bj(22, 11, 1)),  # cancelled incident
    task("T11", "I5", PS, bj(23, 12, 30)),  # offered after `now`
    task("T12", "GHOST", PS, bj(23, 9), bj(23, 9, 1)),  # incident unknown
]
FEEDBACK = [
    fb(I2, bj(23, 11, 40), False),  # the resident's last word on I2 ...
    fb(I1, bj(22, 16), True),
    fb(I2, bj(23, 11, 10), True),  # ... given in the input after an earlier rating
    fb(I4, bj(23, 9), True),
    fb(I6, bj(23, 11, 30), False),
    fb(I7, bj(23, 12, 30), True),  # after `now`
    fb(X1, bj(22, 13), True),  # cancelled incident
    FeedbackFact("GHOST", "G1", "C1", bj(23, 9), True),  # unknown incident
]


def row(
    key: str, filed: int, responded: int, resolved: int, rated: int, satisfied: int, **tasks: int
) -> RateRow:
    return RateRow(
        key,
        filed,
        responded,
        resolved,
        rated,
        satisfied,
        responded / filed if filed else None,
        resolved / filed if filed else None,
        satisfied / rated if rated else None,
        tasks.get("offered", 0),
        tasks.get("accepted", 0),
    )


def rates(by: GroupBy, now: datetime = NOW) -> list[RateRow]:
    return compute_rates(INCIDENTS, TASKS, FEEDBACK, by=by, now=now)


def test_all_by_hand() -> None:
    # Counted: I1..I7. Responded: I1, I3, I4, I6. Resolved: I1, I6.
    # Rated: I1 (yes), I2 (last word no), I4 (yes), I6 (no). Tasks: T1..T9; in time T1, T3, T4, T5, T8.
    [r] = rates("all")
    assert r == row(ALL, 7, 4, 2, 4, 2, offered=9, accepted=5)
    assert (r.response_rate, r.resolution_rate, r.satisfaction_rate) == (4 / 7, 2 / 7, 0.5)


def test_by_grid_by_hand() -> None:
    assert rates("grid") == [
        row("G1", 2, 1, 1, 2, 1, offered=4, accepted=3),  # I1, I2; T1-T4
        row("G2", 2, 1, 0, 0, 0, offered=2, accepted=1),  # I3, I7; T5, T9
        row("G3", 2, 1, 0, 1, 1, offered=2, accepted=0),  # I4, I5; T6, T7
        row(OUT_OF_AREA, 1, 1, 1, 1, 0, offered=1, accepted=1),  # I6; T8
    ]
    g2 = rates("grid")[1]
    assert g2.satisfaction_rate is None and g2.resolution_rate == 0.0 and g2.response_rate == 0.5


def test_by_community_by_hand() -> None:
    assert rates("community") == [
        row("C1", 4, 2, 1, 2, 1, offered=6, accepted=4),  # I1, I2, I3, I7
        row("C2", 2, 1, 0, 1, 1, offered=2, accepted=0),  # I4, I5
        row(OUT_OF_AREA, 1, 1, 1, 1, 0, offered=1, accepted=1),  # I6
    ]


def test_by_beijing_day_by_hand() -> None:
    # I4 was filed at 16:30 UTC on the 22nd, which is 00:30 on the 23rd in Beijing.
    assert I4.filed_at.astimezone(UTC).day == 22
    assert rates("day") == [
        row("2026-11-22", 3, 2, 1, 2, 1, offered=5, accepted=4),  # I1, I2, I3; T1-T5
        row("2026-11-23", 4, 2, 1, 2, 1, offered=4, accepted=1),  # I4, I5, I6, I7; T6-T9
    ]


def test_by_org_by_hand() -> None:
    [com1, com2, ps, vol] = rates("org")
    # Org rows: the response rate is tasks accepted in time / tasks offered; the incident counts are
    # over the incidents the organisation was offered a task in.
    assert (com1.key, com1.tasks_offered, com1.tasks_accepted, com1.response_rate) == (COM1, 2, 1, 0.5)
    assert (com2.key, com2.tasks_offered, com2.tasks_accepted, com2.response_rate) == (COM2, 1, 0, 0.0)
    assert (ps.key, ps.tasks_offered, ps.tasks_accepted, ps.response_rate) == (PS, 3, 3, 1.0)
    assert (vol.key, vol.tasks_offered, vol.tasks_accepted, vol.response_rate) == (VOL, 3, 1, 1 / 3)
    # (filed, responded, resolved, rated, satisfied) over I2, I7 / I4 / I1, I3, I6 / I1, I5.
    assert astuple(com1)[1:6] == (2, 0, 0, 1, 0)
    assert astuple(com2)[1:6] == (1, 1, 0, 1, 1)
    assert astuple(ps)[1:6] == (3, 3, 2, 2, 1)
    assert astuple(vol)[1:6] == (2, 1, 1, 1, 1)
    assert (ps.resolution_rate, ps.satisfaction_rate) == (2 / 3, 0.5)
    assert (com1.resolution_rate, com1.satisfaction_rate) == (0.0, 0.0)


def test_as_of_a_later_moment() -> None:
    later = bj(23, 13, 30)
    # Now F1 (filed 13:00, accepted 13:01) exists and I7's acceptance and rating have happened;
    # T9 (accepted 4 min after offer) is in time and T11 has been offered (not accepted).
    [r] = rates("all", later)
    assert r == row(ALL, 8, 6, 2, 5, 3, offered=10, accepted=6)


def test_as_of_an_earlier_moment() -> None:
    [r] = rates("all", bj(22, 12))
    # Only I1 and I2 are filed (X1 is cancelled, X2 merged); I1 responded but closes at 15:00 and is
    # rated at 16:00; T1-T4 offered, T1, T3, T4 in time.
    assert r == row(ALL, 2, 1, 0, 0, 0, offered=4, accepted=3)
    assert r.satisfaction_rate is None


# --- exclusions and edge cases --------------------------------------------------------------


def test_cancelled_and_merged_are_excluded_from_everything() -> None:
    kept = [t for t in TASKS if t.incident_id in ("I1", "I2")]
    x1_task = next(t for t in TASKS if t.incident_id == "X1")
    x2_task = replace(x1_task, task_id="TX2", incident_id="X2", org="another-org")
    x_feedback = [fb(X1, bj(22, 13), True), fb(X2, bj(22, 13), False)]
    for by in GROUPINGS:
        with_excluded = compute_rates(
            [I1, I2, X1, X2], [*kept, x1_task, x2_task], FEEDBACK + x_feedback, by=by, now=NOW
        )
        assert with_excluded == compute_rates([I1, I2], kept, FEEDBACK, by=by, now=NOW)
    # A merged or cancelled incident that would have counted perfectly leaves no row behind.
    perfect = inc("P", "G9", "C9", bj(22, 9), bj(22, 9, 1), bj(22, 10))
    perfect_task = task("TP", "P", "org-9", bj(22, 9), bj(22, 9, 1))
    for gone in (replace(perfect, cancelled=True), replace(perfect, merged=True)):
        for by in ("grid", "community", "org", "day"):
            assert (
                compute_rates([gone], [perfect_task], [fb(perfect, bj(22, 11), True)], by=by, now=NOW) == []
            )


def test_empty_denominators_are_none() -> None:
    [r] = compute_rates([], [], [], by="all", now=NOW)
    assert r == RateRow(ALL, 0, 0, 0, 0, 0, None, None, None, 0, 0)
    for by in ("grid", "community", "org", "day"):
        assert compute_rates([], [], [], by=by, now=NOW) == []
    # An organisation whose tasks were never offered yet does not appear at all.
    assert compute_rates([I1], [task("T", "I1", PS, bj(23, 13))], [], by="org", now=NOW) == []


def test_inclusive_limits() -> None:
    exact = inc("E", "G1", "C1", bj(22, 9), bj(22, 9, 15), bj(23, 9), due=bj(23, 9))
    second = timedelta(seconds=1)
    late = inc("L", "G1", "C1", bj(22, 9), bj(22, 9, 15) + second, bj(23, 9) + second, due=bj(23, 9))
    [r] = compute_rates([exact, late], [], [], by="all", now=NOW)
    assert (r.responded, r.resolved) == (1, 1)


def test_latest_feedback_ties_go_to_the_later_in_input() -> None:
    same = bj(22, 16)
    [r] = compute_rates([I1], [], [fb(I1, same, True), fb(I1, same, False)], by="all", now=NOW)
    assert (r.rated, r.satisfied) == (1, 0)
    [r] = compute_rates([I1], [], [fb(I1, same, False), fb(I1, same, True)], by="all", now=NOW)
    assert (r.rated, r.satisfied) == (1, 1)


def test_feedback_groups_with_its_incident() -> None:
    stray = FeedbackFact("I1", "G-OTHER", "C-OTHER", bj(22, 16), True)  # the grid moved since
    assert [r.key for r in compute_rates([I1], [], [stray], by="grid", now=NOW)] == ["G1"]


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="twice"):
        compute_rates([I1, I1], [], [], by="all", now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_rates([replace(I1, filed_at=datetime(2026, 11, 22, 9))], [], [], by="all", now=NOW)
    with pytest.raises(ValueError, match="grouping"):
        compute_rates([I1], [], [], by="street", now=NOW)  # type: ignore[arg-type]


def test_beijing_day() -> None:
    assert beijing_day(datetime(2026, 11, 22, 15, 59, 59, tzinfo=UTC)) == "2026-11-22"
    assert beijing_day(datetime(2026, 11, 22, 16, 0, tzinfo=UTC)) == "2026-11-23"
    assert beijing_day(bj(1, 0)) == "2026-11-01"


# --- properties --------------------------------------------------------------------------

T0 = bj(20, 0)
ids = [f"I{n}" for n in range(12)]
offsets = st.integers(0, 4 * 24 * 60).map(lambda m: T0 + timedelta(minutes=m))
delays = st.none() | st.integers(0, 60 * 30).map(lambda m: timedelta(minutes=m))


@st.composite
def facts(draw: st.DrawFn) -> tuple[list[IncidentFact], list[TaskFact], list[FeedbackFact]]:
    incidents = []
    for incident_id in draw(st.lists(st.sampled_from(ids), unique=True, max_size=10)):
        filed = draw(offsets)
        accepted, closed = draw(delays), draw(delays)
        incidents.append(
            IncidentFact(
                incident_id,
                draw(st.sampled_from(["G1", "G2", "G3", None])),
                draw(st.sampled_from(["C1", "C2", None])),
                filed,
                None if accepted is None else filed + accepted,
                timedelta(minutes=draw(st.integers(1, 120))),
                None if closed is None else filed + closed,
                filed + timedelta(hours=draw(st.sampled_from([2, 24, 168]))),
                draw(st.booleans()),
                draw(st.booleans()),
            )
        )
    tasks = [
        TaskFact(
            f"T{n}",
            draw(st.sampled_from(ids)),
            "R",
            draw(st.sampled_from(["PS", "VOL", "COM"])),
            offered,
            None if (delay := draw(delays)) is None else offered + delay,
            "police",
            timedelta(minutes=draw(st.integers(1, 30))),
        )
        for n, offered in enumerate(draw(st.lists(offsets, max_size=15)))
    ]
    feedback = [
        FeedbackFact(draw(st.sampled_from(ids)), None, None, at, draw(st.booleans()))
        for at in draw(st.lists(offsets, max_size=10))
    ]
    return incidents, tasks, feedback


COUNTS = ("filed", "responded", "resolved", "rated", "satisfied", "tasks_offered", "tasks_accepted")


@given(facts(), offsets)
def test_rates_bounded_and_groups_sum_to_all(
    data: tuple[list[IncidentFact], list[TaskFact], list[FeedbackFact]], now: datetime
) -> None:
    incidents, tasks, feedback = data
    [total] = compute_rates(incidents, tasks, feedback, by="all", now=now)
    for by in GROUPINGS:
        rows = compute_rates(incidents, tasks, feedback, by=by, now=now)
        assert [r.key for r in rows] == sorted({r.key for r in rows})
        for r in rows:
            for rate in (r.response_rate, r.resolution_rate, r.satisfaction_rate):
                assert rate is None or 0.0 <= rate <= 1.0
            assert r.responded <= r.filed and r.resolved <= r.filed and r.satisfied <= r.rated <= r.filed
            assert r.tasks_accepted <= r.tasks_offered
            assert (r.resolution_rate is None) == (r.filed == 0)
            assert (r.satisfaction_rate is None) == (r.rated == 0)
        summed = {c: sum(getattr(r, c) for r in rows) for c in COUNTS}
        if by == "org":
            assert summed["tasks_offered"] == total.tasks_offered
            assert summed["tasks_accepted"] == total.tasks_accepted
            assert all(r.filed <= total.filed for r in rows)
        else:
            assert summed == {c: getattr(total, c) for c in COUNTS}
    assert total.filed == sum(1 for i in incidents if i.filed_at <= now and not i.cancelled and not i.merged)
