"""The task lifecycle: one guarded transition function, tested rule by rule and statefully."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import hypothesis
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from contracts.states import (
    ACTIVE_TASK_STATES,
    TASK_KIND_LABELS,
    TASK_STATE_LABELS,
    TERMINAL_TASK_STATES,
    TaskKind,
    TaskState,
)
from dispatcher.core.lifecycle import IllegalTransition
from dispatcher.core.task import (
    ALLOWED_ACTORS,
    MAX_NOTE_CHARS,
    MAX_PHOTOS,
    REASON_REQUIRED,
    TRANSITIONS,
    Task,
    TaskAction,
    TaskCommand,
    TaskEvent,
    responder_actor,
    transition_task,
)

T0 = datetime(2026, 11, 22, 1, 30, tzinfo=UTC)
S, A, K = TaskState, TaskAction, TaskKind
RID = "G-0012"
ME = responder_actor(RID)
OPERATOR = "operator:wang"


def actor_for(action: TaskAction) -> str:
    return {A.OFFER: OPERATOR, A.EXPIRE: "system:timer", A.CANCEL: "commander:li"}.get(action, ME)


def reason_for(action: TaskAction) -> str | None:
    return "人在外地，无法前往" if action in REASON_REQUIRED else None


def data_for(action: TaskAction, kind: TaskKind) -> dict[str, Any]:
    return {"passed": True} if (action, kind) == (A.DONE, K.VERIFICATION) else {}


def cmd(
    action: TaskAction,
    *,
    task_id: str = "T-1",
    incident_id: str = "INC-1",
    responder_id: str = RID,
    command_id: str = "cmd-1",
    actor: str | None = None,
    at: datetime = T0,
    reason: str | None = None,
    data: dict[str, Any] | None = None,
) -> TaskCommand:
    return TaskCommand(
        action,
        task_id,
        incident_id,
        responder_id,
        command_id,
        actor_for(action) if actor is None else actor,
        at,
        reason,
        data or {},
    )


def task(
    state: TaskState,
    *,
    kind: TaskKind = K.RESPONSE,
    version: int = 3,
    at: datetime = T0,
    task_id: str = "T-1",
    incident_id: str = "INC-1",
    responder_id: str = RID,
) -> Task:
    return Task(task_id, incident_id, responder_id, kind, state, version, at)


def first_state_for(action: TaskAction) -> TaskState:
    return next(b for (b, a) in TRANSITIONS if a is action and b is not None)


# --- the table itself ---------------------------------------------------------------------


def test_table_shape() -> None:
    assert {k: v for k, v in TRANSITIONS.items() if k[0] is None} == {(None, A.OFFER): S.OFFERED}
    assert all(before is not None for (before, action) in TRANSITIONS if action is not A.OFFER)
    assert not [key for key in TRANSITIONS if key[0] in TERMINAL_TASK_STATES]  # terminal means terminal
    assert ACTIVE_TASK_STATES | TERMINAL_TASK_STATES == set(TaskState)
    assert not ACTIVE_TASK_STATES & TERMINAL_TASK_STATES
    assert ACTIVE_TASK_STATES == {S.OFFERED, S.ACCEPTED, S.EN_ROUTE, S.ON_SCENE}
    assert {before for (before, a) in TRANSITIONS if a is A.CANCEL} == ACTIVE_TASK_STATES
    assert [b for (b, _), after in TRANSITIONS.items() if after is S.DONE] == [S.ON_SCENE]
    assert {b for (b, _), after in TRANSITIONS.items() if after is S.ON_SCENE} == {S.ACCEPTED, S.EN_ROUTE}
    assert set(ALLOWED_ACTORS) == set(TaskAction)
    assert REASON_REQUIRED == {A.DECLINE, A.CANCEL}
    assert set(TASK_KIND_LABELS) == set(TaskKind)


def test_state_labels() -> None:
    assert TASK_STATE_LABELS == {
        S.OFFERED: "待接单",
        S.ACCEPTED: "已接单",
        S.DECLINED: "已拒绝",
        S.EXPIRED: "超时未接",
        S.EN_ROUTE: "前往途中",
        S.ON_SCENE: "已到场",
        S.DONE: "已完成",
        S.CANCELLED: "已取消",
    }


# --- every legal transition ----------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TaskKind))
@pytest.mark.parametrize(
    ("before", "action"), list(TRANSITIONS), ids=lambda v: "none" if v is None else str(v.value)
)
def test_each_legal_transition(before: TaskState | None, action: TaskAction, kind: TaskKind) -> None:
    current = None if before is None else task(before, kind=kind, version=4)
    at = T0 + timedelta(minutes=5)
    data = data_for(action, kind)
    command = cmd(action, at=at, reason=reason_for(action), command_id="c-42", data=data)
    decision = transition_task(current, command, kind if current is None else None)
    after = TRANSITIONS[(before, action)]
    version = 1 if current is None else 5
    assert decision.task == Task("T-1", "INC-1", RID, kind, after, version, at)
    (event,) = decision.events
    assert event == TaskEvent(
        event_id="c-42",
        task_id="T-1",
        incident_id="INC-1",
        responder_id=RID,
        version=version,
        type=f"task.{action.value}",
        actor=actor_for(action),
        at=at,
        state=after,
        reason=reason_for(action),
        data=data,
        kind=kind,
    )


ILLEGAL = [
    (before, action)
    for before in [None, *TaskState]
    for action in TaskAction
    if (before, action) not in TRANSITIONS
]


@pytest.mark.parametrize(("before", "action"), ILLEGAL, ids=lambda v: "none" if v is None else str(v.value))
def test_each_illegal_transition_raises(before: TaskState | None, action: TaskAction) -> None:
    current = None if before is None else task(before)
    with pytest.raises(IllegalTransition, match=action.value):
        transition_task(current, cmd(action, reason="一个理由"), K.RESPONSE)


def test_examples_of_illegal() -> None:
    with pytest.raises(IllegalTransition, match="a new task"):
        transition_task(None, cmd(A.ACCEPT), K.RESPONSE)
    with pytest.raises(IllegalTransition, match="state offered"):
        transition_task(task(S.OFFERED), cmd(A.OFFER))  # offering twice
    with pytest.raises(IllegalTransition, match="state offered"):
        transition_task(task(S.OFFERED), cmd(A.ON_SCENE))  # on scene without accepting
    with pytest.raises(IllegalTransition, match="state en_route"):
        transition_task(task(S.EN_ROUTE), cmd(A.DONE))  # done without being on scene
    with pytest.raises(IllegalTransition, match="state accepted"):
        transition_task(task(S.ACCEPTED), cmd(A.EXPIRE))  # accepted offers never expire
    for terminal in TERMINAL_TASK_STATES:
        with pytest.raises(IllegalTransition, match=f"state {terminal.value}"):
            transition_task(task(terminal), cmd(A.CANCEL, reason="撤销"))


# --- offer and kind --------------------------------------------------------------------------


def test_offer_needs_a_kind() -> None:
    with pytest.raises(IllegalTransition, match="kind"):
        transition_task(None, cmd(A.OFFER))
    assert transition_task(None, cmd(A.OFFER), K.VERIFICATION).task.kind is K.VERIFICATION


def test_kind_given_later_must_match() -> None:
    current = task(S.OFFERED, kind=K.VERIFICATION)
    with pytest.raises(IllegalTransition, match="verification task"):
        transition_task(current, cmd(A.ACCEPT), K.RESPONSE)
    assert transition_task(current, cmd(A.ACCEPT), K.VERIFICATION).task.kind is K.VERIFICATION
    assert transition_task(current, cmd(A.ACCEPT)).task.kind is K.VERIFICATION  # kept from the task


@pytest.mark.parametrize(
    ("field", "value"), [("task_id", "T-2"), ("incident_id", "INC-2"), ("responder_id", "G-0099")]
)
def test_mismatched_ids_refused(field: str, value: str) -> None:
    kwargs: dict[str, Any] = {field: value}
    if field == "responder_id":
        kwargs["actor"] = responder_actor(value)  # even the other responder's own command
    with pytest.raises(IllegalTransition, match=value):
        transition_task(task(S.OFFERED), cmd(A.ACCEPT, **kwargs))


# --- reasons ---------------------------------------------------------------------------------


@pytest.mark.parametrize("action", sorted(REASON_REQUIRED))
@pytest.mark.parametrize("reason", [None, "", "   ", "\n\t"])
def test_reason_required(action: TaskAction, reason: str | None) -> None:
    before = first_state_for(action)
    with pytest.raises(IllegalTransition, match="reason"):
        transition_task(task(before), cmd(action, reason=reason))
    assert transition_task(task(before), cmd(action, reason="正在处理另一起警情")).events[0].reason == (
        "正在处理另一起警情"
    )


def test_reason_optional_elsewhere_but_recorded() -> None:
    assert transition_task(task(S.OFFERED), cmd(A.ACCEPT, reason="马上到")).events[0].reason == "马上到"
    assert transition_task(task(S.OFFERED), cmd(A.ACCEPT)).events[0].reason is None


# --- who may do what -------------------------------------------------------------------------

ACTORS = (
    ME,
    responder_actor("G-0099"),  # another responder
    "operator:wang",
    "commander:li",
    "system:timer",
    "resident:1029",
    "operator:",  # no id
    "wang",  # no role
)
EXPECTED_ALLOWED: dict[TaskAction, set[str]] = {
    A.OFFER: {"operator:wang", "commander:li", "system:timer"},
    A.ACCEPT: {ME},
    A.DECLINE: {ME},
    A.EXPIRE: {"system:timer"},
    A.EN_ROUTE: {ME},
    A.ON_SCENE: {ME},
    A.DONE: {ME},
    A.CANCEL: {"operator:wang", "commander:li", "system:timer"},
}


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize(
    ("before", "action"), list(TRANSITIONS), ids=lambda v: "none" if v is None else str(v.value)
)
def test_actor_rules(before: TaskState | None, action: TaskAction, actor: str) -> None:
    current = None if before is None else task(before)
    command = cmd(action, actor=actor, reason=reason_for(action))
    if actor in EXPECTED_ALLOWED[action]:
        assert transition_task(current, command, K.RESPONSE).events[0].actor == actor
    else:
        with pytest.raises(IllegalTransition, match=r"actor|may"):
            transition_task(current, command, K.RESPONSE)


def test_actor_messages_are_clear() -> None:
    with pytest.raises(IllegalTransition, match=f"only responder {RID} may accept"):
        transition_task(task(S.OFFERED), cmd(A.ACCEPT, actor=responder_actor("G-0099")))
    with pytest.raises(IllegalTransition, match="operator:wang may not accept"):
        transition_task(task(S.OFFERED), cmd(A.ACCEPT, actor="operator:wang"))
    with pytest.raises(IllegalTransition, match=f"{ME} may not cancel"):
        transition_task(task(S.ACCEPTED), cmd(A.CANCEL, actor=ME, reason="不想去了"))


# --- verification, notes and photos ------------------------------------------------------------


def test_verification_done_carries_passed() -> None:
    current = task(S.ON_SCENE, kind=K.VERIFICATION)
    ok = transition_task(current, cmd(A.DONE, data={"passed": True, "note": "油烟已整改"}))
    assert ok.task.state is S.DONE and ok.events[0].data["passed"] is True
    failed = transition_task(current, cmd(A.DONE, reason="油烟仍在", data={"passed": False}))
    assert failed.events[0].reason == "油烟仍在" and failed.events[0].data["passed"] is False
    with pytest.raises(IllegalTransition, match="failed verification needs a reason"):
        transition_task(current, cmd(A.DONE, data={"passed": False}))
    with pytest.raises(IllegalTransition, match="failed verification needs a reason"):
        transition_task(current, cmd(A.DONE, reason="  ", data={"passed": False}))
    for bad in ({}, {"passed": None}, {"passed": 1}, {"passed": "yes"}):
        with pytest.raises(IllegalTransition, match="passed"):
            transition_task(current, cmd(A.DONE, data=bad))


def test_passed_only_on_a_verification_done() -> None:
    with pytest.raises(IllegalTransition, match="passed"):
        transition_task(task(S.ON_SCENE, kind=K.RESPONSE), cmd(A.DONE, data={"passed": True}))
    with pytest.raises(IllegalTransition, match="passed"):
        transition_task(task(S.OFFERED, kind=K.VERIFICATION), cmd(A.ACCEPT, data={"passed": True}))
    assert transition_task(task(S.ON_SCENE, kind=K.RESPONSE), cmd(A.DONE)).task.state is S.DONE


@pytest.mark.parametrize(("before", "action"), [(S.OFFERED, A.DECLINE), (S.ACCEPTED, A.EN_ROUTE),
                                                (S.EN_ROUTE, A.ON_SCENE), (S.ON_SCENE, A.DONE)])  # fmt: skip
def test_note_and_photos_ride_in_data(before: TaskState, action: TaskAction) -> None:
    data = {
        "note": "已到现场，" + "情" * (MAX_NOTE_CHARS - 5),
        "photo_urls": [f"https://app.example/p/{i}.jpg" for i in range(MAX_PHOTOS - 1)] + ["http://x.cn/a"],
    }
    d = transition_task(task(before), cmd(action, reason=reason_for(action), data=data))
    assert d.events[0].data == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"note": "情" * (MAX_NOTE_CHARS + 1)}, "at most 500"),
        ({"note": 42}, "note must be text"),
        ({"note": None}, "note must be text"),
        ({"photo_urls": "http://app.example/p/1.jpg"}, "list of URLs"),
        ({"photo_urls": [f"http://app.example/p/{i}.jpg" for i in range(MAX_PHOTOS + 1)]}, "at most 9"),
        ({"photo_urls": ["ftp://app.example/p/1.jpg"]}, r"photo_urls\[0\] must be an http"),
        ({"photo_urls": ["http://ok.example/1.jpg", "javascript:alert(1)"]}, r"photo_urls\[1\]"),
        ({"photo_urls": ["http:///no-host.jpg"]}, "http"),
        ({"photo_urls": ["/relative/1.jpg"]}, "http"),
        ({"photo_urls": ["http://app.example/a b.jpg"]}, "http"),
        ({"photo_urls": [None]}, "URL string"),
        ({"photo_urls": ["http://[::1"]}, "not a valid URL"),
        ({"photo_urls": ["http://app.example/" + "a" * 3000]}, "longer than"),
    ],
)
def test_bad_notes_and_photos_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(IllegalTransition, match=message):
        transition_task(task(S.ON_SCENE), cmd(A.DONE, data=data))


def test_other_data_passes_through() -> None:
    data = {"eta_s": 180, "role": "volunteer", "photo_urls": []}
    assert transition_task(None, cmd(A.OFFER, data=data), K.RESPONSE).events[0].data == data


# --- versions, clocks, purity ------------------------------------------------------------------


def test_version_and_one_event_per_transition_along_a_full_task() -> None:
    steps = [A.OFFER, A.ACCEPT, A.EN_ROUTE, A.ON_SCENE, A.DONE]
    current: Task | None = None
    for i, action in enumerate(steps, start=1):
        d = transition_task(
            current, cmd(action, at=T0 + timedelta(minutes=i), command_id=f"c-{i}"), K.RESPONSE
        )
        assert d.task.version == i == d.events[0].version and len(d.events) == 1
        assert d.events[0].event_id == f"c-{i}" and d.events[0].type == f"task.{action.value}"
        current = d.task
    assert current is not None and current.state is S.DONE and current.updated_at == T0 + timedelta(minutes=5)


def test_late_command_is_clamped_to_the_task_time() -> None:
    updated = T0 + timedelta(minutes=10)
    d = transition_task(task(S.OFFERED, at=updated), cmd(A.ACCEPT, at=T0))
    assert d.task.updated_at == updated == d.events[0].at
    later = updated + timedelta(seconds=1)
    d = transition_task(task(S.OFFERED, at=updated), cmd(A.ACCEPT, at=later))
    assert d.task.updated_at == later == d.events[0].at


def test_transition_does_not_mutate_its_inputs() -> None:
    current = task(S.OFFERED, at=T0 + timedelta(minutes=1))
    command = cmd(A.ACCEPT, at=T0)
    transition_task(current, command)
    assert current == task(S.OFFERED, at=T0 + timedelta(minutes=1)) and command.at == T0


def test_responder_actor() -> None:
    assert responder_actor("V-00042") == "responder:V-00042"


# --- stateful: random commands over a few tasks -----------------------------------------------

TASKS = {"T-a": ("R-a", K.RESPONSE), "T-b": ("R-b", K.RESPONSE), "T-c": ("R-a", K.VERIFICATION)}
Step = tuple[TaskState | None, TaskAction, TaskState]
ACTOR_CHOICES = ("self", "other", "operator:wang", "commander:li", "system:timer", "resident:9")
REASONS = st.sampled_from([None, "", "  ", "不在附近"])
DATA = st.sampled_from(
    [
        {},
        {"passed": True},
        {"passed": False},
        {"note": "ok"},
        {"note": "x" * 501},
        {"photo_urls": ["ftp://x"]},
    ]
)


def allowed_actors(action: TaskAction, responder_id: str) -> set[str]:
    return {responder_actor(responder_id) if a == ME else a for a in EXPECTED_ALLOWED[action]}


def expected_legal(current: Task | None, kind: TaskKind, command: TaskCommand) -> bool:
    """An independent model of every guard."""
    before = None if current is None else current.state
    if (before, command.action) not in TRANSITIONS:
        return False
    has_reason = bool(command.reason and command.reason.strip())
    if command.action in REASON_REQUIRED and not has_reason:
        return False
    if command.actor not in allowed_actors(command.action, command.responder_id):
        return False
    data = command.data
    if len(data.get("note", "")) > MAX_NOTE_CHARS or data.get("photo_urls", []):
        return False
    verifying = kind is K.VERIFICATION and command.action is A.DONE
    if "passed" in data and not verifying:
        return False
    return not verifying or data.get("passed") is True or (data.get("passed") is False and has_reason)


class TaskMachine(RuleBasedStateMachine):
    """Drives random (mostly illegal) and random legal commands; checks the audit trail."""

    def __init__(self) -> None:
        super().__init__()
        self.current: dict[str, Task | None] = dict.fromkeys(TASKS)
        self.events: dict[str, list[TaskEvent]] = {t: [] for t in TASKS}
        self.applied: dict[str, list[Step]] = {t: [] for t in TASKS}
        self.n = 0

    def _command(
        self,
        task_id: str,
        action: TaskAction,
        actor: str,
        reason: str | None,
        data: dict[str, Any],
        offset: int,
    ) -> TaskCommand:
        self.n += 1
        responder_id = TASKS[task_id][0]
        if actor == "self":
            actor = responder_actor(responder_id)
        elif actor == "other":
            actor = responder_actor("R-zz")
        return TaskCommand(
            action, task_id, "INC-1", responder_id, f"cmd-{self.n}", actor, T0 + timedelta(seconds=offset),
            reason, data,
        )  # fmt: skip

    def _apply(self, task_id: str, command: TaskCommand) -> None:
        before_task = self.current[task_id]
        before = None if before_task is None else before_task.state
        kind = TASKS[task_id][1]
        if not expected_legal(before_task, kind, command):
            with pytest.raises(IllegalTransition):
                transition_task(before_task, command, kind)
            return
        d = transition_task(before_task, command, kind)
        after = d.task.state
        assert after is TRANSITIONS[(before, command.action)]
        assert d.task.version == (0 if before_task is None else before_task.version) + 1
        (event,) = d.events
        assert (event.event_id, event.actor, event.reason) == (
            command.command_id,
            command.actor,
            command.reason,
        )
        if before_task is not None:
            assert event.at == max(command.at, before_task.updated_at)
        self.current[task_id] = d.task
        self.events[task_id].append(event)
        self.applied[task_id].append((before, command.action, after))
        hypothesis.event(f"reached {after.value}")

    @rule(
        task_id=st.sampled_from(list(TASKS)),
        action=st.sampled_from(list(TaskAction)),
        actor=st.sampled_from(ACTOR_CHOICES),
        reason=REASONS,
        data=DATA,
        offset=st.integers(0, 86_400),
    )
    def random_command(
        self,
        task_id: str,
        action: TaskAction,
        actor: str,
        reason: str | None,
        data: dict[str, Any],
        offset: int,
    ) -> None:
        self._apply(task_id, self._command(task_id, action, actor, reason, data, offset))

    @rule(task_id=st.sampled_from(list(TASKS)), draw=st.data(), offset=st.integers(0, 86_400))
    def legal_command(self, task_id: str, draw: st.DataObject, offset: int) -> None:
        """A command the table allows, by an allowed actor with what it needs; mostly forward."""
        current = self.current[task_id]
        before = None if current is None else current.state
        choices = sorted(a for (b, a) in TRANSITIONS if b == before) or list(TaskAction)
        forward = [a for a in choices if a not in (A.CANCEL, A.DECLINE, A.EXPIRE)] or choices
        action = draw.draw(
            st.sampled_from(forward) if draw.draw(st.integers(0, 3)) else st.sampled_from(choices)
        )
        actor = {A.OFFER: "system:timer", A.EXPIRE: "system:timer", A.CANCEL: "operator:wang"}.get(
            action, "self"
        )
        kind = TASKS[task_id][1]
        passed = draw.draw(st.booleans())
        data = {"passed": passed} if (action, kind) == (A.DONE, K.VERIFICATION) else {"note": "现场已处理"}
        self._apply(task_id, self._command(task_id, action, actor, "现场核实", data, offset))

    @rule(owner=st.sampled_from(list(TASKS)), other=st.sampled_from(list(TASKS)), action=st.sampled_from(A))
    def wrong_task(self, owner: str, other: str, action: TaskAction) -> None:
        current = self.current[owner]
        if current is None or other == owner:
            return
        with pytest.raises(IllegalTransition):
            transition_task(current, self._command(other, action, "self", "理由", {}, 0))

    @invariant()
    def audit_trail_is_complete(self) -> None:
        for task_id, (responder_id, kind) in TASKS.items():
            current, events = self.current[task_id], self.events[task_id]
            version = 0 if current is None else current.version
            assert len(events) == version  # every change has exactly one event
            assert [e.version for e in events] == list(range(1, version + 1))
            assert all(a.at <= b.at for a, b in pairwise(events))  # clocks never run backwards
            assert all((e.task_id, e.responder_id, e.kind) == (task_id, responder_id, kind) for e in events)
            if current is not None:
                assert (current.state, current.updated_at) == (events[-1].state, events[-1].at)
                assert current.kind is kind

    @invariant()
    def only_table_transitions(self) -> None:
        for task_id in TASKS:
            applied = self.applied[task_id]
            for i, (before, action, after) in enumerate(applied):
                assert TRANSITIONS[(before, action)] is after
                if before in TERMINAL_TASK_STATES:
                    pytest.fail(f"{task_id} left terminal state {before}")
                if i:
                    assert applied[i - 1][2] is before  # the chain is unbroken
            if applied:
                assert applied[0][0] is None and applied[0][1] is A.OFFER


TaskMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
TestTaskMachine = TaskMachine.TestCase
