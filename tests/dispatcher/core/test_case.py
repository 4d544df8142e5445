"""The case aggregate (dispatcher.core.case): decisions command by command, then a stateful model.

`decide(case, command, ctx)` is pure, so every test feeds it a case, one command and a Context
(the plan and the responders available right now) and looks at the answer: the new case, the
events and the effects. `Run` plays the part of the service layer for the unit tests: it keeps
the `busy` set from the SetResponderStatus effects and builds each Context from it.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from contracts.commands import Command
from contracts.kinds import eta_seconds
from contracts.states import ACTIVE_TASK_STATES, IncidentState, TaskKind, TaskState
from dispatcher.core import lifecycle
from dispatcher.core import task as task_sm
from dispatcher.core.case import (
    ACTIONS,
    SYSTEM,
    TIMER_ACTOR,
    CancelTimers,
    Case,
    CaseEvent,
    Context,
    Effect,
    Escalate,
    Forward,
    OfferTask,
    Outcome,
    RecordFeedback,
    SaveTask,
    ScheduleTimers,
    SetResponderStatus,
    StartClock,
    StopClock,
    TaskInfo,
    decide,
    start_case,
)
from dispatcher.core.clock import ClockStatus, Step, Timer, TimerKind, clock_id_for, statutory_limit
from dispatcher.core.lifecycle import Action, IllegalTransition, Incident
from dispatcher.core.plan import Plan, RoleNeed, StepLimits, load_plans
from dispatcher.core.recommend import Available
from dispatcher.core.task import TaskAction

T0 = datetime(2026, 11, 22, 1, 30, tzinfo=UTC)
SEC = timedelta(seconds=1)
S = IncidentState
OPERATOR = "operator:wang"
RESIDENT = "resident:1029"
E = TypeVar("E")

# Plans built here, not read from plans.yaml: the file is data that operators edit.
FIRE_PLAN = Plan(
    "smoke_fire",
    2,
    (
        RoleNeed("police", 1),
        RoleNeed("grid_worker", 1, prefer_own_grid=True),
        RoleNeed("volunteer", 2, frozenset({"fire_safety"})),
    ),
    accept_timeout_s=90,
    limits=StepLimits(dispatch=120, accept=180, arrive=600, resolve=7200, verify=28800),
    warning_ratio=0.75,
    name="烟火",
)
GRID_PLAN = Plan(
    "cooking_fumes",
    4,
    (RoleNeed("grid_worker", 1, prefer_own_grid=True),),
    accept_timeout_s=300,
    limits=StepLimits(dispatch=1800, accept=1800, arrive=7200, resolve=604800, verify=172800),
    warning_ratio=0.8,
)


def avail(
    rid: str, kind: str, distance_m: float, org: str, skills: Iterable[str] = (), own_grid: bool = False
) -> Available:
    return Available(
        rid, f"姓名{rid}", kind, org, frozenset(skills), distance_m, eta_seconds(kind, distance_m), own_grid
    )


P1 = avail("P-1", "police", 900, "石桥派出所")
P2 = avail("P-2", "police", 300, "江北派出所")
G1 = avail("G-1", "grid_worker", 1500, "清晖社区", own_grid=True)  # the incident grid's own
G2 = avail("G-2", "grid_worker", 400, "清晖社区")
G3 = avail("G-3", "grid_worker", 700, "盘溪社区")
V1 = avail("V-1", "volunteer", 200, "青年志愿队", {"fire_safety"})
V2 = avail("V-2", "volunteer", 500, "青年志愿队", {"fire_safety"})
V3 = avail("V-3", "volunteer", 100, "青年志愿队")  # nearest, but without the plan's skill
CANDIDATES = (P1, P2, G2, G3, V1, V2, V3)  # G-1 reaches the case only as its own grid worker


def filed(
    incident_id: str = "INC-1",
    *,
    source: str = "camera",
    plan: Plan = FIRE_PLAN,
    grid_id: str | None = "GR-1",
) -> tuple[Case, tuple[Effect, ...]]:
    """A newly filed incident (version 1: its incident.file event) with its first clocks."""
    incident = Incident(incident_id, S.NEW, 1, T0)
    case = Case(incident, 1, plan.category, plan.severity, source, grid_id)
    limit = statutory_limit(source, "24h" if source == "hotline" else None)
    return start_case(case, plan, limit, T0)


def new_case(incident_id: str = "INC-1", *, source: str = "camera", plan: Plan = FIRE_PLAN) -> Case:
    return filed(incident_id, source=source, plan=plan)[0]


def test_start_case_starts_the_dispatch_and_statutory_clocks() -> None:
    case, effects = filed(source="hotline", plan=GRID_PLAN)
    starts = [e.clock for e in effects if isinstance(e, StartClock)]
    assert [(c.step, c.limit) for c in starts] == [
        ("dispatch", 1800 * SEC),
        ("statutory", timedelta(hours=24)),
    ]
    assert case.clocks == tuple(starts) and case.version == 1 and case.incident.state is S.NEW
    scheduled = [t for e in effects if isinstance(e, ScheduleTimers) for t in e.timers]
    assert [(t.clock_id, t.kind) for t in scheduled] == [
        (clock_id_for("INC-1", Step.DISPATCH), TimerKind.WARNING),
        (clock_id_for("INC-1", Step.DISPATCH), TimerKind.OVERDUE),
        (clock_id_for("INC-1", Step.STATUTORY), TimerKind.WARNING),
        (clock_id_for("INC-1", Step.STATUTORY), TimerKind.OVERDUE),
    ]
    assert scheduled[0].fire_at == T0 + 1440 * SEC


_ids = itertools.count(1)


def command(
    action: str,
    actor: str = OPERATOR,
    at: datetime = T0,
    reason: str | None = None,
    incident_id: str = "INC-1",
    **data: Any,
) -> Command:
    return Command(action, incident_id, f"cmd-{next(_ids)}", actor, at, reason, data)


def of(out: Outcome, cls: type[E]) -> list[E]:
    return [e for e in out.effects if isinstance(e, cls)]


def timers(out: Outcome) -> list[Timer]:
    return [t for s in of(out, ScheduleTimers) for t in s.timers]


def types(out: Outcome) -> list[str]:
    return [e.type for e in out.events]


class Run:
    """One case driven the way the service drives it: busy responders leave the candidates."""

    def __init__(
        self,
        case: Case | None = None,
        plan: Plan = FIRE_PLAN,
        candidates: Sequence[Available] = CANDIDATES,
        grid_workers: Sequence[Available] = (G1,),
    ) -> None:
        self.plan = plan
        self.candidates = candidates
        self.grid_workers = grid_workers
        self.busy: set[str] = set()
        self.now = T0
        self.scheduled: list[Timer] = []
        if case is None:
            case, effects = filed(plan=plan)
            self.scheduled = [t for e in effects if isinstance(e, ScheduleTimers) for t in e.timers]
        self.case = case

    def ctx(self) -> Context:
        return Context(
            self.plan,
            [c for c in self.candidates if c.responder_id not in self.busy],
            [g for g in self.grid_workers if g.responder_id not in self.busy],
        )

    def run(self, cmd: Command) -> Outcome:
        before = copy.deepcopy(self.case)
        try:
            out = decide(self.case, cmd, self.ctx())
        except IllegalTransition:
            assert self.case == before, "a refused command changed the case"
            raise
        assert [e.version for e in out.events] == list(
            range(self.case.version + 1, self.case.version + 1 + len(out.events))
        )
        self.case = out.case
        for eff in out.effects:
            if isinstance(eff, SetResponderStatus):
                (self.busy.add if eff.status == "busy" else self.busy.discard)(eff.responder_id)
            elif isinstance(eff, ScheduleTimers):
                self.scheduled.extend(eff.timers)
        return out

    def do(
        self,
        action: str,
        actor: str = OPERATOR,
        reason: str | None = None,
        at: datetime | None = None,
        **data: Any,
    ) -> Outcome:
        self.now = self.now + 10 * SEC if at is None else at
        return self.run(command(action, actor, self.now, reason, self.case.incident.incident_id, **data))

    def info(self, rid: str) -> TaskInfo:
        return [t for t in self.case.tasks if t.task.responder_id == rid][-1]

    def act(self, rid: str, action: str, reason: str | None = None, **data: Any) -> Outcome:
        task_id = self.info(rid).task.task_id
        return self.do("task", f"responder:{rid}", reason, task_id=task_id, task_action=action, **data)

    def fire(self, timer: Timer, at: datetime | None = None) -> Outcome:
        data = {"timer_id": timer.timer_id, "kind": timer.kind.value, "clock_id": timer.clock_id}
        return self.do(
            "timer", "system:timer", at=timer.fire_at if at is None else at, **data, task_id=timer.task_id
        )

    def expiry_timer(self, rid: str) -> Timer:
        task_id = self.info(rid).task.task_id
        return next(t for t in self.scheduled if t.task_id == task_id and t.kind is TimerKind.OFFER_EXPIRY)

    def clock_timer(self, step: str, kind: TimerKind, round: int = 0) -> Timer:
        clock_id = clock_id_for(self.case.incident.incident_id, step, round=round)
        return next(t for t in self.scheduled if t.clock_id == clock_id and t.kind is kind)

    def finish_response(self) -> Outcome:
        """Every active response task accepted, on scene and done; the last answer."""
        out = None
        for info in self.case.active(TaskKind.RESPONSE):
            rid = info.task.responder_id
            if info.task.state is TaskState.OFFERED:
                self.act(rid, "accept")
            self.act(rid, "on_scene")
            out = self.act(rid, "done", note="已处置", photo_urls=["http://app.example/p/1.jpg"])
        assert out is not None
        return out

    def resolved(self) -> Outcome:
        self.do("dispatch")
        return self.finish_response()


def grid_run(source: str = "hotline", **kw: Any) -> Run:
    run = Run(None, GRID_PLAN, **kw)
    run.case = replace(run.case, source=source)
    return run


# --- dispatch -------------------------------------------------------------------------------------


def test_dispatch_by_plan_offers_the_best_of_each_role() -> None:
    run = Run()
    out = run.do("dispatch")
    assert types(out) == ["incident.dispatch"] + ["task.offer"] * 4
    offered = [e.data["responder_id"] for e in out.events[1:]]
    # Nearest police and grid worker by ETA; volunteers with the plan's skill before the nearer V-3.
    assert offered == ["P-2", "G-2", "V-1", "V-2"]
    assert out.case.incident.state is S.DISPATCHED
    dispatch = out.events[0]
    assert dispatch.state is S.DISPATCHED and dispatch.public
    assert dispatch.data["responders"] == offered
    assert dispatch.data["cc"] == sorted({"江北派出所", "清晖社区", "青年志愿队"})  # 抄送, once each
    # One task per pick, offered, one responder each, remembered with its organisation.
    assert [t.task.responder_id for t in out.case.tasks] == offered
    assert all(t.task.state is TaskState.OFFERED and t.task.kind is TaskKind.RESPONSE for t in out.case.tasks)
    assert [t.kind for t in out.case.tasks] == ["police", "grid_worker", "volunteer", "volunteer"]
    assert [o.pick.responder_id for o in of(out, OfferTask)] == offered
    assert all(o.pick.reasons for o in of(out, OfferTask))
    assert of(out, SetResponderStatus) == [SetResponderStatus(r, "busy") for r in offered]
    expiry = [t for t in timers(out) if t.kind is TimerKind.OFFER_EXPIRY]
    assert [t.task_id for t in expiry] == [t.task.task_id for t in out.case.tasks]
    assert all(t.fire_at == run.now + 90 * SEC for t in expiry)
    # Until someone accepts, the incident's accept clock runs (a dispatch nobody takes escalates).
    accept = out.case.clock("accept")
    assert accept is not None and accept.task_id is None
    assert {t.kind for t in timers(out) if t.clock_id == accept.clock_id} == {
        TimerKind.WARNING,
        TimerKind.OVERDUE,
    }
    # The dispatch step is over: its clock stops and its timers are cancelled.
    dispatch_clock = clock_id_for("INC-1", Step.DISPATCH)
    assert StopClock(dispatch_clock) in out.effects
    assert any(dispatch_clock in c.clock_ids for c in of(out, CancelTimers))
    assert out.case.clock("dispatch") is None
    assert out.case.clock("statutory") is not None
    assert run.busy == set(offered)


def test_dispatch_explicit_responders_of_any_organisation() -> None:
    run = Run()
    out = run.do("dispatch", responders=["V-3", "G-3", "V-3"])
    assert [o.pick.responder_id for o in of(out, OfferTask)] == ["V-3", "G-3"]
    assert all(o.pick.reasons == ("值班员直接指派",) for o in of(out, OfferTask))
    assert out.events[0].data["cc"] == ["盘溪社区", "青年志愿队"]
    # More forces may join a dispatched incident: the plan fills only what is still missing
    # (G-3 is its grid worker, V-3 one of its two volunteers).
    out = run.do("dispatch")
    assert types(out)[0] == "incident.dispatch" and out.case.incident.state is S.DISPATCHED
    assert [o.pick.responder_id for o in of(out, OfferTask)] == ["P-2", "V-1"]


@pytest.mark.parametrize(
    ("responders", "why"),
    [
        (["X-9"], "X-9不可派"),  # off duty, unknown or not located
        (["P-2", "X-9"], "X-9不可派"),  # all or nothing
        ("P-2", "list of responder ids"),
        ([7], "list of responder ids"),
    ],
)
def test_dispatch_explicit_refuses_an_unavailable_responder(responders: object, why: str) -> None:
    run = Run()
    with pytest.raises(IllegalTransition, match=why):
        run.do("dispatch", responders=responders)
    assert run.case.version == 1 and not run.case.tasks


@pytest.mark.parametrize(
    ("why", "words"),
    [
        ("off_duty", "不在岗"),
        ("busy", "正在执行其他任务"),
        ("not_located", "位置未知"),
        ("unknown", "无此人员"),
    ],
)
def test_a_named_responder_who_cannot_go_is_refused_for_the_real_reason(why: str, words: str) -> None:
    """The service says why each named responder cannot go; the refusal says it, in Chinese."""
    run = Run()
    ctx = Context(FIRE_PLAN, CANDIDATES, unavailable={"X-9": why})
    with pytest.raises(IllegalTransition, match=f"^X-9不可派：{words}$"):
        decide(run.case, command("dispatch", responders=["P-2", "X-9"]), ctx)


def test_dispatch_refuses_busy_responders() -> None:
    run = Run()
    run.do("dispatch", responders=["V-3"])
    # Busy on another incident: the service leaves V-3 out of the candidates.
    other = Run(new_case("INC-2"))
    other.busy = run.busy
    with pytest.raises(IllegalTransition, match="V-3不可派"):
        other.do("dispatch", responders=["V-3"])
    # On this incident, the case knows its own tasks even if the candidates are stale.
    stale = Context(FIRE_PLAN, CANDIDATES)
    with pytest.raises(IllegalTransition, match="already has a task"):
        decide(run.case, command("dispatch", responders=["V-3"]), stale)


def test_dispatch_when_the_plan_is_filled_or_nobody_fits() -> None:
    run = Run()
    run.do("dispatch")
    with pytest.raises(IllegalTransition, match="plan is filled"):
        run.do("dispatch")
    with pytest.raises(IllegalTransition, match="no available responder"):
        Run(candidates=()).do("dispatch")


# --- remove, accept, decline, expiry --------------------------------------------------------------


def test_remove_cancels_the_responders_task_and_frees_them() -> None:
    run = Run()
    run.do("dispatch")
    out = run.do("remove", responder_id="V-1")
    assert types(out) == ["task.cancel"]
    assert out.events[0].reason == "值班员撤回" and out.events[0].data["responder_id"] == "V-1"
    assert run.info("V-1").task.state is TaskState.CANCELLED
    assert SetResponderStatus("V-1", "available") in out.effects
    assert "V-1" not in run.busy and out.case.incident.state is S.DISPATCHED
    with pytest.raises(IllegalTransition, match="no active task"):
        run.do("remove", responder_id="V-1")
    with pytest.raises(IllegalTransition, match="operators"):
        run.do("remove", "responder:P-2", responder_id="P-2")


def test_accept_cancels_the_offer_expiry_and_starts_the_arrive_clock() -> None:
    run = Run()
    run.do("dispatch")
    expiry = run.expiry_timer("P-2")
    out = run.act("P-2", "accept")
    task_id = run.info("P-2").task.task_id
    assert types(out) == ["task.accept", "incident.accepted"]
    assert out.events[0].actor == "responder:P-2" and out.events[0].data["task_state"] == "accepted"
    assert run.info("P-2").task.state is TaskState.ACCEPTED
    assert any(expiry.clock_id in c.clock_ids for c in of(out, CancelTimers))
    [start] = of(out, StartClock)
    assert (start.clock.step, start.clock.task_id) == ("arrive", task_id)
    assert start.clock.limit == 600 * SEC and start.clock.started_at == run.now
    assert {t.kind for t in timers(out)} == {TimerKind.WARNING, TimerKind.OVERDUE}
    assert out.case.clock("arrive", task_id) == start.clock
    assert "P-2" in run.busy


def test_decline_frees_the_responder_and_offers_the_next_best_of_the_same_kind() -> None:
    run = Run()
    run.do("dispatch")
    declined = run.info("P-2")
    with pytest.raises(IllegalTransition, match="reason"):
        run.act("P-2", "decline")
    out = run.act("P-2", "decline", reason="车辆故障")
    assert types(out) == ["task.decline", "incident.reoffered", "task.offer"]
    assert run.info("P-2").task.state is TaskState.DECLINED
    reoffered = out.events[1]
    assert reoffered.data == {"replaces": declined.task.task_id, "responder_id": "P-1"}
    assert reoffered.actor == SYSTEM and out.events[2].actor == SYSTEM  # the system re-offers
    [offer] = of(out, OfferTask)
    assert offer.pick.responder_id == "P-1" and offer.info.kind == "police"
    assert of(out, SetResponderStatus) == [
        SetResponderStatus("P-2", "available"),
        SetResponderStatus("P-1", "busy"),
    ]
    accept_clock = clock_id_for("INC-1", Step.ACCEPT, declined.task.task_id)
    assert any(accept_clock in c.clock_ids for c in of(out, CancelTimers))
    [timer] = timers(out)
    assert timer.kind is TimerKind.OFFER_EXPIRY and timer.task_id == offer.info.task.task_id
    assert run.busy == {"P-1", "G-2", "V-1", "V-2"}
    # Nobody left of that kind: the operator is told, nothing is offered.
    out = run.act("P-1", "decline", reason="在处理其他警情")
    assert types(out) == ["task.decline", "incident.reoffer_failed"]
    assert not of(out, OfferTask) and run.busy == {"G-2", "V-1", "V-2"}


def test_offer_expiry_expires_a_still_offered_task_and_reoffers() -> None:
    run = Run()
    run.do("dispatch")
    timer = run.expiry_timer("V-1")
    out = run.fire(timer)
    assert types(out) == ["task.expire", "incident.reoffered", "task.offer"]
    assert out.events[0].actor == TIMER_ACTOR and out.events[0].at == timer.fire_at
    assert run.info("V-1").task.state is TaskState.EXPIRED
    # V-2 is already on it and V-1 had its chance: V-3, without the skill, is all that is left.
    [offer] = of(out, OfferTask)
    assert offer.pick.responder_id == "V-3"
    assert "缺少所需技能" in offer.pick.reasons[0]
    assert SetResponderStatus("V-1", "available") in out.effects
    assert SetResponderStatus("V-3", "busy") in out.effects


def test_a_stale_offer_expiry_does_nothing() -> None:
    run = Run()
    run.do("dispatch")
    timer = run.expiry_timer("P-2")
    run.act("P-2", "accept")
    before = run.case
    out = run.fire(timer)
    assert out.events == () and out.effects == () and out.case == before


# --- on scene, done, verification -----------------------------------------------------------------


def test_first_on_scene_puts_the_incident_in_progress() -> None:
    run = Run()
    run.do("dispatch")
    run.act("P-2", "accept")
    run.act("P-2", "en_route")
    task_id = run.info("P-2").task.task_id
    out = run.act("P-2", "on_scene", note="已到达现场")
    assert types(out) == ["task.on_scene", "incident.start"]
    assert out.case.incident.state is S.IN_PROGRESS
    assert out.events[0].data["note"] == "已到达现场"
    assert StopClock(clock_id_for("INC-1", Step.ARRIVE, task_id)) in out.effects
    [start] = of(out, StartClock)
    assert start.clock.step == "resolve" and start.clock.task_id is None
    # Straight from accepted to on scene (already there); the incident is in progress already.
    run.act("G-2", "accept")
    out = run.act("G-2", "on_scene")
    assert types(out) == ["task.on_scene"]


def test_one_done_of_several_does_not_resolve() -> None:
    run = Run()
    run.do("dispatch")
    run.act("P-2", "accept")
    run.act("P-2", "on_scene")
    out = run.act("P-2", "done", note="火已扑灭")
    assert types(out) == ["task.done"]
    assert out.case.incident.state is S.IN_PROGRESS
    assert SetResponderStatus("P-2", "available") in out.effects
    [save] = of(out, SaveTask)
    assert save.note == "火已扑灭" and save.info.task.state is TaskState.DONE


def test_all_response_tasks_done_resolves_and_offers_verification_to_the_own_grid_worker() -> None:
    run = grid_run(grid_workers=(G1,))
    out = run.resolved()
    assert types(out) == ["task.done", "incident.resolve", "task.offer"]
    assert out.case.incident.state is S.RESOLVED
    [save] = of(out, SaveTask)
    assert save.photo_urls == ("http://app.example/p/1.jpg",)
    [offer] = of(out, OfferTask)
    assert offer.pick.responder_id == "G-1" and offer.pick.reasons == ("本网格网格员核查",)
    assert offer.info.task.kind is TaskKind.VERIFICATION
    assert out.events[-1].data["task_kind"] == "verification"
    assert SetResponderStatus("G-2", "available") in out.effects
    assert SetResponderStatus("G-1", "busy") in out.effects
    assert out.case.clock("resolve") is None and out.case.clock("verify") is not None
    assert StopClock(clock_id_for("INC-1", Step.RESOLVE)) in out.effects


def test_verification_goes_to_the_nearest_grid_worker_when_the_own_one_is_unavailable() -> None:
    run = grid_run(grid_workers=())
    out = run.resolved()
    [offer] = of(out, OfferTask)
    # G-2 did the work this round; G-3 is the nearest other grid worker.
    assert offer.pick.responder_id == "G-3" and "最近的网格员" in offer.pick.reasons[0]


def test_verification_nobody_available() -> None:
    run = grid_run(grid_workers=(), candidates=(G2,))
    out = run.resolved()
    assert types(out) == ["task.done", "incident.resolve", "incident.verification_unassigned"]
    assert out.case.incident.state is S.RESOLVED and not out.case.active()


def test_verification_passed_verifies_and_closes_with_every_clock_stopped() -> None:
    run = grid_run()
    run.resolved()
    run.act("G-1", "accept")
    run.act("G-1", "on_scene")
    running = {c.clock_id for c in run.case.clocks}
    assert clock_id_for("INC-1", Step.STATUTORY) in running
    with pytest.raises(IllegalTransition, match="passed"):
        run.act("G-1", "done")
    out = run.act("G-1", "done", passed=True, note="现场已无油烟")
    assert types(out) == ["task.done", "incident.verify_pass", "incident.close"]
    assert [e.state for e in out.events] == [S.RESOLVED, S.VERIFIED, S.CLOSED]
    assert out.case.incident.state is S.CLOSED
    assert out.events[-1].actor == SYSTEM and out.events[-1].public
    assert out.case.clocks == ()
    assert {s.clock_id for s in of(out, StopClock)} == running
    assert not out.case.active() and run.busy == set()


def test_verification_failed_reopens_a_new_round() -> None:
    run = grid_run()
    run.resolved()
    run.act("G-1", "accept")
    run.act("G-1", "on_scene")
    with pytest.raises(IllegalTransition, match="reason"):
        run.act("G-1", "done", passed=False)
    out = run.act("G-1", "done", reason="油烟仍然很大", passed=False)
    assert types(out) == ["task.done", "incident.verify_fail"]
    assert out.events[-1].reason == "油烟仍然很大"
    assert out.case.incident.state is S.REOPENED and out.case.round == 1
    [start] = of(out, StartClock)
    assert start.clock.clock_id == clock_id_for("INC-1", Step.DISPATCH, round=1)
    assert start.clock.started_at == run.now
    # The 12345 statutory limit covers the whole incident: a failed check does not stop it.
    assert out.case.clock("statutory") is not None
    assert {c.step for c in out.case.clocks} == {"dispatch", "statutory"}
    # A new round: G-2, who worked the first round, may be offered again.
    out = run.do("dispatch")
    assert [o.pick.responder_id for o in of(out, OfferTask)] == ["G-2"]
    assert all(o.info.round == 1 for o in of(out, OfferTask))
    assert StopClock(clock_id_for("INC-1", Step.DISPATCH, round=1)) in out.effects
    assert timers(out)[0].clock_id == clock_id_for(
        "INC-1", Step.ACCEPT, of(out, OfferTask)[0].info.task.task_id, 1
    )


def test_camera_recheck_verifies_a_resolved_camera_incident() -> None:
    run = grid_run(source="camera")
    run.resolved()
    with pytest.raises(IllegalTransition, match="passed"):
        run.do("verify")
    with pytest.raises(IllegalTransition, match="operators"):
        run.do("verify", "responder:G-1", passed=True)
    out = run.do("verify", passed=True)
    assert types(out) == ["incident.camera_recheck", "task.cancel", "incident.verify_pass", "incident.close"]
    assert out.case.incident.state is S.CLOSED and out.case.clocks == ()
    assert run.info("G-1").task.state is TaskState.CANCELLED and run.busy == set()


def test_camera_recheck_failed_reopens() -> None:
    run = grid_run(source="camera")
    run.resolved()
    out = run.do("verify", reason="视频复核仍有油烟", passed=False)
    assert types(out)[-1] == "incident.verify_fail" and out.case.incident.state is S.REOPENED
    assert out.case.round == 1


def test_camera_recheck_only_for_camera_incidents_once_resolved() -> None:
    hotline = grid_run()
    hotline.resolved()
    with pytest.raises(IllegalTransition, match="camera"):
        hotline.do("verify", passed=True)
    camera = grid_run(source="camera")
    with pytest.raises(IllegalTransition, match="state new"):
        camera.do("verify", passed=True)
    camera.do("dispatch")
    camera.act("G-2", "accept")
    camera.act("G-2", "on_scene")
    with pytest.raises(IllegalTransition, match="state in_progress"):
        camera.do("verify", passed=True)


def test_operator_resolves_by_hand() -> None:
    run = Run()
    run.do("dispatch")
    with pytest.raises(IllegalTransition, match="dispatched"):
        run.do("resolve")  # nobody on scene yet
    run.act("P-2", "accept")
    run.act("P-2", "on_scene")
    out = run.do("resolve")
    assert types(out)[:4] == ["task.cancel"] * 4
    assert types(out)[4:] == ["incident.resolve", "task.offer"]
    assert out.case.incident.state is S.RESOLVED
    assert [t.task.responder_id for t in out.case.active()] == ["G-1"]


# --- cancel and merge -----------------------------------------------------------------------------


def test_cancel_needs_a_reason_and_cancels_the_active_tasks() -> None:
    run = Run()
    run.do("dispatch")
    run.act("P-2", "accept")
    with pytest.raises(IllegalTransition, match="reason"):
        run.do("cancel")
    with pytest.raises(IllegalTransition, match="operators"):
        run.do("cancel", "responder:P-2", reason="误报")
    out = run.do("cancel", reason="误报：烧烤烟雾")
    assert types(out) == ["incident.cancel"] + ["task.cancel"] * 4
    assert out.case.incident.state is S.CANCELLED
    assert all(e.reason == "事件已撤销：误报：烧烤烟雾" for e in out.events[1:])
    assert out.case.clocks == () and not out.case.active() and run.busy == set()
    assert all(e.status == "available" for e in of(out, SetResponderStatus))
    with pytest.raises(IllegalTransition):
        run.do("dispatch")


def test_merge_forwards_an_absorb_command_to_the_target() -> None:
    run = Run()
    run.do("dispatch")
    with pytest.raises(IllegalTransition, match="another incident"):
        run.do("merge", into="INC-1")
    with pytest.raises(IllegalTransition, match="operators or the system"):
        run.do("merge", "responder:P-2", into="INC-2")
    out = run.do("merge", "system:merge", into="INC-2", match={"family": "fire", "distance_m": 40})
    assert types(out) == ["incident.merge"] + ["task.cancel"] * 4
    assert out.case.incident.state is S.MERGED and out.case.merged_into == "INC-2"
    assert out.case.clocks == () and run.busy == set()
    [forward] = of(out, Forward)
    absorb = forward.command
    assert (absorb.action, absorb.incident_id, absorb.actor) == ("absorb", "INC-2", "system:merge")
    assert absorb.data == {"from": "INC-1", "match": {"family": "fire", "distance_m": 40}}
    target = new_case("INC-2")
    answer = decide(target, absorb, Context(FIRE_PLAN))
    assert types(answer) == ["incident.absorbed"]
    assert answer.events[0].data["from"] == "INC-1" and answer.case.incident.state is S.NEW
    # A closed incident absorbs nothing.
    closed = grid_run()
    closed.resolved()
    closed.act("G-1", "accept")
    closed.act("G-1", "on_scene")
    closed.act("G-1", "done", passed=True)
    absorb_into_closed = replace(absorb, incident_id="INC-1", data={"from": "INC-3"})
    with pytest.raises(IllegalTransition, match="closed"):
        decide(closed.case, absorb_into_closed, Context(GRID_PLAN))
    with pytest.raises(IllegalTransition, match="operators or the system"):
        decide(target, replace(absorb, actor=RESIDENT), Context(FIRE_PLAN))


# --- clocks and escalation ------------------------------------------------------------------------


def test_warning_and_overdue_timers_of_a_running_clock_escalate() -> None:
    run = Run()
    warning = run.clock_timer("dispatch", TimerKind.WARNING)
    overdue = run.clock_timer("dispatch", TimerKind.OVERDUE)
    assert warning.fire_at == T0 + 90 * SEC and overdue.fire_at == T0 + 120 * SEC
    with pytest.raises(IllegalTransition, match="system"):
        run.do("timer", OPERATOR, kind="warning", clock_id=warning.clock_id)
    out = run.fire(warning)
    assert types(out) == ["incident.escalated"]
    [esc] = of(out, Escalate)
    assert esc.escalation.level is ClockStatus.AT_RISK and esc.escalation.step == "dispatch"
    assert esc.escalation.to == "duty_commander" and "派遣环节即将超时" in esc.escalation.message
    event = out.events[0]
    assert event.data["level"] == "at_risk" and event.data["escalation_id"] == esc.escalation.escalation_id
    assert not event.public and event.state is S.NEW
    out = run.fire(overdue)
    [esc] = of(out, Escalate)
    assert esc.escalation.level is ClockStatus.OVERDUE and esc.escalation.message == "派遣环节已超时"


def test_timers_of_a_stopped_clock_do_nothing() -> None:
    run = Run()
    run.do("dispatch")
    for kind in (TimerKind.WARNING, TimerKind.OVERDUE):
        out = run.fire(run.clock_timer("dispatch", kind))
        assert out.events == () and out.effects == ()


def test_a_late_warning_timer_does_not_report_overdue_twice() -> None:
    """After a restart both timers of a clock are due; whatever order they fire in, each level of
    the clock escalates once (Escalation.escalation_id is one per clock and level)."""
    run = Run()
    warning = run.clock_timer("dispatch", TimerKind.WARNING)
    overdue = run.clock_timer("dispatch", TimerKind.OVERDUE)
    first = run.fire(overdue)
    second = run.fire(warning)  # stamped at its own fire_at, decided after the overdue
    assert [e.escalation.level for e in of(first, Escalate)] == [ClockStatus.OVERDUE]
    assert of(second, Escalate) == [] and second.events == ()


def test_a_timer_fired_early_does_not_escalate() -> None:
    run = Run()
    warning = run.clock_timer("dispatch", TimerKind.WARNING)
    out = run.fire(warning, at=warning.fire_at - SEC)
    assert out.events == () and out.effects == ()


def test_unknown_timer_kind_is_refused() -> None:
    run = Run()
    with pytest.raises(IllegalTransition, match="timer kind"):
        run.do("timer", "system:timer", kind="alarm", clock_id="x")
    with pytest.raises(IllegalTransition, match="timer kind"):
        run.do("timer", "system:timer", clock_id="x")


def test_events_never_run_backwards_in_time() -> None:
    """A command stamped before the case's last event (a phone's clock, a timer fired late) is
    recorded at the case's own time, even when that last event changed no state."""
    run = Run()
    run.fire(run.clock_timer("dispatch", TimerKind.WARNING))  # at T0+90s, an escalation only
    out = run.do("dispatch", at=T0 + 30 * SEC)
    assert {e.at for e in out.events} == {T0 + 90 * SEC}
    assert all(o.info.task.updated_at == T0 + 90 * SEC for o in of(out, OfferTask))
    assert out.case.incident.updated_at == T0 + 90 * SEC and out.case.incident.version == out.case.version
    run.act("P-2", "accept")  # T0+40s by the run's clock
    out = run.do("remove", responder_id="V-1", at=T0)
    assert out.events[0].at == T0 + 90 * SEC


