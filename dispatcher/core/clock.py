"""Graded-response clocks (分级响应): a deadline for every step of the closed loop. Pure, no I/O.

A `Clock` is one deadline for one step of one incident (or of one task of it): it starts at a
moment, runs for a limit, and is *at risk* once `warning_ratio` of the limit has elapsed and
*overdue* at the limit. Status only moves forward in time: ok → at_risk → overdue.

Clocks are made durable by the service layer as `Timer`s: `timers_for(clock)` gives the warning
and overdue timers a clock needs. Every id here is deterministic (a clock's id from its incident,
step, task and round; a timer's id from its clock and kind), so storing the same timers twice, or
again after a restart, is idempotent: a store keyed on `timer_id` neither loses nor double-fires a
deadline. A reopened incident starts a new *round*, so its clocks and timers get fresh ids and do
not collide with the fired timers of the previous round.

When a timer fires, `escalation_for` words the escalation to the duty commander (指挥长).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from contracts.categories import APP_RESPONSE_LIMIT, CAMERA_RESPONSE_LIMIT, HOTLINE_TIME_LIMITS


class Step(StrEnum):
    DISPATCH = "dispatch"  # filed → dispatched (operator)
    ACCEPT = "accept"  # task offered → accepted (responder)
    ARRIVE = "arrive"  # task accepted → on scene (responder)
    RESOLVE = "resolve"  # on scene → resolved
    VERIFY = "verify"  # resolved → verified (网格核查)
    STATUTORY = "statutory"  # the source's time limit for the whole incident (12345 办结时限)


STEP_LABELS: Final = {
    Step.DISPATCH: "派遣",
    Step.ACCEPT: "接单",
    Step.ARRIVE: "到场",
    Step.RESOLVE: "处置",
    Step.VERIFY: "核查",
    Step.STATUTORY: "办结",
}
STEPS: Final = frozenset(s.value for s in Step)
# The steps a response plan (预案) limits; the statutory clock comes from the source instead.
PLANNED_STEPS: Final = (Step.DISPATCH, Step.ACCEPT, Step.ARRIVE, Step.RESOLVE, Step.VERIFY)


class ClockStatus(StrEnum):
    OK = "ok"
    AT_RISK = "at_risk"
    OVERDUE = "overdue"


class TimerKind(StrEnum):
    WARNING = "warning"
    OVERDUE = "overdue"
    OFFER_EXPIRY = "offer_expiry"


# The status a clock is in when each of its timers fires.
TIMER_STATUS: Final = {TimerKind.WARNING: ClockStatus.AT_RISK, TimerKind.OVERDUE: ClockStatus.OVERDUE}
DEFAULT_WARNING_RATIO: Final = 0.8
DUTY_COMMANDER: Final = "duty_commander"  # 指挥长: the addressee of every escalation
_SEP: Final = "/"


def _check_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


@dataclass(frozen=True, slots=True)
class Clock:
    clock_id: str
    incident_id: str
    step: str  # a Step value
    task_id: str | None
    started_at: datetime
    limit: timedelta
    warning_ratio: float  # share of the limit after which the step is at risk, in (0, 1]

    def __post_init__(self) -> None:
        if self.step not in STEPS:
            raise ValueError(f"unknown step {self.step!r}; known: {', '.join(Step)}")
        if self.limit <= timedelta(0):
            raise ValueError(f"clock limit must be positive, got {self.limit}")
        if not 0.0 < self.warning_ratio <= 1.0:
            raise ValueError(f"warning_ratio must be in (0, 1], got {self.warning_ratio}")
        _check_aware("started_at", self.started_at)

    @property
    def warn_at(self) -> datetime:
        # timedelta * float rounds to the microsecond, never past the limit itself for a ratio ≤ 1.
        return self.started_at + self.limit * self.warning_ratio

    @property
    def due_at(self) -> datetime:
        return self.started_at + self.limit


@dataclass(frozen=True, slots=True)
class Timer:
    """A durable wake-up: store it keyed on `timer_id`, fire it once at `fire_at`."""

    timer_id: str
    clock_id: str
    incident_id: str
    fire_at: datetime
    kind: TimerKind
    task_id: str | None = None


@dataclass(frozen=True, slots=True)
class Escalation:
    """A step at risk or overdue, reported to the duty commander (指挥长)."""

    incident_id: str
    clock_id: str
    step: str
    level: ClockStatus  # AT_RISK or OVERDUE, never OK
    message: str  # Chinese, for the commander's console
    task_id: str | None = None
    due_at: datetime | None = None
    to: str = DUTY_COMMANDER

    @property
    def escalation_id(self) -> str:
        """Idempotency key: one escalation per clock and level."""
        return f"{self.clock_id}{_SEP}{self.level.value}"


def _part(value: str) -> str:
    # Escape the separator so that distinct (incident, step, task, round) never share an id.
    return value.replace("%", "%25").replace(_SEP, "%2F")


def clock_id_for(incident_id: str, step: str, task_id: str | None = None, round: int = 0) -> str:
    """Deterministic clock id, e.g. `clk/INC-TRK-1/accept/r0/T-7`.

    `round` counts reopenings: a reopened incident's clocks are new clocks with new ids.
    """
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; known: {', '.join(Step)}")
    if round < 0:
        raise ValueError(f"round must be >= 0, got {round}")
    parts = ["clk", _part(incident_id), str(step), f"r{round}"]
    if task_id is not None:
        parts.append(_part(task_id))
    return _SEP.join(parts)


def timer_id_for(clock_id: str, kind: TimerKind) -> str:
    """Deterministic timer id: the clock's id and the kind (kinds never contain the separator)."""
    return f"{clock_id}{_SEP}{kind.value}"


