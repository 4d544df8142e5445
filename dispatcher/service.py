"""The dispatcher's service layer: file enriched incidents and apply commands to cases.

Each input (an enriched incident, a command) is applied in one transaction that also records
its id, so a replay finds it and changes nothing but answers with the events it produced the
first time (publishing is at-least-once; consoles drop what they hold by incident version).
Decisions come from the pure core (`dispatcher.core.case`); this layer only loads, saves, asks live
state who is available, and reports what to publish.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import asyncpg

from contracts.commands import Command
from contracts.events import state_change
from contracts.incidents import EnrichedIncident
from dispatcher.adapters import audit, casestore, store
from dispatcher.adapters.livekeeper import sync_statuses
from dispatcher.core.case import (
    ACTIONS,
    Case,
    Context,
    Effect,
    Forward,
    OfferTask,
    Outcome,
    SetResponderStatus,
    decide,
    start_case,
)
from dispatcher.core.clock import statutory_limit
from dispatcher.core.lifecycle import Action, IllegalTransition, transition
from dispatcher.core.merge import Sighting, bbox_for, find_duplicate, merge_cells
from dispatcher.core.plan import PlanBook
from dispatcher.core.recommend import Available
from dispatcher.readmodel import incidents, views
from dispatcher.readmodel.forces import BUSY, candidates_near, named_responders
from infra import outbox
from infra.livestate import LiveState

log = logging.getLogger(__name__)
SYSTEM_ACTOR = "system:intake"
MERGE_RADIUS_M = 300.0
MERGE_WINDOW = timedelta(minutes=60)
_NEEDS_CANDIDATES = frozenset({"dispatch", "task", "timer", "resolve", "feedback", "remove"})
MAX_RACES = 5  # responders taken by another incident between lookup and offer
PLACE_LOCKS = 0x4D52  # advisory lock class of the merge cells (`merge_cells`)


@dataclass
class Result:
    """What one input produced: messages for consoles, commands for other cases, live-state changes."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    forwards: list[Command] = field(default_factory=list)
    statuses: list[SetResponderStatus] = field(default_factory=list)
    refused: str | None = None


