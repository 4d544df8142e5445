"""Intake routes: camera alarms, 12345 tickets, app reports and positions, each behind its
source's API key. A 202 is a promise (console.intake makes the report durable first).
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time, and
# they name the guards made in `routes` (locals, which a string annotation could not reach).
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from console.http.common import ConsoleServices, Guards, HttpError, unprocessable
from console.intake import InvalidField, NotDurable
from console.permissions import Perm
from contracts.positions import PositionBatch
from contracts.reports import AppReport, CameraAlarm, HotlineTicket


def add_routes(app: FastAPI, svc: ConsoleServices, guard: Guards) -> None:
    """This area's routes, on `app`."""
    needs_key = guard.needs_key

    async def take(source: str, report: Any) -> JSONResponse:
        try:
            accepted = await svc.intake.accept(source, report)
        except InvalidField as exc:
            return unprocessable(exc)
        except NotDurable as exc:
            raise HttpError(
                503, "unavailable", f"report not accepted, retry: {exc}", {"Retry-After": "5"}
            ) from exc
        status = 202 if accepted.created else 200
        return JSONResponse({"tracking_no": accepted.tracking_no, "status": "received"}, status)

    @app.post(
        "/api/v1/intake/camera-alarms",
        status_code=202,
        tags=["intake"],
        dependencies=[needs_key(Perm.INTAKE_CAMERA)],
    )
    async def camera_alarm(alarm: CameraAlarm) -> JSONResponse:
        """A 雪亮工程 video-analytics alarm."""
        return await take("camera", alarm)

    @app.post(
        "/api/v1/intake/hotline-tickets",
        status_code=202,
        tags=["intake"],
        dependencies=[needs_key(Perm.INTAKE_HOTLINE)],
    )
    async def hotline_ticket(ticket: HotlineTicket) -> JSONResponse:
        """A 12345 hotline ticket."""
        return await take("hotline", ticket)

    @app.post(
        "/api/v1/intake/app-reports",
        status_code=202,
        tags=["intake"],
        dependencies=[needs_key(Perm.INTAKE_APP)],
    )
    async def app_report(report: AppReport) -> JSONResponse:
        """A resident's 随手拍 report."""
        return await take("app", report)

    @app.post(
        "/api/v1/intake/positions",
        status_code=202,
        tags=["intake"],
        dependencies=[needs_key(Perm.INTAKE_POSITIONS)],
    )
    async def positions(batch: PositionBatch) -> JSONResponse:
        """Responders' positions, up to 1,000 a batch."""
        try:
            n = await svc.intake.accept_positions(batch)
        except InvalidField as exc:
            return unprocessable(exc)
        except NotDurable as exc:
            raise HttpError(
                503, "unavailable", f"positions not accepted, retry: {exc}", {"Retry-After": "5"}
            ) from exc
        return JSONResponse({"accepted": n}, 202)

