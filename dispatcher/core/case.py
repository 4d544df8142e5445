"""The case: one incident with its tasks and clocks, decided as a whole (sans-I/O).

`decide(case, command, ctx)` takes the case as stored, one command and what the world looks
like right now (the plan, the available responders near the incident) and answers with the new
case, the events to record (numbered by the case's version, so one counter orders the whole
timeline) and the effects the service layer must carry out: offer tasks, reserve or free
responders, schedule or cancel durable timers, escalate, forward a command to another case.
It never performs I/O; the incident and task state machines guard every change.

It is long (some 800 lines) because it is one decision: every action's handler shares the builder
that numbers the events and collects the effects of one command, and the rules that cross actions
(rounds, re-offers, verification, escalation, merging) read the same case; cut apart, one
transaction's rules would be spread over files that must change together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final

from contracts.commands import Command
from contracts.states import ACTIVE_TASK_STATES, IncidentState, TaskKind, TaskState
from dispatcher.core.clock import (
    TIMER_STATUS,
    Clock,
    ClockStatus,
    Escalation,
    Step,
    Timer,
    TimerKind,
    clock_id_for,
    escalation_for,
    new_clock,
    offer_expiry_timer,
    timers_for,
)
from dispatcher.core.clock import status as clock_status
from dispatcher.core.lifecycle import Action, Event, IllegalTransition, Incident, transition
from dispatcher.core.plan import Plan
from dispatcher.core.recommend import Available, Pick, next_best, recommend
from dispatcher.core.task import Task, TaskAction, TaskCommand, transition_task

SYSTEM: Final = "system:dispatcher"
TIMER_ACTOR: Final = "system:timer"
MAX_INCIDENT_NOTE_CHARS: Final = 1000  # an operator's note (值班记录); the console server checks it too


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A task with what the case needs to know about its responder."""

    task: Task
    kind: str  # the responder's kind (police, grid_worker, volunteer)
    org: str
    round: int


@dataclass(frozen=True, slots=True)
class Case:
    incident: Incident
    version: int  # every recorded event bumps it: the order of the whole timeline
    category: str
    severity: int
    source: str
    grid_id: str | None
    round: int = 0
    tasks: tuple[TaskInfo, ...] = ()
    clocks: tuple[Clock, ...] = ()  # running
    merged_into: str | None = None

    def task(self, task_id: str) -> TaskInfo:
        for info in self.tasks:
            if info.task.task_id == task_id:
                return info
        raise IllegalTransition(f"incident {self.incident.incident_id} has no task {task_id!r}")

    def active(self, kind: TaskKind | None = None) -> list[TaskInfo]:
        return [
            t
            for t in self.tasks
            if t.task.state in ACTIVE_TASK_STATES and (kind is None or t.task.kind == kind)
        ]

    def tried(self) -> frozenset[str]:
        """Responders already offered a task in this round (never offered twice)."""
        return frozenset(t.task.responder_id for t in self.tasks if t.round == self.round)

    def clock(self, step: str, task_id: str | None = None) -> Clock | None:
        return next((c for c in self.clocks if c.step == step and c.task_id == task_id), None)


@dataclass(frozen=True, slots=True)
class Context:
    """What the world looks like when the command is decided."""

    plan: Plan
    candidates: Sequence[Available] = ()  # on duty, not busy, located, near the incident
    # The incident grid's own grid workers who are on duty, located and not busy on another
    # incident (one who just finished this incident's work may verify it).
    grid_workers: Sequence[Available] = ()
    # Responders a command names who cannot go, and why (unknown, off_duty, busy, not_located).
    unavailable: Mapping[str, str] = field(default_factory=dict)


# Why a named responder cannot be dispatched, in the operator's words.
UNAVAILABLE_REASONS: Final = {
    "unknown": "无此人员",
    "off_duty": "不在岗",
    "busy": "正在执行其他任务",
    "not_located": "位置未知",
}


# One line of the timeline (incident.*, task.*, escalation): the same shape as a lifecycle event.
CaseEvent = Event


# --- effects ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OfferTask:
    info: TaskInfo
    pick: Pick


@dataclass(frozen=True, slots=True)
class SaveTask:
    info: TaskInfo
    note: str | None = None
    photo_urls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SetResponderStatus:
    responder_id: str
    status: str  # busy | available


@dataclass(frozen=True, slots=True)
class ScheduleTimers:
    timers: tuple[Timer, ...]