class IncidentService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        plans: PlanBook,
        live: LiveState | None = None,
        radius_m: float = 20_000,
        per_kind: int = 30,
    ) -> None:
        self._pool = pool
        self._plans = plans
        self._live = live
        self._radius_m = radius_m
        self._per_kind = per_kind

    # --- filing ---------------------------------------------------------------------------
    async def file(self, rec: EnrichedIncident) -> Result:
        result = Result()
        async with self._pool.acquire() as conn, conn.transaction():
            if not await store.mark_processed(conn, rec.enrichment_id, rec.incident_id):
                result.messages = await self._messages(conn, rec.incident_id, None)
                return result
            if await store.current(conn, rec.incident_id) is not None:
                return result  # filed already under another input event id
            await self._lock_place(conn, rec)
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
            case = casestore.new_case(rec, decision.incident)
            plan = self._plans.plan_for(rec.category, rec.severity)
            case, effects = start_case(
                case, plan, statutory_limit(rec.source, rec.time_limit), rec.enriched_at
            )
            await casestore.save_effects(conn, case, effects, rec.enriched_at, None)
            match = await self._duplicate_of(conn, rec)
            if match is not None:
                merge = Command(
                    "merge",
                    rec.incident_id,
                    f"{rec.incident_id}:auto-merge",
                    "system:merge",
                    rec.enriched_at,
                    data={"into": match.incident_id, "match": match.reason},
                )
                outcome = decide(case, merge, Context(plan))
                later = await casestore.save_outcome(conn, outcome)
                result.forwards = [e.command for e in later if isinstance(e, Forward)]
                await outbox.enqueue(conn, [outbox.command_message(f) for f in result.forwards])
            result.messages = await self._messages(conn, rec.incident_id, None)
        return result

    async def _lock_place(self, conn: asyncpg.Connection, rec: EnrichedIncident) -> None:
        """Filings that could merge go one after the other (until this transaction ends), so the
        later one's duplicate check sees the earlier one even when lanes or dispatchers file
        them side by side. One statement; the cells in ascending order, never a wait cycle."""
        cells = merge_cells(rec.location.lon, rec.location.lat, MERGE_RADIUS_M)
        await store.lock_place(conn, PLACE_LOCKS, cells)

    async def _duplicate_of(self, conn: asyncpg.Connection, rec: EnrichedIncident) -> Any:
        lon, lat = rec.location.lon, rec.location.lat
        box = bbox_for(lon, lat, MERGE_RADIUS_M)
        since, until = rec.occurred_at - MERGE_WINDOW, rec.occurred_at + MERGE_WINDOW
        olds = await store.open_sightings_near(conn, box, rec.incident_id, since, until)
        new = Sighting(rec.incident_id, rec.source, rec.category, lon, lat, rec.occurred_at, "new")
        return find_duplicate(new, olds, radius_m=MERGE_RADIUS_M, window=MERGE_WINDOW)

    # --- commands -------------------------------------------------------------------------
    async def handle(self, cmd: Command) -> Result:
        result = Result()
        if cmd.action not in ACTIONS:
            result.refused = f"unknown action {cmd.action!r}"
            return result
        async with self._pool.acquire() as conn, conn.transaction():
            await outbox.confirm(conn, cmd.command_id)  # applied or refused: it arrived
            if not await store.mark_processed(conn, cmd.command_id, cmd.incident_id):
                result.messages = await self._messages(conn, cmd.incident_id, cmd.command_id)
                return result
            case = await casestore.load_case(conn, cmd.incident_id)
            if case is not None and cmd.action == "split":
                split_off = cmd.data.get("from")  # a command from elsewhere may hold anything here
                into = await store.merged_into(conn, split_off) if isinstance(split_off, str) else None
                if into != cmd.incident_id:
                    detail = f"{cmd.data.get('from')!r} was not merged into {cmd.incident_id}"
                    await audit.record(conn, cmd, "refused", detail)
                    result.refused = detail
                    return result
            if case is None:
                await audit.record(conn, cmd, "refused", f"no incident {cmd.incident_id!r}")
                result.refused = f"no incident {cmd.incident_id!r}"
                return result
            ctx = await self._context(conn, case, cmd)
            for attempt in range(MAX_RACES + 1):
                if attempt == MAX_RACES:
                    # Responders keep being taken by other incidents (live state lagging behind
                    # the tasks): the command still applies, offering nobody new this time.
                    log.warning("%s: candidates kept being taken; applying without offers", cmd.command_id)
                    ctx = replace(ctx, candidates=[], grid_workers=[])
                try:
                    outcome = decide(case, cmd, ctx)
                except IllegalTransition as exc:
                    await audit.record(conn, cmd, "refused", str(exc))
                    result.refused = str(exc)
                    return result
                try:
                    async with conn.transaction():  # a savepoint: a lost race undoes only this try
                        later = await casestore.save_outcome(conn, outcome)
                    break
                except asyncpg.UniqueViolationError as exc:
                    taken = await self._taken(conn, outcome)
                    if not taken:
                        raise
                    log.info("responders %s were taken meanwhile: %s", taken, exc)
                    ctx = replace(
                        ctx,
                        candidates=[c for c in ctx.candidates if c.responder_id not in taken],
                        grid_workers=[c for c in ctx.grid_workers if c.responder_id not in taken],
                    )
            else:  # even without new offers (the operator named someone busy): refused, audited
                detail = "the responders named are busy on other incidents; pick others"
                await audit.record(conn, cmd, "refused", detail)
                result.refused = detail
                return result
            if cmd.action == "split":
                await store.detach_reports(conn, cmd.incident_id, cmd.data.get("from"))
            if cmd.action == "absorb":
                await store.adopt_reports(conn, cmd.incident_id, cmd.data.get("from"))
            await audit.record(conn, cmd, "applied", None)
            result.forwards = [e.command for e in later if isinstance(e, Forward)]
            await outbox.enqueue(conn, [outbox.command_message(f) for f in result.forwards])
            result.statuses = [e for e in later if isinstance(e, SetResponderStatus)]
            result.messages = await self._messages(conn, cmd.incident_id, cmd.command_id, case.version)
        await self._apply_statuses(result.statuses)
        return result

    async def _context(self, conn: asyncpg.Connection, case: Case, cmd: Command) -> Context:
        plan = self._plans.plan_for(case.category, case.severity)
        if self._live is None or cmd.action not in _NEEDS_CANDIDATES:
            return Context(plan)
        lon, lat = await store.place_of(conn, case.incident.incident_id)
        near = self._radius_m, self._per_kind
        candidates, own = await candidates_near(self._live, lon, lat, case.grid_id, *near)
        unavailable: dict[str, str] = {}
        named = cmd.data.get("responders") if cmd.action == "dispatch" else None
        if isinstance(named, list) and named and all(isinstance(n, str) for n in named):
            # Flat dispatch: whoever the operator named, however far, looked up on the spot.
            ready, unavailable = await named_responders(self._live, lon, lat, case.grid_id, named)
            known = {c.responder_id for c in candidates}
            candidates += [c for c in ready if c.responder_id not in known]
        busy = await casestore.active_tasks_of(conn, [c.responder_id for c in candidates + own])
        here = case.incident.incident_id
        unavailable.update({c.responder_id: BUSY for c in candidates if c.responder_id in busy})
        return Context(
            plan,
            [c for c in candidates if c.responder_id not in busy],
            [c for c in own if not busy.get(c.responder_id, set()) - {here}],
            unavailable,
        )

    async def _taken(self, conn: asyncpg.Connection, outcome: Outcome) -> set[str]:
        """Responders this outcome offers a task who hold an active task already (taken meanwhile)."""
        ids = [e.info.task.responder_id for e in outcome.effects if isinstance(e, OfferTask)]
        return set(await casestore.active_tasks_of(conn, ids))

    async def _apply_statuses(self, statuses: list[SetResponderStatus]) -> None:
        if self._live is None:
            return
        for s in statuses:
            await self._live.set_status(s.responder_id, s.status)

    async def sync_live_statuses(self) -> int:
        """After a restart, live state agrees with the system of record: responders with an active
        task are busy, and nobody else is (a crash may have left either undone). Returns changes."""
        if self._live is None:
            return 0
        return await sync_statuses(self._pool, self._live)

    async def refuse_for_good(self, cmd: Command, reason: str) -> None:
        """A command that failed for no transient reason, again and again (it was dead-lettered):
        its outbox row is closed (no more re-sends), and it is audited as failed. Idempotent."""
        # what failed may be what cannot be stored (a NUL): the record keeps a storable copy
        cmd = replace(cmd, reason=storable(cmd.reason), data=storable(cmd.data))
        async with self._pool.acquire() as conn, conn.transaction():
            await outbox.refuse(conn, cmd.command_id, storable(reason))
            await audit.record(conn, cmd, "failed", storable(reason))


    async def _messages(
        self, conn: asyncpg.Connection, incident_id: str, command_id: str | None, after: int = 0
    ) -> list[dict[str, Any]]:
        """Console messages for the events of one input (all events of the incident when filing);
        `after`: the incident's version before the command, when known, so that a busy incident
        (a camera that keeps alarming merges hundreds of reports into one) is not read whole for
        each command: that made every merge cost O(timeline) and the city benchmark O(n²)."""
        row = await incidents.incident_row(conn, incident_id)
        if row is None:
            return []
        view = await incidents.full_view(conn, row)
        events = await incidents.events_of(conn, incident_id, after, command_id)
        return [state_change(views.event_view(e), view) for e in events]


def storable(value: Any) -> Any:
    """`value` with every NUL (U+0000, which PostgreSQL text and jsonb cannot hold) shown as
    U+FFFD, in strings at any depth."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


__all__ = ["Available", "Effect", "IncidentService", "Result", "storable"]