def new_clock(
    incident_id: str,
    step: str,
    started_at: datetime,
    limit: timedelta,
    *,
    task_id: str | None = None,
    round: int = 0,
    warning_ratio: float = DEFAULT_WARNING_RATIO,
) -> Clock:
    """A clock with its deterministic id."""
    return Clock(
        clock_id=clock_id_for(incident_id, step, task_id, round),
        incident_id=incident_id,
        step=str(step),
        task_id=task_id,
        started_at=started_at,
        limit=limit,
        warning_ratio=warning_ratio,
    )


def status(clock: Clock, now: datetime) -> ClockStatus:
    """ok before `warn_at`, at_risk from `warn_at`, overdue from `due_at` (both bounds inclusive)."""
    if now >= clock.due_at:
        return ClockStatus.OVERDUE
    if now >= clock.warn_at:
        return ClockStatus.AT_RISK
    return ClockStatus.OK


def remaining(clock: Clock, now: datetime) -> timedelta:
    """Time left until `due_at`; negative once overdue."""
    return clock.due_at - now


def timers_for(clock: Clock) -> tuple[Timer, ...]:
    """The durable timers a clock needs: a warning at `warn_at` and an overdue at `due_at`.

    With `warning_ratio == 1` the two coincide and only the overdue timer is needed.
    """
    timers = []
    if clock.warn_at < clock.due_at:
        timers.append(_timer(clock, TimerKind.WARNING, clock.warn_at))
    timers.append(_timer(clock, TimerKind.OVERDUE, clock.due_at))
    return tuple(timers)


def _timer(clock: Clock, kind: TimerKind, fire_at: datetime) -> Timer:
    return Timer(
        timer_id=timer_id_for(clock.clock_id, kind),
        clock_id=clock.clock_id,
        incident_id=clock.incident_id,
        fire_at=fire_at,
        kind=kind,
        task_id=clock.task_id,
    )


