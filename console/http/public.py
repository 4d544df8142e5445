"""Public routes for residents (进度随时查): a report's progress by its tracking number, and the
resident's rating of the result once the case is closed. No credentials; limited per address.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time, and
# they name the guards made in `routes` (locals, which a string annotation could not reach).
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from console.http.common import PUBLIC, ConsoleServices, Guards, HttpError
from contracts.commands import Command, command_json
from contracts.fields import refuse_nul
from contracts.states import INCIDENT_STATE_LABELS, IncidentState
from dispatcher.readmodel import incidents as reads
from dispatcher.readmodel import views

# A report some stage refused for good: the public status says it waits for a person.
STUCK_LABEL: Final = "受理异常，待工作人员人工核查"


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    _no_nul = field_validator("*", mode="before")(refuse_nul)
    fixed: bool = Field(description="false: the problem is not solved, and the case reopens")
    satisfied: bool
    rating: Annotated[int, Field(ge=1, le=5)] | None = None
    comment: Annotated[str, Field(max_length=500)] | None = None


def add_routes(app: FastAPI, svc: ConsoleServices, guard: Guards) -> None:
    """This area's routes, on `app`."""
    origin = guard.origin
    limit_public = guard.limit_public

    @app.get("/api/v1/reports/{tracking_no}", tags=["read"], dependencies=[PUBLIC])
    async def report_progress(
        request: Request, tracking_no: Annotated[str, PathParam(max_length=40)]
    ) -> dict[str, Any]:
        """Public progress for the reporter (进度随时查): no personal data, public steps only."""
        limit_public(request)
        row = await reads.report_by_tracking_no(svc.pool, tracking_no)
        if row is None:
            raise HttpError(404, "not_found", f"no report {tracking_no!r}")
        timeline: list[dict[str, Any]] = [
            {"at": row["received_at"].isoformat(), "step": "received", "label": "已受理"}
        ]
        status, label = "received", "已受理"
        if row["incident_id"] is None and row["refused_at"] is not None:
            # Refused by a later stage for good (ops see the dead letter): say so, not 已受理 for ever.
            status, label = "stuck", STUCK_LABEL
            timeline.append({"at": row["refused_at"].isoformat(), "step": "stuck", "label": STUCK_LABEL})
        incident_id, since = row["incident_id"], None
        for _ in range(5):  # follow merges to the incident that carries the work
            incident_row = await reads.incident_row(svc.pool, incident_id) if incident_id else None
            if incident_row is None:
                break
            state = IncidentState(incident_row["status"])
            status, label = state.value, INCIDENT_STATE_LABELS[state]
            for e in await reads.events_of(svc.pool, incident_row["incident_id"]):
                if not e["public"] or (since is not None and e["at"] < since):
                    continue
                ev = views.event_view(e)
                if ev["type"] == "incident.feedback":
                    timeline.append({"at": ev["at"], "step": "feedback", "label": "居民已评价"})
                elif ev["type"] != "incident.merge" or incident_row["merged_into"] is None:
                    step = IncidentState(ev["state"])
                    label = INCIDENT_STATE_LABELS[step]
                    timeline.append({"at": ev["at"], "step": step.value, "label": label})
            if incident_row["merged_into"] is None:
                break
            incident_id, since = incident_row["merged_into"], incident_row["updated_at"]
            timeline.append(
                {"at": since.isoformat(), "step": "merged", "label": "已与同一事件的其他反映合并办理"}
            )
        category = row["payload"].get("category") or row["payload"].get("alarm_type")
        return {
            "tracking_no": tracking_no,
            "status": status,
            "status_label": label,
            "category": category,
            "timeline": timeline,
        }

    @app.post("/api/v1/reports/{tracking_no}/feedback", status_code=202, tags=["read"], dependencies=[PUBLIC])
    async def report_feedback(
        request: Request, tracking_no: Annotated[str, PathParam(max_length=40)], body: Feedback
    ) -> JSONResponse:
        """The reporter rates the result once the incident is closed; "not fixed" reopens it."""
        limit_public(request)
        row = await reads.report_by_tracking_no(svc.pool, tracking_no)
        if row is None:
            raise HttpError(404, "not_found", f"no report {tracking_no!r}")
        incident_id = row["incident_id"]
        for _ in range(5):
            incident_row = await reads.incident_row(svc.pool, incident_id) if incident_id else None
            if incident_row is None or incident_row["merged_into"] is None:
                break
            incident_id = incident_row["merged_into"]
        if incident_row is None or incident_row["status"] != "closed":
            raise HttpError(409, "not_closed", "feedback is possible once the case is closed (办结)")
        given = await reads.rated_since_closed(svc.pool, incident_id, tracking_no)
        if given:
            raise HttpError(
                409, "already_rated", "此次办理已评价，感谢反馈 / feedback on this result was given"
            )
        command = command_json(
            Command(
                action="feedback",
                incident_id=incident_id,
                # one feedback per report per closing: a repeat in the same round changes nothing
                command_id=f"feedback:{tracking_no}:r{incident_row['round']}",
                actor=f"resident:{tracking_no}",
                at=datetime.now(UTC),
                data={"tracking_no": tracking_no, **body.model_dump()},
                origin=origin(request),
            )
        )
        if svc.send_command is None:
            raise HttpError(503, "unavailable", "feedback not accepted, retry", {"Retry-After": "5"})
        try:
            await svc.send_command(command)
        except Exception as exc:
            raise HttpError(
                503, "unavailable", f"feedback not accepted, retry: {exc}", {"Retry-After": "5"}
            ) from exc
        return JSONResponse({"tracking_no": tracking_no, "status": "received"}, 202)

