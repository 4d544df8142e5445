"""Which report a refused record carries, and what marking it refused does (real PostgreSQL)."""

from __future__ import annotations

import uuid

import asyncpg

from contracts import topics
from infra.refusals import refuse_report, refuse_report_of, tracking_no_of


def test_the_report_a_refused_record_carries_is_named_by_its_key() -> None:
    assert tracking_no_of(topics.REPORTS_RAW, b"A20261205-1") == "A20261205-1"
    assert tracking_no_of(topics.INCIDENTS_ENRICHED, b"INC-A20261205-1") == "A20261205-1"
    assert tracking_no_of(topics.INCIDENTS_LOCATED, b"INC-A1") == "A1"
    assert tracking_no_of(topics.INCIDENTS_LOCATED, b"A1") is None
    assert tracking_no_of(topics.INCIDENTS_COMMANDS, b"INC-A1") is None
    assert tracking_no_of(topics.REPORTS_RAW, None) is None
    assert tracking_no_of(topics.REPORTS_RAW, b"\xff") is None


async def _report(pool: asyncpg.Pool) -> str:
    tracking_no = f"A{uuid.uuid4().hex[:12]}"
    await pool.execute(
        """INSERT INTO reports (tracking_no, source, source_id, received_at, payload)
           VALUES ($1, 'app', $1, now(), '{}'::jsonb)""",
        tracking_no,
    )
    return tracking_no


async def test_a_refused_record_marks_its_report_once_and_says_what_is_stuck(pool: asyncpg.Pool) -> None:
    tracking_no = await _report(pool)
    key = f"INC-{tracking_no}".encode()
    stuck = await refuse_report_of(pool, topics.INCIDENTS_ENRICHED, key, "dispatcher", "x" * 600)
    assert stuck == f"report {tracking_no}: refused for good, not re-published"
    row = await pool.fetchrow(
        "SELECT refused_stage, length(refused_reason) AS n FROM reports WHERE tracking_no = $1", tracking_no
    )
    assert (row["refused_stage"], row["n"]) == ("dispatcher", 500)  # the reason is cut to fit
    # a record that carries no report (a command), or no pool: nothing to mark
    assert await refuse_report_of(pool, topics.INCIDENTS_COMMANDS, key, "dispatcher", "r") is None
    assert await refuse_report_of(None, topics.REPORTS_RAW, tracking_no.encode(), "normalise", "r") is None


async def test_a_filed_report_is_never_marked(pool: asyncpg.Pool) -> None:
    tracking_no = await _report(pool)
    await pool.execute("UPDATE reports SET incident_id = 'INC-x' WHERE tracking_no = $1", tracking_no)
    assert not await refuse_report(pool, tracking_no, "enrich", "late letter")
    assert await refuse_report_of(pool, topics.REPORTS_RAW, tracking_no.encode(), "normalise", "r") is None