def offer_expiry_timer(
    incident_id: str, task_id: str, offered_at: datetime, timeout: timedelta, *, round: int = 0
) -> Timer:
    """The timer that expires an offered task not accepted within `timeout` (re-offer to the next best).

    It belongs to the task's accept clock (same clock id), with its own kind, so its id never
    collides with that clock's warning and overdue timers. Pass the incident's `round` if task ids
    may repeat after a reopening.
    """
    if timeout <= timedelta(0):
        raise ValueError(f"offer timeout must be positive, got {timeout}")
    _check_aware("offered_at", offered_at)
    clock_id = clock_id_for(incident_id, Step.ACCEPT, task_id, round)
    return Timer(
        timer_id=timer_id_for(clock_id, TimerKind.OFFER_EXPIRY),
        clock_id=clock_id,
        incident_id=incident_id,
        fire_at=offered_at + timeout,
        kind=TimerKind.OFFER_EXPIRY,
        task_id=task_id,
    )


def statutory_limit(source: str, time_limit: str | None = None) -> timedelta:
    """The source's limit for the whole incident: the 12345 class (2h/24h/7d/15d) for hotline
    tickets, minutes for camera alarms, the general limit for app reports (`time_limit` ignored)."""
    if source == "hotline":
        if time_limit not in HOTLINE_TIME_LIMITS:
            known = ", ".join(HOTLINE_TIME_LIMITS)
            raise ValueError(f"hotline ticket needs a time limit class ({known}), got {time_limit!r}")
        return HOTLINE_TIME_LIMITS[time_limit]
    if source == "camera":
        return CAMERA_RESPONSE_LIMIT
    if source == "app":
        return APP_RESPONSE_LIMIT
    raise ValueError(f"unknown source {source!r}; known: camera, hotline, app")


_UNITS: Final = ((86400, "天"), (3600, "小时"), (60, "分钟"), (1, "秒"))


def format_duration_zh(td: timedelta) -> str:
    """A duration in Chinese, to the two largest units, truncated to whole seconds.

    "3天", "2小时5分钟", "45秒", "1天2小时"; zero (or under a second) is "0秒". The sign is
    dropped: callers say 剩余 or 已超时.
    """
    seconds = int(abs(td).total_seconds())
    for i, (size, unit) in enumerate(_UNITS):
        if seconds >= size:
            text = f"{seconds // size}{unit}"
            if i + 1 < len(_UNITS):
                sub_size, sub_unit = _UNITS[i + 1]
                sub = seconds % size // sub_size
                if sub:
                    text += f"{sub}{sub_unit}"
            return text
    return "0秒"


def escalation_for(clock: Clock, status: ClockStatus, now: datetime | None = None) -> Escalation | None:
    """The escalation to the duty commander for a clock in `status`; None when the step is ok.

    The amount in the message is measured at `now`, or, without it, at the moment the matching
    timer fires (`warn_at` for at_risk, `due_at` for overdue): "派遣环节即将超时（剩余2分钟）",
    "到场环节已超时5分钟", "办结时限即将届满（剩余2小时）", "已超过办结时限1天".
    """
    if status is ClockStatus.OK:
        return None
    step = Step(clock.step)
    label = STEP_LABELS[step]
    if status is ClockStatus.AT_RISK:
        left = max(remaining(clock, clock.warn_at if now is None else now), timedelta(0))
        if step is Step.STATUTORY:
            message = f"{label}时限即将届满（剩余{format_duration_zh(left)}）"
        else:
            message = f"{label}环节即将超时（剩余{format_duration_zh(left)}）"
    else:
        late = max(-remaining(clock, clock.due_at if now is None else now), timedelta(0))
        amount = format_duration_zh(late) if late >= timedelta(seconds=1) else ""
        if step is Step.STATUTORY:
            message = f"已超过{label}时限{amount}"
        else:
            message = f"{label}环节已超时{amount}"
    return Escalation(
        incident_id=clock.incident_id,
        clock_id=clock.clock_id,
        step=step.value,
        level=status,
        message=message,
        task_id=clock.task_id,
        due_at=clock.due_at,
    )
