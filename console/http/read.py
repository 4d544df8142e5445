"""The read API for the console and the phones: incidents (masked; a responder sees only the
incidents they hold a task on, in the responder's view), one incident whole, the audited reveal of
numbers (查看号码), the audit log, the 三率, the grids and the live responders for the map.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time, and
# they name the guards made in `routes` (locals, which a string annotation could not reach).
from dataclasses import asdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from console.audit import KINDS, AuditQuery
from console.http.common import (
    AUTH_ANSWERS,
    HELD_TASK_STATES,
    NO_STORE,
    Caller,
    ConsoleServices,
    Guards,
    HttpError,
)
from console.intake import BEIJING
from console.permissions import Perm, user_allows
from contracts.fields import refuse_nul
from contracts.masking import (
    PERSONAL_FIELDS,
    masked_event,
    masked_incident,
    masked_payload,
    responder_incident,
    unmasked_texts,
)
from contracts.states import OPEN_STATES, IncidentState
from contracts.timewindow import representable
from dispatcher.readmodel import incidents as reads
from dispatcher.readmodel import rates, views


class Reveal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    _no_nul = field_validator("*", mode="before")(refuse_nul)
    reason: Annotated[
        str, Field(min_length=2, max_length=200, description="why the number is needed (recorded)")
    ]


def add_routes(app: FastAPI, svc: ConsoleServices, guard: Guards) -> None:
    """This area's routes, on `app`."""
    needs_user = guard.needs_user
    audit = guard.audit

    def statuses_of(status: str) -> list[str] | None:
        if status == "all":
            return None
        if status == "open":
            return [s.value for s in OPEN_STATES]
        statuses = [s.strip() for s in status.split(",") if s.strip()]
        bad = [s for s in statuses if s not in IncidentState._value2member_map_]
        if bad:
            raise HttpError(
                422,
                "invalid",
                f"status: unknown state {bad[0]!r}; use open, all or one of "
                f"{', '.join(s.value for s in IncidentState)}",
            )
        return statuses

    @app.get("/api/v1/incidents", tags=["read"], responses=AUTH_ANSWERS)
    async def incidents(
        caller: Annotated[Caller, needs_user(Perm.BOARD_READ, Perm.OWN_TASKS_READ)],
        status: Annotated[
            str, Query(max_length=200, description="open, all, or comma-separated states")
        ] = "open",
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,  # beyond: PostgreSQL's bigint overflows
    ) -> dict[str, Any]:
        """Incidents, masked. A responder gets only incidents where they hold a task, in the
        responder's view (no personal data, no other responders)."""
        user = caller.user
        assert user is not None
        statuses = statuses_of(status)
        if user_allows(user.role, Perm.BOARD_READ):
            rows = await reads.incident_rows(svc.pool, statuses, limit, offset)
            return {
                "incidents": [masked_incident(views.incident_view(r)) for r in rows],
                "limit": limit,
                "offset": offset,
            }
        responder_id = str(user.responder_id)
        held = HELD_TASK_STATES
        rows = await reads.incident_rows_held_by(svc.pool, responder_id, statuses, held, limit, offset)
        out = []
        for r in rows:
            mine = await reads.held_tasks(svc.pool, responder_id, r["incident_id"], HELD_TASK_STATES)
            out.append(responder_incident(views.incident_view(r), mine))
        return {"incidents": out, "limit": limit, "offset": offset}

    @app.get("/api/v1/incidents/{incident_id}", tags=["read"], responses=AUTH_ANSWERS)
    async def incident(
        incident_id: Annotated[str, PathParam(max_length=100)],
        caller: Annotated[Caller, needs_user(Perm.BOARD_READ, Perm.OWN_TASKS_READ)],
    ) -> dict[str, Any]:
        """The full incident (masked) with its tasks, linked reports and timeline; a responder
        holding a task on it gets the responder's view."""
        user = caller.user
        assert user is not None
        row = await reads.incident_row(svc.pool, incident_id)
        if row is None:
            raise HttpError(404, "not_found", f"no incident {incident_id!r}")
        if not user_allows(user.role, Perm.BOARD_READ):
            mine = await reads.held_tasks(svc.pool, str(user.responder_id), incident_id, HELD_TASK_STATES)
            if not mine:
                raise HttpError(403, "forbidden", f"you hold no task on incident {incident_id!r}")
            return responder_incident(views.incident_view(row), mine)
        view = masked_incident(await reads.full_view(svc.pool, row))
        view["reports"] = [
            {
                "tracking_no": r["tracking_no"],
                "source": r["source"],
                "source_id": r["source_id"],
                "received_at": r["received_at"].isoformat(),
                "payload": masked_payload(r["source"], r["payload"]),
            }
            for r in await reads.linked_reports(svc.pool, incident_id)
        ]
        view["timeline"] = [
            masked_event(views.event_view(e)) for e in await reads.events_of(svc.pool, incident_id)
        ]
        return view

    @app.post("/api/v1/incidents/{incident_id}/reveal", tags=["read"], responses=AUTH_ANSWERS)
    async def reveal(
        incident_id: Annotated[str, PathParam(max_length=100)],
        body: Reveal,
        caller: Annotated[Caller, needs_user(Perm.REVEAL)],
    ) -> JSONResponse:
        """The unmasked contact details of an incident and its linked reports (查看号码), for
        calling back. Every reveal is audited: who, which incident and fields, why, from where."""
        row = await reads.incident_row(svc.pool, incident_id)
        if row is None:
            raise HttpError(404, "not_found", f"no incident {incident_id!r}")
        view = views.incident_view(row)
        contact = {f: view[f] for f in PERSONAL_FIELDS if view.get(f)}
        reports = []
        # free text with numbers in it, unmasked: the incident with its tasks, its timeline
        texts = [
            {"where": path, "text": text}
            for path, text in unmasked_texts(await reads.full_view(svc.pool, row))
        ]
        for e in await reads.events_of(svc.pool, incident_id):
            event = views.event_view(e)
            texts += [
                {"where": f"timeline.{event['event_id']}.{path}", "text": text}
                for path, text in unmasked_texts({"reason": event.get("reason"), "data": event.get("data")})
            ]
        for r in await reads.linked_reports(svc.pool, incident_id):
            found: dict[str, Any] = {f: r["payload"][f] for f in PERSONAL_FIELDS if r["payload"].get(f)}
            written = [{"where": path, "text": text} for path, text in unmasked_texts(r["payload"])]
            if written:
                found["texts"] = written
            if found:
                reports.append({"tracking_no": r["tracking_no"], "source": r["source"], **found})
        fields = sorted(
            {
                *contact,
                *(f for r in reports for f in r if f in PERSONAL_FIELDS),
                *(t["where"].rsplit(".", 1)[-1] for t in texts),
                *(t["where"].rsplit(".", 1)[-1] for r in reports for t in r.get("texts", [])),
            }
        )
        entry = await audit.record(
            "reveal",
            "reveal",
            caller.actor,
            "revealed" if fields else "nothing_to_reveal",
            origin=caller.origin,
            incident_id=incident_id,
            detail=body.reason,
            # Which fields, never their values: the audit log must not become a copy of them.
            data={"fields": fields, "tracking_nos": [r["tracking_no"] for r in reports]},
        )
        return JSONResponse(
            {
                "incident_id": incident_id,
                **contact,
                "texts": texts,
                "reports": reports,
                "fields": fields,
                "audit_id": entry,
            },
            headers=NO_STORE,
        )

    @app.get("/api/v1/audit", tags=["audit"], responses=AUTH_ANSWERS)
    async def audit_log(
        caller: Annotated[Caller, needs_user(Perm.AUDIT_READ)],
        kind: Annotated[str | None, Query(description=f"one of {', '.join(KINDS)}")] = None,
        actor: Annotated[str | None, Query(max_length=200, description="e.g. operator:duty")] = None,
        incident_id: Annotated[str | None, Query(max_length=100)] = None,
        since: Annotated[datetime | None, Query(description="ISO-8601 with offset")] = None,
        before: Annotated[
            int | None,
            Query(ge=1, le=2**63 - 1, description="page on: the next_before of the previous page"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """The audit log, newest first: logins, logouts, commands, reveals, administrative changes.
        Read-only: no endpoint edits it, and the database refuses UPDATE, DELETE and TRUNCATE."""
        if kind is not None and kind not in KINDS:
            raise HttpError(422, "invalid", f"kind: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        if since is not None and since.tzinfo is None:
            raise HttpError(
                422, "invalid", "since: give a time with its offset, e.g. 2026-11-22T09:30:00+08:00"
            )
        if since is not None and (problem := representable(since)) is not None:
            raise HttpError(422, "invalid", f"since: {problem}")  # the database could not compare it
        entries = await audit.query(AuditQuery(kind, actor, incident_id, since, before, limit))
        return {
            "entries": entries,
            "next_before": entries[-1]["seq"] if len(entries) == limit else None,
        }

    @app.get("/api/v1/rates", tags=["read"], responses=AUTH_ANSWERS)
    async def three_rates(
        caller: Annotated[Caller, needs_user(Perm.BOARD_READ)],
        by: Annotated[Literal["grid", "community", "org", "day", "all"], Query()] = "all",
        since: Annotated[
            date | None, Query(alias="from", description="first Beijing day (default: 7 days ago)")
        ] = None,
        until: Annotated[
            date | None, Query(alias="to", description="last Beijing day, inclusive (default: today)")
        ] = None,
    ) -> dict[str, Any]:
        """三率 — response, resolution and satisfaction rates (definitions in dispatcher/core/rates.py)."""
        for name, day in (("from", since), ("to", until)):  # far dates overflow the arithmetic below
            if day is not None and not date(2000, 1, 1) <= day <= date(2099, 12, 31):
                raise HttpError(422, "invalid", f"{name}: must be between 2000-01-01 and 2099-12-31")
        now = datetime.now(UTC)
        today = now.astimezone(BEIJING).date()
        last = until or today
        first = since or (last - timedelta(days=6))
        if first > last:
            raise HttpError(422, "invalid", "from: must not be after to")
        if (last - first).days > 366:
            raise HttpError(422, "invalid", "from/to: at most a year at a time")
        start = datetime.combine(first, time.min, BEIJING)
        end = datetime.combine(last + timedelta(days=1), time.min, BEIJING)
        rows = await rates.rates(svc.pool, svc.plans, by, start, end, now)
        return {
            "by": by,
            "from": first.isoformat(),
            "to": last.isoformat(),
            "rows": [asdict(r) for r in rows],
        }

    grid_cache: dict[str, Any] = {}

    @app.get("/api/v1/grids", tags=["read"], responses=AUTH_ANSWERS)
    async def grids(caller: Annotated[Caller, needs_user(Perm.BOARD_READ)]) -> dict[str, Any]:
        """The street's grids as GeoJSON (for the console's map)."""
        if not grid_cache:
            grid_cache["fc"] = await svc.registry.grids_geojson()
        return dict(grid_cache["fc"])

    @app.get("/api/v1/responders/live", tags=["read"], responses=AUTH_ANSWERS)
    async def responders_live(caller: Annotated[Caller, needs_user(Perm.BOARD_READ)]) -> dict[str, Any]:
        """Every located responder with kind, organisation, duty, status and the time of its
        position (`at`, epoch ms, as in the console's `positions` frames) for the map."""
        if svc.live is None:
            raise HttpError(503, "unavailable", "live state not connected", {"Retry-After": "5"})
        ids = await svc.registry.responder_ids()
        fields = ("name", "kind", "org", "on_duty", "status", "lon", "lat", "at_ms")
        out = []
        for rid, (name, kind, org, on_duty, status, lon, lat, at_ms) in zip(
            ids, await svc.live.responders(ids, fields), strict=True
        ):
            if lon is None or lat is None:
                continue
            out.append(
                {
                    "responder_id": rid,
                    "name": name,
                    "kind": kind,
                    "org": org,
                    "on_duty": on_duty == "1",
                    "status": status,
                    "lon": float(lon),
                    "lat": float(lat),
                    "at": int(float(at_ms)) if at_ms else None,
                }
            )
        return {"responders": out}

