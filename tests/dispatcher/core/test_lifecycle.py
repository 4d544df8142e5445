"""The incident lifecycle: one guarded transition function, tested rule by rule and statefully."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import hypothesis
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from contracts.commands import Command
from contracts.states import INCIDENT_STATE_LABELS, OPEN_STATES, IncidentState
from dispatcher.core.lifecycle import (
    PUBLIC_ACTIONS,
    REASON_REQUIRED,
    TRANSITIONS,
    Action,
    Event,
    IllegalTransition,
    Incident,
    transition,
)

T0 = datetime(2026, 11, 22, 1, 30, tzinfo=UTC)
S, A = IncidentState, Action
TERMINAL = (S.CANCELLED,)  # merged can only be split off again


def cmd(
    action: Action,
    *,
    incident_id: str = "INC-1",
    at: datetime = T0,
    reason: str | None = None,
    actor: str = "operator:wang",
    command_id: str = "cmd-1",
    data: dict[str, object] | None = None,
) -> Command:
    return Command(action, incident_id, command_id, actor, at, reason, data or {})


def incident(
    state: IncidentState, version: int = 3, at: datetime = T0, incident_id: str = "INC-1"
) -> Incident:
    return Incident(incident_id, state, version, at)


def reason_for(action: Action) -> str | None:
    return "居民反映问题未解决" if action in REASON_REQUIRED else None


# --- the table itself ---------------------------------------------------------------------


def test_table_shape() -> None:
    assert {k: v for k, v in TRANSITIONS.items() if k[0] is None} == {(None, A.FILE): S.NEW}
    assert all(before is not None for (before, action) in TRANSITIONS if action is not A.FILE)
    # Nothing closes without verification, and terminal states accept nothing.
    assert [before for (before, _), after in TRANSITIONS.items() if after is S.CLOSED] == [S.VERIFIED]
    assert not [key for key in TRANSITIONS if key[0] in TERMINAL]
    assert [key for key in TRANSITIONS if key[0] is S.MERGED] == [(S.MERGED, A.SPLIT)]
    assert set(INCIDENT_STATE_LABELS) == set(IncidentState)
    assert S.CLOSED not in OPEN_STATES and not set(TERMINAL) & OPEN_STATES


# --- every legal transition ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "action"), list(TRANSITIONS), ids=lambda v: "none" if v is None else str(v.value)
)
def test_each_legal_transition(before: IncidentState | None, action: Action) -> None:
    current = None if before is None else incident(before, version=4, at=T0)
    at = T0 + timedelta(minutes=5)
    decision = transition(current, cmd(action, at=at, reason=reason_for(action), command_id="c-42"))
    after = TRANSITIONS[(before, action)]
    expected_version = 1 if current is None else 5
    assert decision.incident == Incident("INC-1", after, expected_version, at)
    (event,) = decision.events
    assert event == Event(
        event_id="c-42",
        incident_id="INC-1",
        version=expected_version,
        type=f"incident.{action.value}",
        actor="operator:wang",
        at=at,
        state=after,
        public=action in PUBLIC_ACTIONS,
        reason=reason_for(action),
        data={},
    )


ILLEGAL = [
    (before, action)
    for before in [None, *IncidentState]
    for action in Action
    if (before, action) not in TRANSITIONS
]


@pytest.mark.parametrize(("before", "action"), ILLEGAL, ids=lambda v: "none" if v is None else str(v.value))
def test_each_illegal_transition_raises(before: IncidentState | None, action: Action) -> None:
    current = None if before is None else incident(before)
    with pytest.raises(IllegalTransition, match=action.value):
        transition(current, cmd(action, reason="一个理由"))


def test_examples_of_illegal() -> None:
    with pytest.raises(IllegalTransition, match="a new incident"):
        transition(None, cmd(A.DISPATCH))
    with pytest.raises(IllegalTransition, match="state new"):
        transition(incident(S.NEW), cmd(A.FILE))  # filing twice
    with pytest.raises(IllegalTransition, match="state resolved"):
        transition(incident(S.RESOLVED), cmd(A.CLOSE))  # no close without verification
    with pytest.raises(IllegalTransition):
        transition(incident(S.CANCELLED), cmd(A.REOPEN, reason="x"))


# --- reasons, versions, clocks, identities -------------------------------------------------


@pytest.mark.parametrize("action", sorted(REASON_REQUIRED))
@pytest.mark.parametrize("reason", [None, "", "   ", "\n\t"])
def test_reason_required(action: Action, reason: str | None) -> None:
    before = next(b for (b, a) in TRANSITIONS if a is action)
    with pytest.raises(IllegalTransition, match="reason"):
        transition(incident(before), cmd(action, reason=reason))  # type: ignore[arg-type]
    assert transition(incident(before), cmd(action, reason="核查未通过")).events[0].reason == "核查未通过"  # type: ignore[arg-type]


def test_reason_optional_elsewhere_but_recorded() -> None:
    d = transition(incident(S.NEW), cmd(A.DISPATCH, reason="就近派遣"))
    assert d.events[0].reason == "就近派遣"
    assert transition(incident(S.NEW), cmd(A.DISPATCH)).events[0].reason is None


def test_version_increments_by_one_along_a_full_loop() -> None:
    steps = [A.FILE, A.DISPATCH, A.DISPATCH, A.START, A.RESOLVE, A.VERIFY_FAIL, A.DISPATCH, A.START,
             A.RESOLVE, A.VERIFY_PASS, A.CLOSE, A.REOPEN, A.CANCEL]  # fmt: skip
    current: Incident | None = None
    for i, action in enumerate(steps, start=1):
        d = transition(current, cmd(action, at=T0 + timedelta(minutes=i), reason=reason_for(action)))
        assert d.incident.version == i == d.events[0].version
        current = d.incident
    assert current is not None and current.state is S.CANCELLED


def test_event_carries_actor_time_reason_public_and_data() -> None:
    at = T0 + timedelta(hours=1)
    data: dict[str, object] = {"responders": ["P-0007", "G-0012"]}
    d = transition(
        incident(S.RESOLVED),
        cmd(A.VERIFY_FAIL, actor="grid_worker:G-0012", at=at, reason="油烟仍在", command_id="c-9", data=data),
    )
    (e,) = d.events
    assert (e.actor, e.at, e.reason) == ("grid_worker:G-0012", at, "油烟仍在")
    assert (e.event_id, e.data) == ("c-9", data)
    assert e.public is False  # a failed check is internal; reopen and close are public
    assert e.type == "incident.verify_fail" and e.state is S.REOPENED
    assert transition(incident(S.NEW), cmd(A.DISPATCH)).events[0].public is True
    assert transition(incident(S.RESOLVED), cmd(A.VERIFY_PASS)).events[0].public is False


def test_late_command_is_clamped_to_the_incident_time() -> None:
    updated = T0 + timedelta(minutes=10)
    d = transition(incident(S.NEW, at=updated), cmd(A.DISPATCH, at=T0))
    assert d.incident.updated_at == updated == d.events[0].at
    later = updated + timedelta(seconds=1)
    d = transition(incident(S.NEW, at=updated), cmd(A.DISPATCH, at=later))
    assert d.incident.updated_at == later == d.events[0].at


def test_mismatched_incident_id_refused() -> None:
    with pytest.raises(IllegalTransition, match="INC-2"):
        transition(incident(S.NEW, incident_id="INC-1"), cmd(A.DISPATCH, incident_id="INC-2"))


def test_transition_does_not_mutate_its_inputs() -> None:
    current = incident(S.NEW)
    command = cmd(A.DISPATCH, at=T0 + timedelta(minutes=1))
    transition(current, command)
    assert current == incident(S.NEW) and command.at == T0 + timedelta(minutes=1)


# --- stateful: random commands over a few incidents -----------------------------------------

IDS = ("INC-a", "INC-b", "INC-c")
Step = tuple[IncidentState | None, Action, IncidentState]
REASONS = st.sampled_from([None, "", "  ", "群众反映未解决"])


class LifecycleMachine(RuleBasedStateMachine):
    """Drives random (mostly illegal) and random legal commands; checks the audit trail."""

    def __init__(self) -> None:
        super().__init__()
        self.current: dict[str, Incident | None] = dict.fromkeys(IDS)
        self.events: dict[str, list[Event]] = {i: [] for i in IDS}
        self.applied: dict[str, list[Step]] = {i: [] for i in IDS}
        self.n = 0

    def _command(self, incident_id: str, action: Action, reason: str | None, offset_s: int) -> Command:
        self.n += 1
        return cmd(
            action,
            incident_id=incident_id,
            at=T0 + timedelta(seconds=offset_s),
            reason=reason,
            command_id=f"cmd-{self.n}",
            actor=f"actor-{self.n % 3}",
        )

    def _apply(self, incident_id: str, command: Command) -> None:
        before_inc = self.current[incident_id]
        before = None if before_inc is None else before_inc.state
        legal = (before, command.action) in TRANSITIONS and (
            command.action not in REASON_REQUIRED or bool(command.reason and command.reason.strip())
        )
        if not legal:
            with pytest.raises(IllegalTransition):
                transition(before_inc, command)
            return
        d = transition(before_inc, command)
        after = d.incident.state
        assert after is TRANSITIONS[(before, command.action)]
        assert d.incident.version == (0 if before_inc is None else before_inc.version) + 1
        assert len(d.events) == 1
        (event,) = d.events
        assert event.event_id == command.command_id and event.actor == command.actor
        assert event.reason == command.reason
        if before_inc is not None:
            assert event.at == max(command.at, before_inc.updated_at)
        self.current[incident_id] = d.incident
        self.events[incident_id].append(event)
        self.applied[incident_id].append((before, command.action, after))
        hypothesis.event(f"reached {after.value}")

    @rule(
        incident_id=st.sampled_from(IDS),
        action=st.sampled_from(list(Action)),
        reason=REASONS,
        offset_s=st.integers(0, 86_400),
    )
    def random_command(self, incident_id: str, action: Action, reason: str | None, offset_s: int) -> None:
        self._apply(incident_id, self._command(incident_id, action, reason, offset_s))

    @rule(incident_id=st.sampled_from(IDS), data=st.data(), offset_s=st.integers(0, 86_400))
    def legal_command(self, incident_id: str, data: st.DataObject, offset_s: int) -> None:
        """A command the table allows, with a reason where one is needed; mostly moves forward."""
        current = self.current[incident_id]
        before = None if current is None else current.state
        choices = sorted(a for (b, a) in TRANSITIONS if b == before)
        if not choices:  # terminal: try anything, it must be refused
            choices = list(Action)
        forward = [a for a in choices if a not in (A.CANCEL, A.MERGE)] or choices
        action = data.draw(
            st.sampled_from(forward) if data.draw(st.integers(0, 9)) else st.sampled_from(choices)
        )
        self._apply(incident_id, self._command(incident_id, action, "现场核实情况", offset_s))

    @rule(owner=st.sampled_from(IDS), other=st.sampled_from(IDS), action=st.sampled_from(list(Action)))
    def wrong_incident(self, owner: str, other: str, action: Action) -> None:
        current = self.current[owner]
        if current is None or other == owner:
            return
        with pytest.raises(IllegalTransition):
            transition(current, self._command(other, action, "理由", 0))

    @invariant()
    def audit_trail_is_complete(self) -> None:
        for incident_id in IDS:
            current, events = self.current[incident_id], self.events[incident_id]
            version = 0 if current is None else current.version
            assert len(events) == version  # every change has exactly one event
            assert [e.version for e in events] == list(range(1, version + 1))
            assert all(a.at <= b.at for a, b in pairwise(events))  # clocks
            assert all(e.incident_id == incident_id for e in events)
            if current is not None:
                assert (current.state, current.updated_at) == (events[-1].state, events[-1].at)

    @invariant()
    def only_table_transitions(self) -> None:
        for incident_id in IDS:
            applied = self.applied[incident_id]
            for i, (before, action, after) in enumerate(applied):
                assert TRANSITIONS[(before, action)] is after
                if after is S.CLOSED:
                    assert before is S.VERIFIED  # nothing closes without verification
                if before in TERMINAL:
                    pytest.fail(f"{incident_id} left terminal state {before}")
                if i:
                    assert applied[i - 1][2] is before  # the chain is unbroken
            if applied:
                assert applied[0][0] is None and applied[0][1] is A.FILE


LifecycleMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=60, deadline=None)
TestLifecycleMachine = LifecycleMachine.TestCase