# --- residents ------------------------------------------------------------------------------------


def closed_run() -> Run:
    run = grid_run()
    run.resolved()
    run.act("G-1", "accept")
    run.act("G-1", "on_scene")
    run.act("G-1", "done", passed=True)
    assert run.case.incident.state is S.CLOSED
    return run


def test_feedback_only_once_closed() -> None:
    run = grid_run()
    run.do("dispatch")
    with pytest.raises(IllegalTransition, match="closed"):
        run.do("feedback", RESIDENT, tracking_no="TRK-1", satisfied=True)


def test_feedback_satisfied() -> None:
    run = closed_run()
    out = run.do("feedback", RESIDENT, tracking_no="TRK-1", satisfied=True, rating=5, comment="很及时")
    assert types(out) == ["incident.feedback"] and out.events[0].public
    assert of(out, RecordFeedback) == [RecordFeedback("TRK-1", True, True, 5, "很及时")]
    assert out.case.incident.state is S.CLOSED


def test_feedback_not_fixed_reopens() -> None:
    run = closed_run()
    out = run.do("feedback", RESIDENT, tracking_no="TRK-1", fixed=False, satisfied=True, comment="还在冒油烟")
    assert types(out) == ["incident.feedback", "incident.reopen"]
    assert of(out, RecordFeedback) == [RecordFeedback("TRK-1", False, False, None, "还在冒油烟")]
    assert out.events[1].reason == "居民反馈未解决：还在冒油烟" and out.events[1].public
    assert out.case.incident.state is S.REOPENED and out.case.round == 1
    assert [c.clock_id for c in out.case.clocks] == [clock_id_for("INC-1", Step.DISPATCH, round=1)]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"satisfied": True}, "tracking_no"),
        ({"tracking_no": "", "satisfied": True}, "tracking_no"),
        ({"tracking_no": "TRK-1", "rating": 7}, "rating"),
        ({"tracking_no": "TRK-1", "rating": True}, "rating"),
        ({"tracking_no": "TRK-1", "rating": "5"}, "rating"),
    ],
)
def test_feedback_refuses_bad_data(data: dict[str, Any], why: str) -> None:
    run = closed_run()
    with pytest.raises(IllegalTransition, match=why):
        run.do("feedback", RESIDENT, **data)


