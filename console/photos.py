"""Responders' on-site photos, stored in PostgreSQL beside the task they document."""

from __future__ import annotations

import uuid

import asyncpg

from contracts.states import TaskState

# A photo belongs to a task its responder has accepted and not finished.
WORKING: tuple[str, ...] = (TaskState.ACCEPTED, TaskState.EN_ROUTE, TaskState.ON_SCENE)


async def working_task(pool: asyncpg.Pool, responder_id: str) -> asyncpg.Record | None:
    """The responder's most recently touched task in a working state (task_id, incident_id)."""
    row: asyncpg.Record | None = await pool.fetchrow(
        """SELECT task_id, incident_id FROM tasks
            WHERE responder_id = $1 AND state = ANY($2::text[])
            ORDER BY updated_at DESC LIMIT 1""",
        responder_id,
        list(WORKING),
    )
    return row


async def count_of(pool: asyncpg.Pool, task_id: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM photos WHERE task_id = $1", task_id))


async def store(
    pool: asyncpg.Pool, responder_id: str, content_type: str, data: bytes, incident_id: str, task_id: str
) -> str:
    """Keep the photo; its new id."""
    photo_id = uuid.uuid4().hex
    await pool.execute(
        """INSERT INTO photos (photo_id, responder_id, content_type, bytes, incident_id, task_id)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        photo_id,
        responder_id,
        content_type,
        data,
        incident_id,
        task_id,
    )
    return photo_id


async def fetch(pool: asyncpg.Pool, photo_id: str) -> asyncpg.Record | None:
    """The photo (responder_id, incident_id, content_type, bytes), or None."""
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT responder_id, incident_id, content_type, bytes FROM photos WHERE photo_id = $1", photo_id
    )
    return row
