"""Responders' photos on the real PostgreSQL: the task a photo belongs to, and the photo kept and
read back byte for byte."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from console import photos

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def responder(pool: asyncpg.Pool) -> str:
    rid = uid("P")
    await pool.execute(
        "INSERT INTO responders (responder_id, name, kind, org) VALUES ($1, '网格员', 'grid_worker', '社区')",
        rid,
    )
    return rid


async def incident(pool: asyncpg.Pool) -> str:
    iid = uid("INC")
    await pool.execute(
        """INSERT INTO incidents (incident_id, status, source, category, severity, title, lon, lat,
                                  occurred_at, record)
           VALUES ($1, 'dispatched', 'app', 'litter', 2, '垃圾', 106.5, 29.6, now(), '{}'::jsonb)""",
        iid,
    )
    return iid


async def task(pool: asyncpg.Pool, rid: str, iid: str, state: str, minutes_ago: int = 0) -> str:
    tid = uid("T")
    await pool.execute(
        """INSERT INTO tasks (task_id, incident_id, responder_id, responder_name, responder_kind, kind,
                              state, version, org, offered_at, updated_at)
           VALUES ($1, $2, $3, '网格员', 'grid_worker', 'response', $4, 1, '社区', now(),
                   now() - $5 * interval '1 minute')""",
        tid,
        iid,
        rid,
        state,
        minutes_ago,
    )
    return tid


async def test_only_a_task_being_worked_takes_photos(pool: asyncpg.Pool) -> None:
    rid = await responder(pool)
    assert await photos.working_task(pool, rid) is None
    await task(pool, rid, await incident(pool), "done")  # finished, and the latest touched
    offered = await task(pool, rid, await incident(pool), "offered", minutes_ago=5)
    assert await photos.working_task(pool, rid) is None  # neither finished nor offered counts
    for state in ("accepted", "en_route", "on_scene"):
        await pool.execute("UPDATE tasks SET state = $2 WHERE task_id = $1", offered, state)
        found = await photos.working_task(pool, rid)
        assert found is not None and found["task_id"] == offered, state
    await pool.execute("UPDATE tasks SET state = 'cancelled' WHERE task_id = $1", offered)
    assert await photos.working_task(pool, rid) is None
    assert await photos.working_task(pool, await responder(pool)) is None  # another's tasks are not theirs


async def test_a_photo_is_kept_whole_and_counted_against_its_task(pool: asyncpg.Pool) -> None:
    rid, iid = await responder(pool), await incident(pool)
    tid = await task(pool, rid, iid, "on_scene")
    ids = [await photos.store(pool, rid, "image/png", PNG, iid, tid) for _ in range(3)]
    assert len(set(ids)) == 3 and all(len(i) == 32 for i in ids)  # unguessable, not a counter
    assert await photos.count_of(pool, tid) == 3
    assert await photos.count_of(pool, uid("T")) == 0
    row = await photos.fetch(pool, ids[0])
    assert row is not None
    assert dict(row) == {"responder_id": rid, "incident_id": iid, "content_type": "image/png", "bytes": PNG}
    assert await photos.fetch(pool, uuid.uuid4().hex) is None


async def test_the_database_keeps_only_images(pool: asyncpg.Pool) -> None:
    rid, iid = await responder(pool), await incident(pool)
    tid = await task(pool, rid, iid, "accepted")
    with pytest.raises(asyncpg.CheckViolationError):
        await photos.store(pool, rid, "text/html", b"<script>", iid, tid)
    assert await photos.count_of(pool, tid) == 0