def test_feedback_comment_that_is_not_text_does_not_crash() -> None:
    run = closed_run()
    out = run.do("feedback", RESIDENT, tracking_no="TRK-1", fixed=False, comment=42)
    assert out.case.incident.state is S.REOPENED and of(out, RecordFeedback)[0].comment is None


# --- who may do what ------------------------------------------------------------------------------


def test_responders_cannot_dispatch() -> None:
    with pytest.raises(IllegalTransition, match="operators"):
        Run().do("dispatch", "responder:P-2")


def test_only_the_tasks_own_responder_drives_it() -> None:
    run = Run()
    run.do("dispatch")
    task_id = run.info("P-2").task.task_id
    for actor in (OPERATOR, "commander:li", "responder:P-1", SYSTEM):
        with pytest.raises(IllegalTransition):
            run.do("task", actor, task_id=task_id, task_action="accept")
    for action in ("offer", "expire", "cancel", "explode"):
        with pytest.raises(IllegalTransition):
            run.do("task", "responder:P-2", reason="x", task_id=task_id, task_action=action)
    with pytest.raises(IllegalTransition, match="no task"):
        run.do("task", "responder:P-2", task_id="T-9", task_action="accept")


def test_only_the_system_fires_timers() -> None:
    run = Run()
    warning = run.clock_timer("dispatch", TimerKind.WARNING)
    for actor in (OPERATOR, "commander:li", "responder:P-2", RESIDENT):
        with pytest.raises(IllegalTransition, match="system"):
            run.do("timer", actor, kind="warning", clock_id=warning.clock_id)


