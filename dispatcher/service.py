"""The dispatcher's service layer: apply one input event through the lifecycle and the store.

Returns the messages to publish for consoles. A replayed input event is recognised by its id
and answers with the events it produced the first time (publishing is at-least-once; consoles
drop what they already hold by incident version).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from dispatcher import store
from dispatcher.lifecycle import Action, Command, transition
from streams.records import EnrichedIncident

SYSTEM_ACTOR = "system:intake"


class IncidentService:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def file(self, rec: EnrichedIncident) -> list[dict[str, Any]]:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await store.mark_processed(conn, rec.enrichment_id, rec.incident_id):
                return await self._replay(conn, rec.incident_id)
            if await store.current(conn, rec.incident_id) is not None:
                return []  # filed already under another input event id
            cmd = Command(
                action=Action.FILE,
                incident_id=rec.incident_id,
                command_id=f"{rec.incident_id}:filed",
                actor=SYSTEM_ACTOR,
                at=rec.enriched_at,
                data={"tracking_no": rec.tracking_no, "source": rec.source},
            )
            decision = transition(None, cmd)
            await store.insert_incident(conn, rec, decision.incident)
            await store.append_events(conn, decision.events)
            row = await store.incident_row(conn, rec.incident_id)
            assert row is not None
            view = store.incident_view(row)
            return [{**store.event_view(e), "incident": view} for e in decision.events]

    async def _replay(self, conn: asyncpg.Connection, incident_id: str) -> list[dict[str, Any]]:
        row = await store.incident_row(conn, incident_id)
        if row is None:
            return []
        view = store.incident_view(row)
        return [{**store.event_view(e), "incident": view} for e in await store.events_of(conn, incident_id)]
