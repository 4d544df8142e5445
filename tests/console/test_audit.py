"""The audit log on the real PostgreSQL: what a row keeps, the filters, keyset paging newest first,
and a database that refuses to edit or empty it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from console.audit import KINDS, AuditLog, AuditQuery


def actor() -> str:
    return f"operator:audit-{uuid.uuid4().hex[:8]}"


async def test_a_row_keeps_who_what_where_and_its_data(pool: asyncpg.Pool) -> None:
    log, who, iid = AuditLog(pool), actor(), f"INC-{uuid.uuid4().hex[:8]}"
    entry = await log.record(
        "reveal",
        "reveal",
        who,
        "ok",
        origin="10.3.0.7",
        incident_id=iid,
        detail="回电",
        data={"因": ["核实"]},
    )
    assert entry.startswith("reveal:") and len(entry) == len("reveal:") + 32
    [row] = await log.query(AuditQuery(actor=who))
    assert row["id"] == entry and row["seq"] > 0
    assert {k: row[k] for k in ("kind", "action", "actor", "incident_id", "origin", "outcome", "detail")} == {
        "kind": "reveal",
        "action": "reveal",
        "actor": who,
        "incident_id": iid,
        "origin": "10.3.0.7",
        "outcome": "ok",
        "detail": "回电",
    }
    assert row["data"] == {"因": ["核实"]}
    assert abs(datetime.fromisoformat(row["at"]) - datetime.now(UTC)) < timedelta(minutes=1)
    # A command's origin travels in its data: the query reads it from there.
    await log.record("command", "dispatch", who, "applied", data={"origin": "10.3.0.8"})
    assert (await log.query(AuditQuery(actor=who, kind="command")))[0]["origin"] == "10.3.0.8"
    # An overlong actor is cut, not refused.
    long_actor = "user:" + "x" * 300
    await log.record("login", "login", long_actor, "invalid")
    assert (await log.query(AuditQuery(actor=long_actor[:200])))[0]["outcome"] == "invalid"


async def test_pages_go_newest_first_without_gaps_or_repeats(pool: asyncpg.Pool) -> None:
    log, who = AuditLog(pool), actor()
    ids = [await log.record("admin", "put_user", who, f"n{i}") for i in range(7)]
    seen: list[str] = []
    before: int | None = None
    while page := await log.query(AuditQuery(actor=who, before_seq=before, limit=3)):
        assert len(page) <= 3 and [r["seq"] for r in page] == sorted((r["seq"] for r in page), reverse=True)
        seen += [r["id"] for r in page]
        before = page[-1]["seq"]
    assert seen == ids[::-1]


async def test_the_filters_narrow_by_kind_incident_and_time(pool: asyncpg.Pool) -> None:
    log, who, iid = AuditLog(pool), actor(), f"INC-{uuid.uuid4().hex[:8]}"
    for kind in KINDS:
        await log.record(kind, kind, who, "ok", incident_id=iid if kind == "reveal" else None)  # type: ignore[arg-type]
    assert {r["kind"] for r in await log.query(AuditQuery(actor=who))} == set(KINDS)
    assert [r["kind"] for r in await log.query(AuditQuery(actor=who, kind="logout"))] == ["logout"]
    assert [r["kind"] for r in await log.query(AuditQuery(incident_id=iid))] == ["reveal"]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert await log.query(AuditQuery(actor=who, since=future)) == []
    with pytest.raises(asyncpg.CheckViolationError):  # the database knows the same kinds
        await log.record("bogus", "x", who, "ok")  # type: ignore[arg-type]


async def test_a_row_recorded_in_a_transaction_goes_with_it(pool: asyncpg.Pool) -> None:
    log, who = AuditLog(pool), actor()
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await log.record("admin", "put_user", who, "created", conn=conn)
                raise RuntimeError("the change failed")
    assert await log.query(AuditQuery(actor=who)) == []


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET outcome = 'forged' WHERE command_id = $1",
        "DELETE FROM audit_log WHERE command_id = $1",
        "TRUNCATE audit_log",
    ],
)
async def test_the_database_refuses_to_edit_the_log(pool: asyncpg.Pool, statement: str) -> None:
    log, who = AuditLog(pool), actor()
    entry = await log.record("reveal", "reveal", who, "ok")
    async with pool.acquire() as conn:
        # In a transaction that never commits: were the refusal gone, the shared log is untouched.
        with pytest.raises(asyncpg.RaiseError, match="audit_log is append-only"):
            async with conn.transaction():
                await conn.execute(statement, *([entry] if "$1" in statement else []))
    [row] = await log.query(AuditQuery(actor=who))
    assert row["id"] == entry and row["outcome"] == "ok"