def test_only_residents_give_feedback() -> None:
    run = closed_run()
    for actor in (OPERATOR, "responder:G-1", SYSTEM):
        with pytest.raises(IllegalTransition, match="reporter"):
            run.do("feedback", actor, tracking_no="TRK-1", satisfied=True)


def test_task_data_cannot_crash_or_forge_the_event() -> None:
    run = Run()
    run.do("dispatch")
    task_id = run.info("P-2").task.task_id
    data = {
        "task_id": task_id,
        "task_action": "accept",
        "reason": "in data",
        "actor": "operator:x",
        "info": 1,
        "data": {},
        "responder_id": "P-1",
        "task_state": "done",
    }
    out = run.run(Command("task", "INC-1", "cmd-forge", "responder:P-2", T0 + SEC, None, data))
    event = out.events[0]
    assert event.actor == "responder:P-2" and event.reason is None
    assert event.data["responder_id"] == "P-2" and event.data["task_state"] == "accepted"


def test_a_command_for_another_incident_is_refused() -> None:
    case = new_case()
    with pytest.raises(IllegalTransition, match="INC-2"):
        decide(case, command("dispatch", incident_id="INC-2"), Context(FIRE_PLAN, CANDIDATES))


@pytest.mark.parametrize("action", ["file", "explode", "", "DISPATCH"])
def test_unknown_action_is_refused(action: str) -> None:
    assert action not in ACTIONS
    with pytest.raises(IllegalTransition, match="unknown action"):
        decide(new_case(), command(action), Context(FIRE_PLAN, CANDIDATES))


