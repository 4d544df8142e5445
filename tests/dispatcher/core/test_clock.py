"""Graded-response clocks: deadlines, statuses, durable timers, escalations and Chinese durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.categories import APP_RESPONSE_LIMIT, CAMERA_RESPONSE_LIMIT, HOTLINE_TIME_LIMITS
from dispatcher.core.clock import (
    DUTY_COMMANDER,
    STEP_LABELS,
    STEPS,
    TIMER_STATUS,
    Clock,
    ClockStatus,
    Step,
    TimerKind,
    clock_id_for,
    escalation_for,
    format_duration_zh,
    new_clock,
    offer_expiry_timer,
    remaining,
    status,
    statutory_limit,
    timer_id_for,
    timers_for,
)

T0 = datetime(2026, 11, 22, 1, 30, tzinfo=UTC)
BEIJING = timezone(timedelta(hours=8))
MIN = timedelta(minutes=1)
OK, AT_RISK, OVERDUE = ClockStatus.OK, ClockStatus.AT_RISK, ClockStatus.OVERDUE


def clock(
    step: str = Step.DISPATCH,
    limit: timedelta = 10 * MIN,
    ratio: float = 0.8,
    task_id: str | None = None,
    round: int = 0,
    started_at: datetime = T0,
) -> Clock:
    return new_clock("INC-TRK-1", step, started_at, limit, task_id=task_id, round=round, warning_ratio=ratio)


# --- deadlines and status ----------------------------------------------------------------


def test_warn_and_due() -> None:
    c = clock(limit=10 * MIN, ratio=0.8)
    assert c.warn_at == T0 + 8 * MIN
    assert c.due_at == T0 + 10 * MIN


def test_status_boundaries_are_inclusive() -> None:
    c = clock(limit=10 * MIN, ratio=0.8)
    tick = timedelta(microseconds=1)
    assert status(c, T0) is OK
    assert status(c, c.warn_at - tick) is OK
    assert status(c, c.warn_at) is AT_RISK
    assert status(c, c.due_at - tick) is AT_RISK
    assert status(c, c.due_at) is OVERDUE
    assert status(c, c.due_at + timedelta(days=30)) is OVERDUE
    assert status(c, T0 - timedelta(hours=1)) is OK  # before it started: nothing at risk yet


def test_status_compares_instants_not_wall_clocks() -> None:
    c = clock(limit=10 * MIN, ratio=0.8)
    # 09:39 Beijing is 01:39 UTC: at risk (warn 01:38, due 01:40).
    assert status(c, datetime(2026, 11, 22, 9, 39, tzinfo=BEIJING)) is AT_RISK


def test_remaining_positive_then_negative() -> None:
    c = clock(limit=10 * MIN)
    assert remaining(c, T0) == 10 * MIN
    assert remaining(c, T0 + 10 * MIN) == timedelta(0)
    assert remaining(c, T0 + 15 * MIN) == -5 * MIN


def test_ratio_one_means_no_warning_period() -> None:
    c = clock(ratio=1.0)
    assert c.warn_at == c.due_at
    assert status(c, c.due_at - timedelta(microseconds=1)) is OK
    assert [t.kind for t in timers_for(c)] == [TimerKind.OVERDUE]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"step": "lunch"}, "unknown step"),
        ({"limit": timedelta(0)}, "limit must be positive"),
        ({"limit": -MIN}, "limit must be positive"),
        ({"warning_ratio": 0.0}, "warning_ratio"),
        ({"warning_ratio": 1.5}, "warning_ratio"),
        ({"started_at": datetime(2026, 11, 22, 9, 30)}, "timezone-aware"),
    ],
)
def test_clock_validation(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "clock_id": "c",
        "incident_id": "INC-1",
        "step": "dispatch",
        "task_id": None,
        "started_at": T0,
        "limit": MIN,
        "warning_ratio": 0.8,
    }
    fields.update(changes)
    with pytest.raises(ValueError, match=message):
        Clock(**fields)  # type: ignore[arg-type]


def test_plain_string_steps_are_accepted() -> None:
    c = new_clock("INC-1", "arrive", T0, MIN, task_id="T-1")
    assert c.step == Step.ARRIVE and c.clock_id == clock_id_for("INC-1", Step.ARRIVE, "T-1")
    assert set(STEP_LABELS) == set(Step) and STEPS == {s.value for s in Step}


# --- ids ---------------------------------------------------------------------------------


def test_clock_ids_are_deterministic_and_readable() -> None:
    assert clock_id_for("INC-TRK-1", "dispatch") == "clk/INC-TRK-1/dispatch/r0"
    assert clock_id_for("INC-TRK-1", Step.ACCEPT, "T-7", round=2) == "clk/INC-TRK-1/accept/r2/T-7"
    assert clock_id_for("INC-TRK-1", "accept", "T-7") == clock_id_for("INC-TRK-1", "accept", "T-7")


def test_clock_ids_tell_every_part_apart() -> None:
    ids = {
        clock_id_for("INC-1", "accept"),
        clock_id_for("INC-1", "accept", "T-1"),
        clock_id_for("INC-1", "arrive", "T-1"),
        clock_id_for("INC-1", "accept", "T-2"),
        clock_id_for("INC-2", "accept", "T-1"),
        clock_id_for("INC-1", "accept", "T-1", round=1),
        # Separators inside ids cannot forge another clock's id.
        clock_id_for("INC-1/accept/r0", "accept"),
        clock_id_for("INC-1", "accept", "r0/T-1"),
        clock_id_for("INC-1", "accept", "%2F"),
        clock_id_for("INC-1", "accept", "/"),
    }
    assert len(ids) == 10


def test_clock_id_rejects_bad_parts() -> None:
    with pytest.raises(ValueError, match="unknown step"):
        clock_id_for("INC-1", "coffee")
    with pytest.raises(ValueError, match="round"):
        clock_id_for("INC-1", "dispatch", round=-1)


ids = st.text(min_size=1, max_size=12)
steps = st.sampled_from(list(Step))


@given(ids, steps, st.none() | ids, st.integers(0, 50), st.integers(0, 50))
def test_clock_ids_differ_across_rounds(
    incident_id: str, step: Step, task_id: str | None, r1: int, r2: int
) -> None:
    a = clock_id_for(incident_id, step, task_id, r1)
    b = clock_id_for(incident_id, step, task_id, r2)
    assert (a == b) == (r1 == r2)
    assert a == clock_id_for(incident_id, step, task_id, r1)


@given(
    st.tuples(ids, steps, st.none() | ids, st.integers(0, 3)),
    st.tuples(ids, steps, st.none() | ids, st.integers(0, 3)),
)
def test_clock_ids_are_injective(
    a: tuple[str, Step, str | None, int], b: tuple[str, Step, str | None, int]
) -> None:
    assert (clock_id_for(*a) == clock_id_for(*b)) == (a == b)


# --- timers ------------------------------------------------------------------------------


def test_timers_for_a_clock() -> None:
    c = clock(step=Step.ARRIVE, limit=30 * MIN, ratio=0.5, task_id="T-3")
    warning, overdue = timers_for(c)
    assert (warning.kind, warning.fire_at) == (TimerKind.WARNING, T0 + 15 * MIN)
    assert (overdue.kind, overdue.fire_at) == (TimerKind.OVERDUE, T0 + 30 * MIN)
    for t in (warning, overdue):
        assert t.clock_id == c.clock_id and t.incident_id == c.incident_id and t.task_id == "T-3"
    assert warning.timer_id == c.clock_id + "/warning" == timer_id_for(c.clock_id, TimerKind.WARNING)
    assert overdue.timer_id == c.clock_id + "/overdue"
    # The status when each fires is what its kind says.
    assert status(c, warning.fire_at) is TIMER_STATUS[warning.kind]
    assert status(c, overdue.fire_at) is TIMER_STATUS[overdue.kind]


def test_rescheduling_the_same_clock_is_idempotent() -> None:
    first = timers_for(clock(task_id="T-1"))
    again = timers_for(clock(task_id="T-1"))
    assert first == again
    assert {t.timer_id for t in first} == {t.timer_id for t in again}


def test_reopened_round_gets_new_timers() -> None:
    r0 = {t.timer_id for t in timers_for(clock(round=0))}
    r1 = {t.timer_id for t in timers_for(clock(round=1))}
    assert not r0 & r1


def test_offer_expiry_timer() -> None:
    t = offer_expiry_timer("INC-TRK-1", "T-9", T0, timedelta(seconds=90))
    assert t.kind is TimerKind.OFFER_EXPIRY
    assert t.fire_at == T0 + timedelta(seconds=90)
    assert t.task_id == "T-9" and t.incident_id == "INC-TRK-1"
    # It hangs off the task's accept clock but never collides with that clock's timers.
    accept = new_clock("INC-TRK-1", Step.ACCEPT, T0, timedelta(seconds=90), task_id="T-9")
    assert t.clock_id == accept.clock_id
    assert t.timer_id not in {x.timer_id for x in timers_for(accept)}
    assert t == offer_expiry_timer("INC-TRK-1", "T-9", T0, timedelta(seconds=90))
    assert t.timer_id != offer_expiry_timer("INC-TRK-1", "T-9", T0, MIN, round=1).timer_id
    assert t.timer_id != offer_expiry_timer("INC-TRK-1", "T-10", T0, MIN).timer_id
    with pytest.raises(ValueError, match="positive"):
        offer_expiry_timer("INC-TRK-1", "T-9", T0, timedelta(0))


# --- statutory limits --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "time_limit", "expected"),
    [
        ("hotline", "2h", timedelta(hours=2)),
        ("hotline", "24h", timedelta(hours=24)),
        ("hotline", "7d", timedelta(days=7)),
        ("hotline", "15d", timedelta(days=15)),
        ("camera", None, CAMERA_RESPONSE_LIMIT),
        ("app", None, APP_RESPONSE_LIMIT),
        ("app", "2h", APP_RESPONSE_LIMIT),  # an app report has no time-limit class
    ],
)
def test_statutory_limit(source: str, time_limit: str | None, expected: timedelta) -> None:
    assert statutory_limit(source, time_limit) == expected


def test_statutory_limit_table_and_errors() -> None:
    assert {k: statutory_limit("hotline", k) for k in HOTLINE_TIME_LIMITS} == HOTLINE_TIME_LIMITS
    assert CAMERA_RESPONSE_LIMIT < timedelta(hours=1)  # camera alarms are answered in minutes
    with pytest.raises(ValueError, match="time limit"):
        statutory_limit("hotline", None)
    with pytest.raises(ValueError, match="time limit"):
        statutory_limit("hotline", "3d")
    with pytest.raises(ValueError, match="unknown source"):
        statutory_limit("fax")


# --- Chinese durations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("td", "text"),
    [
        (timedelta(0), "0秒"),
        (timedelta(milliseconds=400), "0秒"),
        (timedelta(seconds=45), "45秒"),
        (timedelta(minutes=2), "2分钟"),
        (timedelta(minutes=5, seconds=30), "5分钟30秒"),
        (timedelta(hours=2, minutes=5), "2小时5分钟"),
        (timedelta(hours=2, minutes=5, seconds=59), "2小时5分钟"),  # two units, truncated
        (timedelta(hours=2, seconds=30), "2小时"),
        (timedelta(days=3), "3天"),
        (timedelta(days=1, hours=2, minutes=30), "1天2小时"),
        (timedelta(days=15), "15天"),
        (timedelta(minutes=-5), "5分钟"),  # the sign is the caller's to word
    ],
)
def test_format_duration_zh(td: timedelta, text: str) -> None:
    assert format_duration_zh(td) == text


# --- escalation --------------------------------------------------------------------------


def test_no_escalation_when_ok() -> None:
    assert escalation_for(clock(), OK) is None
    assert escalation_for(clock(), OK, T0) is None


def test_at_risk_escalation_at_warning_time() -> None:
    c = clock(step=Step.DISPATCH, limit=10 * MIN, ratio=0.8)
    e = escalation_for(c, AT_RISK)
    assert e is not None
    assert e.message == "派遣环节即将超时（剩余2分钟）"
    assert (e.incident_id, e.clock_id, e.step, e.level) == (c.incident_id, c.clock_id, "dispatch", AT_RISK)
    assert e.to == DUTY_COMMANDER and e.due_at == c.due_at and e.task_id is None


def test_overdue_escalation_with_now() -> None:
    c = clock(step=Step.ARRIVE, limit=20 * MIN, task_id="T-4")
    e = escalation_for(c, OVERDUE, T0 + 25 * MIN)
    assert e is not None and e.message == "到场环节已超时5分钟"
    assert e.task_id == "T-4" and e.level is OVERDUE
    fired = escalation_for(c, OVERDUE)  # at the overdue timer's own time: no amount yet
    assert fired is not None and fired.message == "到场环节已超时"


def test_at_risk_escalation_with_now() -> None:
    c = clock(step=Step.VERIFY, limit=timedelta(hours=4), ratio=0.5)
    e = escalation_for(c, AT_RISK, T0 + timedelta(hours=2, minutes=10))
    assert e is not None and e.message == "核查环节即将超时（剩余1小时50分钟）"


def test_statutory_escalations() -> None:
    c = clock(step=Step.STATUTORY, limit=statutory_limit("hotline", "24h"), ratio=0.75)
    soon = escalation_for(c, AT_RISK)
    late = escalation_for(c, OVERDUE, c.due_at + timedelta(days=1, hours=3))
    assert soon is not None and soon.message == "办结时限即将届满（剩余6小时）"
    assert late is not None and late.message == "已超过办结时限1天3小时"


def test_escalation_ids_are_one_per_clock_and_level() -> None:
    c = clock()
    a1, a2, o = (
        escalation_for(c, AT_RISK),
        escalation_for(c, AT_RISK, T0 + 9 * MIN),
        escalation_for(c, OVERDUE),
    )
    assert a1 is not None and a2 is not None and o is not None
    assert a1.escalation_id == a2.escalation_id != o.escalation_id


@pytest.mark.parametrize("step", list(Step))
def test_every_step_has_chinese_messages(step: Step) -> None:
    c = clock(step=step)
    for level in (AT_RISK, OVERDUE):
        e = escalation_for(c, level, c.due_at + MIN)
        assert e is not None and STEP_LABELS[step] in e.message


# --- properties --------------------------------------------------------------------------

limits = st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=30))
ratios = st.floats(min_value=0.01, max_value=0.99, allow_nan=False) | st.just(1.0)
starts = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC))
offsets = st.timedeltas(min_value=timedelta(days=-5), max_value=timedelta(days=40))


@given(steps, limits, ratios, starts)
def test_warn_at_never_after_due_at(step: Step, limit: timedelta, ratio: float, start: datetime) -> None:
    c = clock(step=step, limit=limit, ratio=ratio, started_at=start)
    assert c.started_at < c.warn_at <= c.due_at
    assert (c.warn_at == c.due_at) == (ratio == 1.0)


ORDER = {OK: 0, AT_RISK: 1, OVERDUE: 2}


@given(limits, ratios, starts, st.lists(offsets, min_size=2, max_size=20))
def test_status_is_monotone_in_time(
    limit: timedelta, ratio: float, start: datetime, moments: list[timedelta]
) -> None:
    c = clock(limit=limit, ratio=ratio, started_at=start)
    seen = [status(c, start + d) for d in sorted(moments)]
    assert [ORDER[s] for s in seen] == sorted(ORDER[s] for s in seen)  # ok -> at_risk -> overdue
    for d in moments:
        s = status(c, start + d)
        assert (s is OVERDUE) == (remaining(c, start + d) <= timedelta(0))
        e = escalation_for(c, s, start + d)
        assert (e is None) == (s is OK)


@given(steps, st.none() | ids, st.integers(0, 5), limits, ratios, starts)
def test_timer_ids_stable_and_distinct(
    step: Step, task_id: str | None, round: int, limit: timedelta, ratio: float, start: datetime
) -> None:
    c = clock(step=step, task_id=task_id, round=round, limit=limit, ratio=ratio, started_at=start)
    timers = timers_for(c)
    assert timers == timers_for(
        clock(step=step, task_id=task_id, round=round, limit=limit, ratio=ratio, started_at=start)
    )
    # The id depends on the clock and the kind only, not on when it fires.
    moved = clock(step=step, task_id=task_id, round=round, limit=limit * 2, ratio=ratio, started_at=start)
    assert [t.timer_id for t in timers] == [t.timer_id for t in timers_for(moved)]
    assert len({t.timer_id for t in timers}) == len(timers)
    assert all(t.fire_at <= c.due_at for t in timers) and timers[-1].fire_at == c.due_at
