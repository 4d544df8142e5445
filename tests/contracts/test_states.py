"""The shared state vocabulary: every state has one screen label, the task states split into active
and terminal, and the SQL lists queries use match the partial indexes they must search."""

from __future__ import annotations

import re
from enum import StrEnum

import asyncpg
import pytest

from contracts.states import (
    ACTIVE_TASK_STATES,
    ACTIVE_TASKS_SQL,
    CLOSED_INCIDENTS_SQL,
    INCIDENT_STATE_LABELS,
    OPEN_STATES,
    TASK_KIND_LABELS,
    TASK_STATE_LABELS,
    TERMINAL_TASK_STATES,
    IncidentState,
    TaskKind,
    TaskState,
)
from infra.db import MIGRATIONS_DIR

MIGRATIONS = "\n".join(p.read_text(encoding="utf-8") for p in sorted(MIGRATIONS_DIR.glob("*.sql")))


def index_predicate(name: str) -> str:
    """The WHERE clause of partial index `name` as the migrations create it (whitespace folded)."""
    found = re.findall(rf"CREATE (?:UNIQUE )?INDEX {name} ON [^;]*? WHERE ([^;]*);", MIGRATIONS, re.S)
    assert len(found) == 1, f"index {name} is created {len(found)} times"
    return " ".join(found[0].split())


@pytest.mark.parametrize(
    ("labels", "states"),
    [(INCIDENT_STATE_LABELS, IncidentState), (TASK_STATE_LABELS, TaskState), (TASK_KIND_LABELS, TaskKind)],
)
def test_every_state_has_its_own_label(labels: dict[str, str], states: type[StrEnum]) -> None:
    assert set(labels) == set(states)
    assert len(set(labels.values())) == len(labels) and all(labels.values())


def test_each_task_state_is_either_active_or_terminal() -> None:
    assert ACTIVE_TASK_STATES.isdisjoint(TERMINAL_TASK_STATES)
    assert ACTIVE_TASK_STATES | TERMINAL_TASK_STATES == set(TaskState)


def test_the_sql_lists_name_exactly_their_states_in_the_enums_order() -> None:
    assert ACTIVE_TASKS_SQL == "('offered', 'accepted', 'en_route', 'on_scene')"
    assert CLOSED_INCIDENTS_SQL == "('closed', 'cancelled', 'merged')"
    assert set(re.findall(r"'(\w+)'", ACTIVE_TASKS_SQL)) == {s.value for s in ACTIVE_TASK_STATES}
    assert set(re.findall(r"'(\w+)'", CLOSED_INCIDENTS_SQL)) == {s.value for s in IncidentState} - OPEN_STATES


def test_the_sql_lists_are_the_partial_indexes_predicates() -> None:
    assert index_predicate("tasks_one_active_per_responder") == f"state IN {ACTIVE_TASKS_SQL}"
    assert index_predicate("incidents_open_place_idx") == f"status NOT IN {CLOSED_INCIDENTS_SQL}"


@pytest.mark.parametrize(
    ("index", "query"),
    [
        (
            "tasks_one_active_per_responder",
            f"SELECT 1 FROM tasks WHERE responder_id = 'R1' AND state IN {ACTIVE_TASKS_SQL}",
        ),
        (
            "incidents_open_place_idx",
            "SELECT 1 FROM incidents WHERE point(lon, lat) <@ box(point(106.5, 29.5), point(106.6, 29.6))"
            f" AND status NOT IN {CLOSED_INCIDENTS_SQL}",
        ),
    ],
)
async def test_a_query_using_the_sql_list_searches_the_partial_index(
    pg: asyncpg.Pool, index: str, query: str
) -> None:
    async with pg.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {query}"))
    assert index in plan, plan
