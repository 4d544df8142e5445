"""The states an incident and a task pass through, with the words the screens show for them.

Shared vocabulary: the dispatcher's lifecycles (`dispatcher.core.lifecycle`, `dispatcher.core.task`) move
between these states; events carry them; the console, the read model and the simulator read them.
Which transitions are legal is the lifecycles' business, not this module's.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class IncidentState(StrEnum):
    NEW = "new"
    DISPATCHED = "dispatched"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    VERIFIED = "verified"
    CLOSED = "closed"
    REOPENED = "reopened"
    CANCELLED = "cancelled"
    MERGED = "merged"


OPEN_STATES: Final = frozenset(
    {
        IncidentState.NEW,
        IncidentState.DISPATCHED,
        IncidentState.IN_PROGRESS,
        IncidentState.REOPENED,
        IncidentState.RESOLVED,
        IncidentState.VERIFIED,
    }
)


INCIDENT_STATE_LABELS: Final = {
    IncidentState.NEW: "待派遣",
    IncidentState.DISPATCHED: "已派遣",
    IncidentState.IN_PROGRESS: "处置中",
    IncidentState.RESOLVED: "已处置待核查",
    IncidentState.VERIFIED: "已核查",
    IncidentState.CLOSED: "已办结",
    IncidentState.REOPENED: "已重启",
    IncidentState.CANCELLED: "已撤销",
    IncidentState.MERGED: "已合并",
}


class TaskState(StrEnum):
    OFFERED = "offered"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"
    EN_ROUTE = "en_route"
    ON_SCENE = "on_scene"
    DONE = "done"
    CANCELLED = "cancelled"


class TaskKind(StrEnum):
    RESPONSE = "response"  # go to the scene and deal with it (处置)
    VERIFICATION = "verification"  # check on site that it was dealt with (网格核查)


ACTIVE_TASK_STATES: Final = frozenset(
    {TaskState.OFFERED, TaskState.ACCEPTED, TaskState.EN_ROUTE, TaskState.ON_SCENE}
)


TERMINAL_TASK_STATES: Final = frozenset(
    {TaskState.DECLINED, TaskState.EXPIRED, TaskState.DONE, TaskState.CANCELLED}
)


TASK_STATE_LABELS: Final = {
    TaskState.OFFERED: "待接单",
    TaskState.ACCEPTED: "已接单",
    TaskState.DECLINED: "已拒绝",
    TaskState.EXPIRED: "超时未接",
    TaskState.EN_ROUTE: "前往途中",
    TaskState.ON_SCENE: "已到场",
    TaskState.DONE: "已完成",
    TaskState.CANCELLED: "已取消",
}


TASK_KIND_LABELS: Final = {TaskKind.RESPONSE: "处置任务", TaskKind.VERIFICATION: "核查任务"}



# `state IN ACTIVE_TASKS_SQL`, in the enum's order: a literal list, so that a query's predicate
# matches the partial unique index tasks_one_active_per_responder's (a parameter could not).
ACTIVE_TASKS_SQL: Final = "(" + ", ".join(f"'{s.value}'" for s in TaskState if s in ACTIVE_TASK_STATES) + ")"
# `status NOT IN CLOSED_INCIDENTS_SQL`: the open incidents, as the partial place index holds them.
CLOSED_INCIDENTS_SQL: Final = (
    "(" + ", ".join(f"'{s.value}'" for s in IncidentState if s not in OPEN_STATES) + ")"
)