def test_actions() -> None:
    assert {"dispatch", "remove", "task", "resolve", "verify", "cancel", "merge", "absorb"} <= ACTIONS
    assert {"timer", "feedback"} <= ACTIONS


# --- the stateful model ---------------------------------------------------------------------------
#
# A small street: eight responders of the three kinds, three incidents at fixed distances, and the
# `busy` set the service keeps in Redis. Every decide() gets a Context without the busy responders;
# every SetResponderStatus effect updates `busy`; every ScheduleTimers effect goes into a timer
# store keyed on the timer id (a second insert of the same id does nothing), every CancelTimers
# cancels the clock's pending timers; Forward effects are decided on their target at once.

BOOK = load_plans()
POOL = (
    ("P-1", "police", "石桥派出所", ("patrol",)),
    ("P-2", "police", "江北派出所", ("first_aid", "fire_safety")),
    ("G-1", "grid_worker", "清晖社区", ("inspection",)),
    ("G-2", "grid_worker", "清晖社区", ()),
    ("G-3", "grid_worker", "盘溪社区", ("first_aid",)),
    ("V-1", "volunteer", "青年志愿队", ("fire_safety",)),
    ("V-2", "volunteer", "青年志愿队", ("first_aid",)),
    ("V-3", "volunteer", "助老志愿队", ()),
)
RIDS = tuple(r[0] for r in POOL)
# incident id, category, severity, source, own grid worker
WORLD = (
    ("INC-A", "smoke_fire", 2, "camera", "G-1"),
    ("INC-B", "person_fallen", 2, "app", "G-2"),
    ("INC-C", "cooking_fumes", 4, "hotline", "G-3"),
)
DISTANCE = {
    (i, rid): 150.0 + ((i * 5 + j * 3) % 8) * 230.0 for i in range(len(WORLD)) for j, rid in enumerate(RIDS)
}
LAGS = st.sampled_from([0, 0, 0, 20, 400])  # seconds a command's stamp lags the world's clock
CASE = st.integers(0, len(WORLD) - 1)
RARE = st.sampled_from([True, *[False] * 4])
RARER = st.sampled_from([True, *[False] * 9])
ACTORS = st.sampled_from([OPERATOR, OPERATOR, "commander:li", "responder:P-1", RESIDENT])
PHOTOS = st.sampled_from([[], ["http://app.example/p/1.jpg"], ["ftp://x"]])