@dataclass(frozen=True, slots=True)
class CancelTimers:
    clock_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StartClock:
    clock: Clock


@dataclass(frozen=True, slots=True)
class StopClock:
    clock_id: str


@dataclass(frozen=True, slots=True)
class Escalate:
    escalation: Escalation


@dataclass(frozen=True, slots=True)
class Forward:
    command: Command


@dataclass(frozen=True, slots=True)
class RecordFeedback:
    tracking_no: str
    satisfied: bool
    fixed: bool
    rating: int | None
    comment: str | None


Effect = (
    OfferTask
    | SaveTask
    | SetResponderStatus
    | ScheduleTimers
    | CancelTimers
    | StartClock
    | StopClock
    | Escalate
    | Forward
    | RecordFeedback
)


@dataclass(frozen=True, slots=True)
class Outcome:
    case: Case
    events: tuple[CaseEvent, ...]
    effects: tuple[Effect, ...]


class _Builder:
    """Accumulates one decision: the evolving case, its events and effects."""

    def __init__(self, case: Case, cmd: Command) -> None:
        self.case = case
        self.cmd = cmd
        self.at = max(cmd.at, case.incident.updated_at)  # clocks never run backwards
        self.events: list[CaseEvent] = []
        self.effects: list[Effect] = []

    def _event(self, type_: str, actor: str, public: bool, reason: str | None, data: dict[str, Any]) -> None:
        version = self.case.version + 1
        # The incident carries the case's version and the time of its last event, exactly as
        # casestore.load_case rebuilds it, so the next decision (in memory or after a reload)
        # never stamps an event earlier than this one (clocks never run backwards).
        incident = replace(self.case.incident, version=version, updated_at=self.at)
        self.case = replace(self.case, version=version, incident=incident)
        self.events.append(
            CaseEvent(
                event_id=f"{self.cmd.command_id}#{len(self.events)}",
                incident_id=self.case.incident.incident_id,
                version=version,
                type=type_,
                actor=actor,
                at=self.at,
                state=self.case.incident.state,
                public=public,
                reason=reason,
                data=data,
            )
        )

    def incident(
        self, action: Action, reason: str | None = None, actor: str | None = None, **data: Any
    ) -> None:
        cmd = Command(
            action=action,
            incident_id=self.case.incident.incident_id,
            command_id=f"{self.cmd.command_id}#{len(self.events)}",
            actor=actor or self.cmd.actor,
            at=self.at,
            reason=reason,
            data=data,
        )
        decision = transition(self.case.incident, cmd)
        self.case = replace(self.case, incident=decision.incident)
        for e in decision.events:
            self._event(e.type, e.actor, e.public, e.reason, e.data)

    def note(
        self,
        type_: str,
        public: bool = False,
        reason: str | None = None,
        actor: str | None = None,
        **data: Any,
    ) -> None:
        self._event(type_, actor or self.cmd.actor, public, reason, data)

    def task(
        self,
        info: TaskInfo,
        action: TaskAction,
        actor: str,
        reason: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> TaskInfo:
        data = {} if data is None else data
        cmd = TaskCommand(
            action=action,
            task_id=info.task.task_id,
            incident_id=info.task.incident_id,
            responder_id=info.task.responder_id,
            command_id=f"{self.cmd.command_id}#{len(self.events)}",
            actor=actor,
            at=self.at,
            reason=reason,
            data=data,
        )
        decision = transition_task(info.task, cmd)
        updated = replace(info, task=decision.task)
        self._replace_task(updated)
        self._event(
            decision.events[0].type,
            actor,
            False,
            reason,
            {
                **data,  # first: the command's data never overrides the authoritative fields
                "task_id": info.task.task_id,
                "responder_id": info.task.responder_id,
                "task_kind": info.task.kind.value,
                "task_state": decision.task.state.value,
            },
        )
        self.effects.append(SaveTask(updated, data.get("note"), tuple(data.get("photo_urls", ()))))
        return updated

    def _replace_task(self, updated: TaskInfo) -> None:
        tasks = tuple(updated if t.task.task_id == updated.task.task_id else t for t in self.case.tasks)
        if not any(t.task.task_id == updated.task.task_id for t in self.case.tasks):
            tasks = (*tasks, updated)
        self.case = replace(self.case, tasks=tasks)

    def offer(self, pick: Pick, kind: TaskKind, plan: Plan, actor: str | None = None) -> TaskInfo:
        """Offer a task; `actor` is who decided it (the operator's dispatch, else the system)."""
        task_id = f"T-{self.case.incident.incident_id.removeprefix('INC-')}-{len(self.case.tasks) + 1}"
        cmd = TaskCommand(
            action=TaskAction.OFFER,
            task_id=task_id,
            incident_id=self.case.incident.incident_id,
            responder_id=pick.responder_id,
            command_id=f"{self.cmd.command_id}#{len(self.events)}",
            actor=SYSTEM,
            at=self.at,
            data={},
        )
        decision = transition_task(None, cmd, kind)
        info = TaskInfo(decision.task, pick.kind, pick.org, self.case.round)
        self._replace_task(info)
        self._event(
            "task.offer",
            actor or self.cmd.actor,
            False,
            None,
            {
                "task_id": task_id,
                "responder_id": pick.responder_id,
                "responder_name": pick.name,
                "responder_kind": pick.kind,
                "org": pick.org,
                "task_kind": kind.value,
                "task_state": "offered",
                "distance_m": pick.distance_m,
                "eta_s": pick.eta_s,
                "reasons": list(pick.reasons),
            },
        )
        self.effects.append(OfferTask(info, pick))
        self.effects.append(SetResponderStatus(pick.responder_id, "busy"))
        timer = offer_expiry_timer(
            self.case.incident.incident_id,
            task_id,
            self.at,
            timedelta(seconds=plan.accept_timeout_s),
            round=self.case.round,
        )
        self.effects.append(ScheduleTimers((timer,)))
        return info

    def free(self, info: TaskInfo) -> None:
        """The task is over for its responder: free them, stop the task's clocks and cancel its
        offer-expiry timer (still pending when an offered task is declined, removed or cancelled)."""
        self.effects.append(SetResponderStatus(info.task.responder_id, "available"))
        self.stop_clocks(task_id=info.task.task_id)
        self.effects.append(CancelTimers((_accept_clock_id(self.case, info),)))

    def start_clock(
        self, step: str, plan: Plan, task_id: str | None = None, limit: timedelta | None = None
    ) -> None:
        if self.case.clock(step, task_id) is not None:
            return
        seconds = limit or timedelta(seconds=plan.limit_s(Step(step)))
        clock = new_clock(
            self.case.incident.incident_id,
            step,
            self.at,
            seconds,
            task_id=task_id,
            round=self.case.round,
            warning_ratio=plan.warning_ratio,
        )
        self.case = replace(self.case, clocks=(*self.case.clocks, clock))
        self.effects.append(StartClock(clock))
        self.effects.append(ScheduleTimers(timers_for(clock)))

    def stop_clocks(
        self,
        step: str | None = None,
        task_id: str | None = None,
        everything: bool = False,
        keep_step: str | None = None,
    ) -> None:
        """Stop the running clocks of `step` and/or `task_id` (None: any), or `everything`
        except the clocks of `keep_step`."""
        keep: list[Clock] = []
        stop: list[Clock] = []
        for c in self.case.clocks:
            hit = everything or (
                (step is None or c.step == step) and (task_id is None or c.task_id == task_id)
            )
            if keep_step is not None and c.step == keep_step:
                hit = False
            (stop if hit else keep).append(c)
        if not stop:
            return
        self.case = replace(self.case, clocks=tuple(keep))
        for c in stop:
            self.effects.append(StopClock(c.clock_id))
        self.effects.append(CancelTimers(tuple(c.clock_id for c in stop)))

    def outcome(self) -> Outcome:
        return Outcome(self.case, tuple(self.events), tuple(self.effects))


# --- decisions ----------------------------------------------------------------------------------
def start_case(case: Case, plan: Plan, statutory: timedelta, at: datetime) -> tuple[Case, tuple[Effect, ...]]:
    """The clocks a newly filed incident starts: the dispatch step and the source's own limit."""
    b = _Builder(
        case, Command("file", case.incident.incident_id, f"{case.incident.incident_id}:filed", SYSTEM, at)
    )
    b.start_clock("dispatch", plan)
    b.start_clock("statutory", plan, limit=statutory)
    return b.case, tuple(b.effects)


def decide(case: Case, cmd: Command, ctx: Context) -> Outcome:
    """The one entry point: refuse with IllegalTransition, or say what happens."""
    if cmd.incident_id != case.incident.incident_id:
        raise IllegalTransition(f"command for {cmd.incident_id} applied to {case.incident.incident_id}")
    handler = _HANDLERS.get(cmd.action)
    if handler is None:
        raise IllegalTransition(f"unknown action {cmd.action!r}")
    b = _Builder(case, cmd)
    handler(b, ctx)
    return b.outcome()


def _require_operator(cmd: Command) -> None:
    role = cmd.actor.partition(":")[0]
    if role not in ("operator", "commander"):
        raise IllegalTransition(f"{cmd.action} is for operators, not {cmd.actor}")


def _require_operator_or_system(cmd: Command) -> None:
    role = cmd.actor.partition(":")[0]
    if role not in ("operator", "commander", "system"):
        raise IllegalTransition(f"{cmd.action} is for operators or the system, not {cmd.actor}")


def _active_by_kind(case: Case) -> Counter[str]:
    return Counter(t.kind for t in case.active(TaskKind.RESPONSE))


def _dispatch(b: _Builder, ctx: Context) -> None:
    _require_operator(b.cmd)
    case = b.case
    if case.incident.state == IncidentState.RESOLVED:
        # Resolved but nobody was free to verify (or the check was withdrawn): send the check again.
        if case.active(TaskKind.VERIFICATION):
            raise IllegalTransition("a verification task is already out")
        _offer_verification(b, ctx)
        if not case.active(TaskKind.VERIFICATION) and not b.case.active(TaskKind.VERIFICATION):
            raise IllegalTransition("no grid worker is available to verify")
        return
    if case.incident.state not in (
        IncidentState.NEW,
        IncidentState.REOPENED,
        IncidentState.DISPATCHED,
        IncidentState.IN_PROGRESS,
    ):
        raise IllegalTransition(f"cannot dispatch an incident in state {case.incident.state.value}")
    wanted = b.cmd.data.get("responders")
    busy = {t.task.responder_id for t in case.active()}
    picks: list[Pick]
    if wanted:
        if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
            raise IllegalTransition("responders must be a list of responder ids")
        by_id = {c.responder_id: c for c in ctx.candidates}
        picks = []
        for rid in dict.fromkeys(wanted):
            if rid in busy:
                raise IllegalTransition(f"responder {rid} already has a task on this incident")
            cand = by_id.get(rid)
            if cand is None:
                why = UNAVAILABLE_REASONS.get(ctx.unavailable.get(rid, ""), "当前不可派")
                raise IllegalTransition(f"{rid}不可派：{why}")
            picks.append(cand.pick(("值班员直接指派",)))
    else:
        rec = recommend(ctx.plan, ctx.candidates, exclude=case.tried() | busy, already=_active_by_kind(case))
        picks = list(rec.picks)
        if not picks:
            raise IllegalTransition(
                "no available responder fits the plan" if rec.shortfall else "the plan is filled"
            )
    first = case.incident.state in (IncidentState.NEW, IncidentState.REOPENED)
    cc = sorted({p.org for p in picks})
    b.incident(Action.DISPATCH, responders=[p.responder_id for p in picks], cc=cc, plan=ctx.plan.describe())
    for pick in picks:
        b.offer(pick, TaskKind.RESPONSE, ctx.plan)
    if first:
        b.stop_clocks(step="dispatch")
        # Until someone accepts, across declines and re-offers: a dispatch nobody takes escalates.
        b.start_clock("accept", ctx.plan)


def _remove(b: _Builder, ctx: Context) -> None:
    _require_operator(b.cmd)
    rid = b.cmd.data.get("responder_id")
    info = next((t for t in b.case.active() if t.task.responder_id == rid), None)
    if info is None:
        raise IllegalTransition(f"responder {rid!r} has no active task on this incident")
    b.task(info, TaskAction.CANCEL, b.cmd.actor, reason=b.cmd.reason or "值班员撤回")
    b.free(info)


def _reoffer(b: _Builder, info: TaskInfo, ctx: Context) -> None:
    """After a decline or an expiry: the next best responder of the same kind, if any."""
    if info.task.kind == TaskKind.VERIFICATION:
        _offer_verification(b, ctx)
        return
    if b.case.incident.state not in (IncidentState.DISPATCHED, IncidentState.IN_PROGRESS):
        return
    busy = {t.task.responder_id for t in b.case.active()}
    pick = next_best(
        ctx.plan,
        ctx.candidates,
        exclude=b.case.tried() | busy,
        kind=info.kind,
        already=_active_by_kind(b.case),
    )
    if pick is None:
        b.note(
            "incident.reoffer_failed",
            reason=f"没有可改派的{info.kind}",
            actor=SYSTEM,
            responder_kind=info.kind,
        )
        return
    b.note("incident.reoffered", actor=SYSTEM, replaces=info.task.task_id, responder_id=pick.responder_id)
    b.offer(pick, TaskKind.RESPONSE, ctx.plan, actor=SYSTEM)


def _offer_verification(b: _Builder, ctx: Context) -> None:
    """网格核查: the grid's own grid worker checks on site, even if they also did the work; a
    grid worker who already had this round's check (declined or let it expire) is not asked again."""
    tried = {
        t.task.responder_id
        for t in b.case.tasks
        if t.round == b.case.round and t.task.kind == TaskKind.VERIFICATION
    } | {t.task.responder_id for t in b.case.active()}
    own = [w for w in ctx.grid_workers if w.responder_id not in tried]
    others = sorted(
        (c for c in ctx.candidates if c.kind == "grid_worker" and c.responder_id not in tried),
        key=lambda c: (c.eta_s, c.responder_id),
    )
    choice = own[0] if own else (others[0] if others else None)
    if choice is None:
        b.note("incident.verification_unassigned", reason="暂无可核查的网格员", actor=SYSTEM)
        return
    reason = "本网格网格员核查" if own else "本网格网格员不可用，由最近的网格员核查"
    pick = choice.pick((reason,))
    b.offer(pick, TaskKind.VERIFICATION, ctx.plan, actor=SYSTEM)


def _task(b: _Builder, ctx: Context) -> None:
    data = dict(b.cmd.data)
    info = b.case.task(str(data.pop("task_id", "")))
    try:
        action = TaskAction(data.pop("task_action", ""))
    except ValueError:
        raise IllegalTransition("task_action must be accept, decline, en_route, on_scene or done") from None
    if action in (TaskAction.OFFER, TaskAction.EXPIRE, TaskAction.CANCEL):
        raise IllegalTransition(f"a responder cannot {action.value} a task")
    info = b.task(info, action, b.cmd.actor, reason=b.cmd.reason, data=data)
    state = b.case.incident.state
    if action == TaskAction.ACCEPT:
        b.stop_clocks(step="accept")  # the incident's accept clock: someone took it
        b.effects.append(CancelTimers((_accept_clock_id(b.case, info),)))
        b.start_clock("arrive", ctx.plan, task_id=info.task.task_id)
        b.note("incident.accepted", responder_id=info.task.responder_id, task_id=info.task.task_id)
    elif action == TaskAction.DECLINE:
        b.free(info)  # cancels the offer-expiry timer too
        _reoffer(b, info, ctx)
    elif action == TaskAction.ON_SCENE:
        b.stop_clocks(step="arrive", task_id=info.task.task_id)
        if info.task.kind == TaskKind.RESPONSE and state == IncidentState.DISPATCHED:
            b.incident(Action.START, responder_id=info.task.responder_id)
            b.start_clock("resolve", ctx.plan)
    elif action == TaskAction.DONE:
        b.free(info)
        if info.task.kind == TaskKind.VERIFICATION:
            _verified(b, ctx, bool(data.get("passed")), b.cmd.reason)
        elif not b.case.active(TaskKind.RESPONSE) and state == IncidentState.IN_PROGRESS:
            _resolved(b, ctx)


def _accept_clock_id(case: Case, info: TaskInfo) -> str:
    return clock_id_for(case.incident.incident_id, Step.ACCEPT, info.task.task_id, info.round)


def _resolved(b: _Builder, ctx: Context) -> None:
    b.incident(Action.RESOLVE, actor=b.cmd.actor)
    b.stop_clocks(step="resolve")
    b.start_clock("verify", ctx.plan)
    _offer_verification(b, ctx)


def _verified(b: _Builder, ctx: Context, passed: bool, reason: str | None) -> None:
    for info in b.case.active(TaskKind.VERIFICATION):
        b.task(info, TaskAction.CANCEL, SYSTEM, reason="核查已有结论")
        b.free(info)
    b.stop_clocks(step="verify")
    if passed:
        b.incident(Action.VERIFY_PASS)
        b.incident(Action.CLOSE, actor=SYSTEM)
        b.stop_clocks(everything=True)
    else:
        b.incident(Action.VERIFY_FAIL, reason=reason or "核查未通过")
        _next_round(b, ctx)


def _next_round(b: _Builder, ctx: Context) -> None:
    """A reopened incident starts again: a new round of offers and a new dispatch clock.

    The source's statutory limit (12345 办结时限) is for the whole incident: a failed verification
    does not restart or stop it (after a close it has already stopped).
    """
    b.stop_clocks(everything=True, keep_step=Step.STATUTORY)
    b.case = replace(b.case, round=b.case.round + 1)
    b.start_clock("dispatch", ctx.plan)


def _resolve(b: _Builder, ctx: Context) -> None:
    """The operator resolves by hand (the responders' work is done but not all reported it)."""
    _require_operator(b.cmd)
    for info in b.case.active(TaskKind.RESPONSE):
        b.task(info, TaskAction.CANCEL, b.cmd.actor, reason="值班员确认已处置")
        b.free(info)
    _resolved(b, ctx)


def _verify(b: _Builder, ctx: Context) -> None:
    """The operator verifies from the camera (视频复核) instead of on site."""
    _require_operator(b.cmd)
    if b.case.source != "camera":
        raise IllegalTransition("only camera-origin incidents can be verified by camera re-check")
    passed = b.cmd.data.get("passed")
    if not isinstance(passed, bool):
        raise IllegalTransition("passed must be true or false")
    if b.case.incident.state != IncidentState.RESOLVED:
        raise IllegalTransition(f"cannot verify an incident in state {b.case.incident.state.value}")
    b.note("incident.camera_recheck", passed=passed)
    _verified(b, ctx, passed, b.cmd.reason)


def _cancel_all(b: _Builder, reason: str) -> None:
    for info in b.case.active():
        b.task(
            info,
            TaskAction.CANCEL,
            SYSTEM if b.cmd.actor.startswith("system") else b.cmd.actor,
            reason=reason,
        )
        b.free(info)
    b.stop_clocks(everything=True)


def _cancel(b: _Builder, ctx: Context) -> None:
    _require_operator(b.cmd)
    b.incident(Action.CANCEL, reason=b.cmd.reason)
    _cancel_all(b, f"事件已撤销：{b.cmd.reason}")


def _merge(b: _Builder, ctx: Context) -> None:
    _require_operator_or_system(b.cmd)
    into = b.cmd.data.get("into")
    if not isinstance(into, str) or into == b.case.incident.incident_id:
        raise IllegalTransition("merge needs another incident id in 'into'")
    b.incident(Action.MERGE, into=into, match=b.cmd.data.get("match"))
    b.case = replace(b.case, merged_into=into)
    _cancel_all(b, "事件已合并")
    b.effects.append(
        Forward(
            Command(
                "absorb",
                into,
                f"{b.cmd.command_id}:absorb",
                b.cmd.actor,
                b.at,
                data={"from": b.case.incident.incident_id, "match": b.cmd.data.get("match")},
            )
        )
    )


def _absorb(b: _Builder, ctx: Context) -> None:
    _require_operator_or_system(b.cmd)
    if b.case.incident.state not in (
        IncidentState.NEW,
        IncidentState.DISPATCHED,
        IncidentState.IN_PROGRESS,
        IncidentState.REOPENED,
        IncidentState.RESOLVED,
        IncidentState.VERIFIED,
    ):
        raise IllegalTransition(f"cannot merge into an incident in state {b.case.incident.state.value}")
    b.note(
        "incident.absorbed",
        public=False,
        **{"from": b.cmd.data.get("from"), "match": b.cmd.data.get("match")},
    )


def _note(b: _Builder, ctx: Context) -> None:
    """An operator's note on the incident (值班记录): on the timeline, never public."""
    _require_operator(b.cmd)
    text = b.cmd.data.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_INCIDENT_NOTE_CHARS:
        raise IllegalTransition("text: a note of 1 to 1,000 characters")
    b.note("incident.note", public=False, text=text.strip())


def _split(b: _Builder, ctx: Context) -> None:
    """Operator, on the surviving incident: one of the incidents merged into it was not the
    same event after all. Its reports go back to it and it is handled on its own."""
    _require_operator(b.cmd)
    source = b.cmd.data.get("from")
    if not isinstance(source, str) or source == b.case.incident.incident_id:
        raise IllegalTransition("split needs the merged incident's id in 'from'")
    b.note("incident.split", public=False, **{"from": source})
    b.effects.append(
        Forward(
            Command(
                "unmerge",
                source,
                f"{b.cmd.command_id}:unmerge",
                b.cmd.actor,
                b.at,
                data={"from": b.case.incident.incident_id},
            )
        )
    )


def _unmerge(b: _Builder, ctx: Context) -> None:
    """On the incident split off: merged -> new, with a dispatch clock of its own again."""
    _require_operator_or_system(b.cmd)
    if b.case.merged_into != b.cmd.data.get("from"):
        raise IllegalTransition(
            f"{b.case.incident.incident_id} is not merged into {b.cmd.data.get('from')!r}"
        )
    b.incident(Action.SPLIT, **{"from": b.cmd.data.get("from")})
    b.case = replace(b.case, merged_into=None)
    b.start_clock("dispatch", ctx.plan)


def _timer(b: _Builder, ctx: Context) -> None:
    if not b.cmd.actor.startswith("system:"):
        raise IllegalTransition("timers are the system's")
    try:
        kind = TimerKind(str(b.cmd.data.get("kind")))
    except ValueError:
        raise IllegalTransition(f"unknown timer kind {b.cmd.data.get('kind')!r}") from None
    clock_id = b.cmd.data.get("clock_id")
    task_id = b.cmd.data.get("task_id")
    if kind == TimerKind.OFFER_EXPIRY:
        info = next((t for t in b.case.tasks if t.task.task_id == task_id), None)
        if info is None or info.task.state != TaskState.OFFERED:
            return  # answered in time: nothing to do
        info = b.task(info, TaskAction.EXPIRE, TIMER_ACTOR, reason="超时未接单")
        b.free(info)
        _reoffer(b, info, ctx)
        return
    clock = next((c for c in b.case.clocks if c.clock_id == clock_id), None)
    if clock is None:
        return  # the step finished before its deadline
    # The timer's own level, not the status at b.at: a warning timer fired late (after a restart,
    # or stamped after later events) must not report "overdue" a second time beside the overdue
    # timer. One escalation per clock and level, as Escalation.escalation_id promises.
    level = TIMER_STATUS[kind]
    now = clock_status(clock, b.at)
    if now is ClockStatus.OK or (level is ClockStatus.AT_RISK and now is ClockStatus.OVERDUE):
        return  # early, or the overdue timer reports it
    escalation = escalation_for(clock, level, b.at)
    if escalation is None:
        return
    b.note(
        "incident.escalated",
        public=False,
        level=escalation.level.value,
        step=clock.step,
        message=escalation.message,
        clock_id=clock.clock_id,
        to=escalation.to,
        escalation_id=escalation.escalation_id,
    )
    b.effects.append(Escalate(escalation))


def _feedback(b: _Builder, ctx: Context) -> None:
    if not b.cmd.actor.startswith("resident:"):
        raise IllegalTransition("feedback comes from the reporter")
    if b.case.incident.state != IncidentState.CLOSED:
        raise IllegalTransition("feedback is possible once the incident is closed")
    d = b.cmd.data
    tracking_no = d.get("tracking_no")
    if not isinstance(tracking_no, str) or not tracking_no.strip():
        raise IllegalTransition("feedback needs the report's tracking_no")
    fixed = bool(d.get("fixed", True))
    satisfied = bool(d.get("satisfied", False)) and fixed
    rating = d.get("rating")
    if rating is not None and (
        isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5
    ):
        raise IllegalTransition(f"rating must be a whole number 1..5, got {rating!r}")
    comment = d.get("comment")
    comment = comment if isinstance(comment, str) else None
    b.effects.append(RecordFeedback(tracking_no, satisfied, fixed, rating, comment))
    b.note("incident.feedback", public=True, satisfied=satisfied, fixed=fixed, rating=rating)
    if not fixed:
        b.incident(Action.REOPEN, reason=f"居民反馈未解决{('：' + comment) if comment else ''}")
        _next_round(b, ctx)


_HANDLERS: Final = {
    "dispatch": _dispatch,
    "remove": _remove,
    "task": _task,
    "resolve": _resolve,
    "verify": _verify,
    "cancel": _cancel,
    "merge": _merge,
    "absorb": _absorb,
    "split": _split,
    "note": _note,
    "unmerge": _unmerge,
    "timer": _timer,
    "feedback": _feedback,
}
ACTIONS: Final = frozenset(_HANDLERS)
