"""Reports refused for good: a stage dead-lettered the record that carried one, so it is stuck,
not late, and the intake's reconciler stops re-publishing it (its public status says 受理异常).

Shared by every stage that can refuse a report's record: the Faust agents and the dispatcher.
"""

from __future__ import annotations

import logging

import asyncpg

from contracts import topics
from infra.faults import DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)


def tracking_no_of(topic: str, key: bytes | None) -> str | None:
    """The report a record on a report or incident topic carries, from its key: the tracking
    number on `reports.raw`, the incident id (`INC-` + tracking number) after it."""
    if key is None:
        return None
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return None
    if topic == topics.REPORTS_RAW:
        return text
    if topic in (topics.INCIDENTS_LOCATED, topics.INCIDENTS_ENRICHED) and text.startswith("INC-"):
        return text[4:]
    return None


async def refuse_report(
    conn: asyncpg.Connection | asyncpg.Pool, tracking_no: str, stage: str, reason: str
) -> bool:
    """A stage refused this report for good (it was dead-lettered): it is stuck, not late, and
    the reconciler stops re-publishing it. False if there is no such report, or it was filed."""
    status = await conn.execute(
        """UPDATE reports SET refused_at = now(), refused_stage = $2, refused_reason = left($3, 500)
            WHERE tracking_no = $1 AND incident_id IS NULL""",
        tracking_no,
        stage,
        reason,
    )
    return str(status) != "UPDATE 0"


async def refuse_report_of(
    pool: asyncpg.Pool | None, topic: str, key: bytes | None, stage: str, reason: str
) -> str | None:
    """`refuse_report` for the report a refused record carries (by its topic and key), if any.
    Returns what the dead letter says is stuck, or None. A database that is away leaves the
    mark undone (logged): the report is re-published later, refused again and marked then."""
    tracking_no = tracking_no_of(topic, key)
    if tracking_no is None or pool is None:
        return None
    try:
        marked = await refuse_report(pool, tracking_no, stage, reason)
    except DATABASE_UNAVAILABLE as exc:
        log.warning("could not mark report %s refused: %r", tracking_no, exc)
        return None
    return f"report {tracking_no}: refused for good, not re-published" if marked else None
