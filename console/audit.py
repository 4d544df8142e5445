"""The audit log: logins, logouts, reveals of personal data and administrative changes.

It shares the dispatcher's append-only `audit_log` table (commands are kind 'command'), so one
query answers "who did what, when, from where, with what outcome" across all of them. Rows
are only ever inserted; the table's triggers refuse UPDATE, DELETE and TRUNCATE.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import asyncpg
import orjson

Kind = Literal["command", "login", "logout", "reveal", "admin"]
KINDS: Final[tuple[str, ...]] = ("command", "login", "logout", "reveal", "admin")


@dataclass(frozen=True, slots=True)
class AuditQuery:
    kind: str | None = None
    actor: str | None = None
    incident_id: str | None = None
    since: datetime | None = None
    before_seq: int | None = None  # keyset paging: rows older than this one
    limit: int = 100


class AuditLog:
    """Writes access events and reads the whole log back, newest first."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(
        self,
        kind: Kind,
        action: str,
        actor: str,
        outcome: str,
        *,
        origin: str | None = None,
        incident_id: str | None = None,
        detail: str | None = None,
        data: dict[str, Any] | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> str:
        """Append one row (inside the caller's transaction when `conn` is given); returns its id."""
        entry_id = f"{kind}:{uuid.uuid4().hex}"
        await (conn or self._pool).execute(
            """INSERT INTO audit_log
                   (command_id, kind, incident_id, action, actor, at, outcome, detail, data, origin)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb, $10)""",
            entry_id,
            kind,
            incident_id,
            action,
            actor[:200],
            datetime.now(UTC),
            outcome,
            detail,
            orjson.dumps(data or {}).decode(),
            origin,
        )
        return entry_id

    async def query(self, q: AuditQuery) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            """SELECT seq, command_id, kind, incident_id, action, actor, at, outcome, detail,
                      data::text AS data, COALESCE(origin, data->>'origin') AS origin
                 FROM audit_log
                WHERE ($1::text IS NULL OR kind = $1)
                  AND ($2::text IS NULL OR actor = $2)
                  AND ($3::text IS NULL OR incident_id = $3)
                  AND ($4::timestamptz IS NULL OR at >= $4)
                  AND ($5::bigint IS NULL OR seq < $5)
                ORDER BY seq DESC
                LIMIT $6""",
            q.kind,
            q.actor,
            q.incident_id,
            q.since,
            q.before_seq,
            q.limit,
        )
        return [
            {
                "seq": r["seq"],
                "id": r["command_id"],
                "kind": r["kind"],
                "action": r["action"],
                "actor": r["actor"],
                "incident_id": r["incident_id"],
                "at": r["at"].isoformat(),
                "origin": r["origin"],
                "outcome": r["outcome"],
                "detail": r["detail"],
                "data": orjson.loads(r["data"]),
            }
            for r in rows
        ]