def available(i: int, rid: str) -> Available:
    _, kind, org, skills = next(r for r in POOL if r[0] == rid)
    return avail(rid, kind, DISTANCE[(i, rid)], org, skills, own_grid=rid == WORLD[i][4])


def replay_incident(events: Sequence[CaseEvent]) -> IncidentState | None:
    """The incident's state rebuilt from its events, checking every step against the table."""
    state: IncidentState | None = None
    actions = {a.value for a in Action}
    for e in events:
        kind, _, name = e.type.partition(".")
        if kind == "incident" and name in actions:
            after = lifecycle.TRANSITIONS.get((state, Action(name)))
            assert after is not None, f"illegal {state} --{name}--> {e.state} ({e.event_id})"
            assert e.state is after, f"{state} --{name}--> {e.state}, table says {after}"
            state = after
        else:
            assert e.state is state, f"{e.type} changed the incident's state without its event"
    return state


def replay_tasks(events: Sequence[CaseEvent]) -> dict[str, TaskState]:
    """Each task's state rebuilt from the task.* events, checking every step against the table."""
    states: dict[str, TaskState] = {}
    owners: dict[str, str] = {}
    for e in events:
        kind, _, name = e.type.partition(".")
        if kind != "task":
            continue
        task_id = e.data["task_id"]
        before = states.get(task_id)
        after = task_sm.TRANSITIONS.get((before, TaskAction(name)))
        assert after is not None, f"illegal task {before} --{name}--> ({e.event_id})"
        assert TaskState(e.data["task_state"]) is after
        assert owners.setdefault(task_id, e.data["responder_id"]) == e.data["responder_id"]
        states[task_id] = after
    return states


class CaseMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.busy: set[str] = set()
        self.pending: dict[str, Timer] = {}  # timer id -> timer not yet fired nor cancelled
        self.stored: set[str] = set()  # every timer id ever stored (insert ... on conflict do nothing)
        self.cases: list[Case] = []
        self.events: list[list[CaseEvent]] = []
        self.refused = Counter[str]()
        for iid, category, severity, source, _ in WORLD:
            plan = BOOK.plan_for(category, severity)
            case = Case(Incident(iid, S.NEW, 1, T0), 1, category, severity, source, f"GR-{iid}")
            limit = statutory_limit(source, "24h" if source == "hotline" else None)
            case, effects = start_case(case, plan, limit, T0)
            filed = CaseEvent(
                f"{iid}:filed", iid, 1, "incident.file", "system:intake", T0, S.NEW, True, None, {}
            )
            self.cases.append(case)
            self.events.append([filed])
            self.effects(effects)

    # -- the service layer's part --------------------------------------------------------------

    def ctx(self, i: int) -> Context:
        _, category, severity, _, own = WORLD[i]
        free = [available(i, rid) for rid in RIDS if rid not in self.busy]
        return Context(
            BOOK.plan_for(category, severity),
            free,
            [a for a in free if a.responder_id == own],
        )

    def effects(self, effects: Iterable[Effect]) -> None:
        for eff in effects:
            if isinstance(eff, SetResponderStatus):
                assert eff.status in ("busy", "available")
                (self.busy.add if eff.status == "busy" else self.busy.discard)(eff.responder_id)
            elif isinstance(eff, ScheduleTimers):
                for t in eff.timers:
                    if t.timer_id not in self.stored:
                        self.stored.add(t.timer_id)
                        self.pending[t.timer_id] = t
            elif isinstance(eff, CancelTimers):
                for tid in [tid for tid, t in self.pending.items() if t.clock_id in eff.clock_ids]:
                    del self.pending[tid]
            elif isinstance(eff, Forward):
                target = next(j for j, w in enumerate(WORLD) if w[0] == eff.command.incident_id)
                self.apply(target, eff.command)

    def apply(self, i: int, cmd: Command) -> Outcome | None:
        case = self.cases[i]
        before = copy.deepcopy(case)
        try:
            out = decide(case, cmd, self.ctx(i))
        except IllegalTransition:
            assert self.cases[i] == before, "a refused command changed the case"
            self.refused[cmd.action] += 1
            return None
        assert [e.version for e in out.events] == list(range(case.version + 1, out.case.version + 1))
        assert all(e.incident_id == case.incident.incident_id for e in out.events)
        escalations = [e.escalation.escalation_id for e in out.effects if isinstance(e, Escalate)]
        escalated = [e.data["escalation_id"] for e in out.events if e.type == "incident.escalated"]
        assert escalations == escalated
        self.cases[i] = out.case
        self.events[i].extend(out.events)
        self.effects(out.effects)
        return out

    def cmd(
        self, i: int, action: str, actor: str, lag: int = 0, reason: str | None = None, **data: Any
    ) -> None:
        at = self.now - lag * SEC
        self.apply(i, Command(action, WORLD[i][0], f"c{next(_ids)}", actor, at, reason, data))

    # -- rules ---------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([5, 45, 100, 400, 3600, 86400]))
    def advance_time(self, seconds: int) -> None:
        self.now += seconds * SEC

    @rule(i=CASE, actor=ACTORS, lag=LAGS)
    def dispatch_by_plan(self, i: int, actor: str, lag: int) -> None:
        self.cmd(i, "dispatch", actor, lag)

    @rule(i=CASE, rids=st.lists(st.sampled_from(RIDS), min_size=1, max_size=3), lag=LAGS)
    def dispatch_explicit(self, i: int, rids: list[str], lag: int) -> None:
        self.cmd(i, "dispatch", OPERATOR, lag, responders=rids)

    @rule(i=CASE, rid=st.sampled_from(RIDS), lag=LAGS)
    def remove(self, i: int, rid: str, lag: int) -> None:
        self.cmd(i, "remove", OPERATOR, lag, responder_id=rid)

    def progress(self, data: st.DataObject, lag: int) -> None:
        """The natural next step of an active task, by its own responder."""
        active = [(i, t) for i, c in enumerate(self.cases) for t in c.active()]
        if not active:
            return
        i, info = data.draw(st.sampled_from(active))
        rid = info.task.responder_id
        state = info.task.state
        reason: str | None = None
        extra: dict[str, Any] = {}
        if state is TaskState.OFFERED:
            action = data.draw(st.sampled_from(["accept", "accept", "accept", "decline"]))
            reason = "正在处理其他事务" if action == "decline" else None
        elif state is TaskState.ACCEPTED:
            action = data.draw(st.sampled_from(["en_route", "on_scene"]))
        elif state is TaskState.EN_ROUTE:
            action = "on_scene"
        else:
            action = "done"
            extra = {"note": "已处置", "photo_urls": ["http://app.example/p/2.jpg"]}
            if info.task.kind is TaskKind.VERIFICATION:
                extra["passed"] = data.draw(st.sampled_from([True, True, False]))
                reason = None if extra["passed"] else "问题仍在"
        self.cmd(
            i, "task", f"responder:{rid}", lag, reason, task_id=info.task.task_id, task_action=action, **extra
        )

    @precondition(lambda self: any(c.active() for c in self.cases))
    @rule(data=st.data(), lag=LAGS, steps=st.integers(1, 4))
    def progress_tasks(self, data: st.DataObject, lag: int, steps: int) -> None:
        for _ in range(steps):
            self.progress(data, lag)

    @precondition(lambda self: any(c.active() for c in self.cases))
    @rule(data=st.data(), lag=LAGS, steps=st.integers(1, 4))
    def progress_more_tasks(self, data: st.DataObject, lag: int, steps: int) -> None:
        for _ in range(steps):  # a second rule, so that work progresses more often than not
            self.progress(data, lag)

    @precondition(lambda self: any(c.tasks for c in self.cases))
    @rule(
        data=st.data(),
        action=st.sampled_from([*(a.value for a in TaskAction), "accept", "on_scene", "done", "done"]),
        own=st.sampled_from([True, True, True, False]),
        reason=st.sampled_from([None, "现场有变化"]),
        passed=st.sampled_from([None, True, False, True]),
        photos=PHOTOS,
        lag=LAGS,
    )
    def task_action(
        self,
        data: st.DataObject,
        action: str,
        own: bool,
        reason: str | None,
        passed: bool | None,
        photos: list[str],
        lag: int,
    ) -> None:
        i = data.draw(st.sampled_from([j for j, c in enumerate(self.cases) if c.tasks]))
        info = data.draw(st.sampled_from(self.cases[i].tasks))
        rid = info.task.responder_id if own else data.draw(st.sampled_from(RIDS))
        extra: dict[str, Any] = {"note": "处置说明"} if photos else {}
        if photos:
            extra["photo_urls"] = photos
        if passed is not None:
            extra["passed"] = passed
        self.cmd(
            i, "task", f"responder:{rid}", lag, reason, task_id=info.task.task_id, task_action=action, **extra
        )

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data(), late=st.booleans())
    def fire_timer(self, data: st.DataObject, late: bool) -> None:
        timer = data.draw(st.sampled_from(sorted(self.pending.values(), key=lambda t: t.timer_id)))
        del self.pending[timer.timer_id]  # marked fired
        self.now = max(self.now, timer.fire_at)
        i = next(j for j, w in enumerate(WORLD) if w[0] == timer.incident_id)
        at = self.now if late else timer.fire_at
        payload = {"timer_id": timer.timer_id, "kind": timer.kind.value, "clock_id": timer.clock_id}
        self.apply(
            i,
            Command(
                "timer",
                timer.incident_id,
                f"timer:{timer.timer_id}",
                TIMER_ACTOR,
                at,
                None,
                {**payload, "task_id": timer.task_id},
            ),
        )

    @rule(i=CASE, passed=st.booleans(), reason=st.sampled_from([None, "视频中仍可见"]), lag=LAGS)
    def camera_verify(self, i: int, passed: bool, reason: str | None, lag: int) -> None:
        self.cmd(i, "verify", OPERATOR, lag, reason, passed=passed)

    @rule(i=CASE, actor=ACTORS)
    def operator_resolve(self, i: int, actor: str) -> None:
        self.cmd(i, "resolve", actor)

    @rule(i=CASE, reason=st.sampled_from([None, "", "误报", "误报"]), actor=ACTORS, rare=RARE)
    def cancel(self, i: int, reason: str | None, actor: str, rare: bool) -> None:
        if rare:  # cancelling ends a case for good: keep it rare, or nothing gets far
            self.cmd(i, "cancel", actor, 0, reason)

    @rule(i=CASE, j=CASE, actor=ACTORS, rare=RARER)
    def merge(self, i: int, j: int, actor: str, rare: bool) -> None:
        if rare:
            self.cmd(i, "merge", actor, into=WORLD[j][0], match={"family": "test"})

    @rule(
        i=CASE,
        actor=st.sampled_from([RESIDENT, RESIDENT, OPERATOR]),
        fixed=st.booleans(),
        satisfied=st.booleans(),
        rating=st.sampled_from([None, 1, 5, 9]),
    )
    def feedback(self, i: int, actor: str, fixed: bool, satisfied: bool, rating: int | None) -> None:
        self.cmd(
            i, "feedback", actor, tracking_no=f"TRK-{i}", fixed=fixed, satisfied=satisfied, rating=rating
        )

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def only_legal_transitions_and_every_change_has_its_event(self) -> None:
        for case, events in zip(self.cases, self.events, strict=True):
            assert replay_incident(events) is case.incident.state
            assert replay_tasks(events) == {t.task.task_id: t.task.state for t in case.tasks}

    @invariant()
    def versions_and_time(self) -> None:
        for case, events in zip(self.cases, self.events, strict=True):
            assert [e.version for e in events] == list(range(1, len(events) + 1))
            assert case.version == len(events)
            assert all(a.at <= b.at for a, b in itertools.pairwise(events)), "an event went back in time"
            assert len({e.event_id for e in events}) == len(events)
            last = events[-1].at
            assert all(c.started_at <= last for c in case.clocks)
            assert all(t.task.updated_at <= last for t in case.tasks)

    @invariant()
    def nothing_closes_without_verification(self) -> None:
        for events in self.events:
            verified = False
            for e in events:
                if e.type in ("incident.verify_fail", "incident.reopen"):
                    verified = False
                elif e.type == "incident.verify_pass":
                    verified = True
                elif e.type == "incident.close":
                    assert verified, "closed without verify_pass in this round"

    @invariant()
    def one_active_task_per_responder_and_busy_mirrors_it(self) -> None:
        active = Counter(t.task.responder_id for c in self.cases for t in c.active())
        assert all(n == 1 for n in active.values()), active
        assert self.busy == set(active)

    @invariant()
    def tasks_and_clocks_fit_the_incident_state(self) -> None:
        for case, events in zip(self.cases, self.events, strict=True):
            state = case.incident.state
            response = case.active(TaskKind.RESPONSE)
            verification = case.active(TaskKind.VERIFICATION)
            assert len(verification) <= 1
            assert all(t.round == case.round for t in case.active())
            if state in (S.CLOSED, S.CANCELLED, S.MERGED):
                assert not case.active() and case.clocks == ()
            if state in (S.NEW, S.REOPENED, S.RESOLVED, S.VERIFIED):
                assert not response
            if state is not S.RESOLVED:
                assert not verification
            for c in case.clocks:
                expected = 0 if c.step == Step.STATUTORY else case.round
                assert c.clock_id == clock_id_for(case.incident.incident_id, c.step, c.task_id, expected)
                if c.task_id is not None:
                    assert case.task(c.task_id).task.state in ACTIVE_TASK_STATES
            steps = Counter((c.step, c.task_id) for c in case.clocks)
            assert all(n == 1 for n in steps.values())
            escalations = [e.data["escalation_id"] for e in events if e.type == "incident.escalated"]
            assert len(escalations) == len(set(escalations)), "an escalation was reported twice"

    @invariant()
    def pending_offer_expiry_only_for_offered_tasks(self) -> None:
        for t in self.pending.values():
            if t.kind is TimerKind.OFFER_EXPIRY:
                case = self.cases[next(j for j, w in enumerate(WORLD) if w[0] == t.incident_id)]
                assert t.task_id is not None and case.task(t.task_id).task.state is TaskState.OFFERED


CaseMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCaseMachine = CaseMachine.TestCase


def test_dispatch_on_a_resolved_incident_sends_the_check_again() -> None:
    """Nobody was free to verify: once one is, the operator's dispatch offers the check."""
    run = grid_run(grid_workers=(), candidates=(G2,))
    run.resolved()
    assert run.case.incident.state is S.RESOLVED and not run.case.active(TaskKind.VERIFICATION)
    run.candidates = ()
    with pytest.raises(IllegalTransition, match="no grid worker"):
        run.do("dispatch")
    run.candidates = (G2,)  # the worker who did the job is free again and may check it
    out = run.do("dispatch")
    [check] = out.case.active(TaskKind.VERIFICATION)
    assert check.task.responder_id == "G-2" and out.case.incident.state is S.RESOLVED
    with pytest.raises(IllegalTransition, match="already out"):
        run.do("dispatch")


def test_an_operator_splits_a_merged_incident_off_again() -> None:
    target = Run()
    source = Run()
    source.case = replace(source.case, incident=replace(source.case.incident, incident_id="INC-2"))
    merged = source.do("merge", into="INC-1")
    assert merged.case.incident.state is S.MERGED
    with pytest.raises(IllegalTransition, match="operators"):
        target.do("split", actor="responder:P-1", **{"from": "INC-2"})
    out = target.do("split", **{"from": "INC-2"})
    [forward] = of(out, Forward)
    assert forward.command.action == "unmerge" and forward.command.incident_id == "INC-2"
    with pytest.raises(IllegalTransition, match="not merged into"):
        source.run(replace(forward.command, data={"from": "INC-9"}))
    back = source.run(forward.command)
    assert back.case.incident.state is S.NEW and back.case.merged_into is None
    assert back.case.clock("dispatch") is not None


def test_operators_keep_notes_on_the_timeline() -> None:
    run = Run()
    out = run.do("note", text="  已电话联系物业，物业称马上处理  ")
    assert types(out) == ["incident.note"] and out.events[0].data["text"] == "已电话联系物业，物业称马上处理"
    assert not out.events[0].public and out.case.incident.state is S.NEW
    with pytest.raises(IllegalTransition, match="text"):
        run.do("note", text=" ")
    with pytest.raises(IllegalTransition, match="operators"):
        run.do("note", actor="responder:P-1", text="我来记一笔")
