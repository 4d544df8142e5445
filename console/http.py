"""The HTTP entry point: intake, registry, read API, login and the browser pages (FastAPI).

Handlers are thin: check who is calling, call a service, shape the answer. Every rejection
names the problem: 400 malformed JSON, 401 bad or missing credentials, 404 unknown id,
413 body too large, 422 field and reason, 503 (with Retry-After) when a report cannot be
made durable right now.
"""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console.auth import ApiKeys, Sessions, User
from console.intake import BEIJING, IntakeService, NotDurable, UnknownReference
from console.masking import masked_incident, masked_payload
from console.registry import RegistryService
from dispatcher import report, store
from dispatcher.lifecycle import OPEN_STATES, STATE_LABELS, IncidentState
from dispatcher.plan import PlanBook, load_plans
from infra.settings import Settings
from streams.livestate import LiveState
from streams.records import (
    AppReport,
    CameraAlarm,
    CameraUpsert,
    HotlineTicket,
    PositionBatch,
    ResponderUpsert,
    SourceId,
)

STATIC = Path(__file__).resolve().parent / "static"
# Leaflet comes from npm (package.json): the source tree when run from a checkout, the working
# directory in the production image.
LEAFLET = next(
    (
        d
        for d in (
            Path(__file__).resolve().parent.parent / "node_modules" / "leaflet" / "dist",
            Path.cwd() / "node_modules" / "leaflet" / "dist",
        )
        if d.is_dir()
    ),
    Path.cwd() / "node_modules" / "leaflet" / "dist",
)


# Accepted photo formats and the bytes each file starts with.
PHOTO_TYPES = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG\r\n\x1a\n", "image/webp": b"RIFF"}
MAX_PHOTO_BYTES = 5 * 1024 * 1024


class HttpError(Exception):
    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.headers = status, error, message, headers or {}


@dataclass
class ConsoleServices:
    settings: Settings
    pool: asyncpg.Pool
    api_keys: ApiKeys
    sessions: Sessions
    intake: IntakeService
    registry: RegistryService
    send_command: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    plans: PlanBook = field(default_factory=load_plans)
    live: LiveState | None = None


class BodyLimit:
    """ASGI middleware: refuse bodies over the limit with 413 before reading them whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = MAX_PHOTO_BYTES if scope.get("path") == "/api/v1/photos" else self.limit  # phones' photos
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _too_large(limit, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HttpError(413, "too_large", f"body larger than {limit} bytes")
            return message

        try:
            await self.app(scope, limited, send)
        except HttpError:
            await _too_large(limit, send)


async def _too_large(limit: int, send: Send) -> None:
    body = f'{{"error":"too_large","message":"body larger than {limit} bytes"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fixed: bool = Field(description="false: the problem is not solved, and the case reopens")
    satisfied: bool
    rating: Annotated[int, Field(ge=1, le=5)] | None = None
    comment: Annotated[str, Field(max_length=500)] | None = None


class Login(BaseModel):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=200)]


def create_http_app(svc: ConsoleServices) -> FastAPI:
    app = FastAPI(
        title="街道基层治理指挥中心 API",
        version="1.0",
        description=(
            "Intake, registry and read API of the street command centre. "
            "The WebSocket protocol is in docs/live-protocol.md."
        ),
    )
    app.add_middleware(BodyLimit, limit=svc.settings.max_body_bytes)

    @app.exception_handler(HttpError)
    async def _http_error(request: Request, exc: HttpError) -> JSONResponse:
        return JSONResponse({"error": exc.error, "message": exc.message}, exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            detail = (
                next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
            )
            return JSONResponse(
                {"error": "malformed_json", "message": f"body is not valid JSON: {detail}"}, 400
            )
        fields = [{"field": _field(tuple(e["loc"])), "reason": e["msg"]} for e in errors]
        message = "; ".join(f"{f['field']}: {f['reason']}" for f in fields)
        return JSONResponse({"error": "invalid", "message": message, "fields": fields}, 422)

    async def api_role(x_api_key: Annotated[str | None, Header()] = None) -> str:
        role = await svc.api_keys.role(x_api_key)
        if role is None:
            raise HttpError(
                401, "unauthorized", "missing or invalid X-Api-Key", {"WWW-Authenticate": "ApiKey"}
            )
        return role

    def needs_key(*roles: str) -> Any:
        async def check(role: Annotated[str, Depends(api_role)]) -> str:
            if role not in roles:
                raise HttpError(
                    401,
                    "unauthorized",
                    f"this X-Api-Key is not valid for this endpoint (needs {'/'.join(roles)})",
                )
            return role

        return Depends(check)

    async def operator(authorization: Annotated[str | None, Header()] = None) -> User:
        token = authorization[7:] if authorization and authorization.lower().startswith("bearer ") else None
        user = await svc.sessions.user(token)
        if user is None:
            raise HttpError(
                401,
                "unauthorized",
                "log in first (Authorization: Bearer <token>)",
                {"WWW-Authenticate": "Bearer"},
            )
        return user

    def unprocessable(exc: UnknownReference) -> JSONResponse:
        return JSONResponse(
            {
                "error": "invalid",
                "message": f"{exc.field}: {exc}",
                "fields": [{"field": exc.field, "reason": str(exc)}],
            },
            422,
        )

    async def take(source: str, report: Any) -> JSONResponse:
        try:
            accepted = await svc.intake.accept(source, report)
        except UnknownReference as exc:
            return unprocessable(exc)
        except NotDurable as exc:
            raise HttpError(
                503, "unavailable", f"report not accepted, retry: {exc}", {"Retry-After": "5"}
            ) from exc
        status = 202 if accepted.created else 200
        return JSONResponse({"tracking_no": accepted.tracking_no, "status": "received"}, status)

    # --- intake ---------------------------------------------------------------------------
    @app.post(
        "/api/v1/intake/camera-alarms", status_code=202, tags=["intake"], dependencies=[needs_key("camera")]
    )
    async def camera_alarm(alarm: CameraAlarm) -> JSONResponse:
        """A 雪亮工程 video-analytics alarm."""
        return await take("camera", alarm)

    @app.post(
        "/api/v1/intake/hotline-tickets",
        status_code=202,
        tags=["intake"],
        dependencies=[needs_key("hotline")],
    )
    async def hotline_ticket(ticket: HotlineTicket) -> JSONResponse:
        """A 12345 hotline ticket."""
        return await take("hotline", ticket)

    @app.post("/api/v1/intake/app-reports", status_code=202, tags=["intake"], dependencies=[needs_key("app")])
    async def app_report(report: AppReport) -> JSONResponse:
        """A resident's 随手拍 report."""
        return await take("app", report)

    @app.post(
        "/api/v1/intake/positions", status_code=202, tags=["intake"], dependencies=[needs_key("positions")]
    )
    async def positions(batch: PositionBatch) -> JSONResponse:
        """Responders' positions, up to 1,000 a batch."""
        try:
            n = await svc.intake.accept_positions(batch)
        except UnknownReference as exc:
            return unprocessable(exc)
        except NotDurable as exc:
            raise HttpError(
                503, "unavailable", f"positions not accepted, retry: {exc}", {"Retry-After": "5"}
            ) from exc
        return JSONResponse({"accepted": n}, 202)

    # --- registry -------------------------------------------------------------------------
    @app.put("/api/v1/responders/{responder_id}", tags=["registry"], dependencies=[needs_key("admin")])
    async def put_responder(responder_id: SourceId, body: ResponderUpsert) -> JSONResponse:
        try:
            created = await svc.registry.put_responder(responder_id, body)
        except UnknownReference as exc:
            return unprocessable(exc)
        except NotDurable as exc:
            raise HttpError(503, "unavailable", str(exc), {"Retry-After": "5"}) from exc
        return JSONResponse({"responder_id": responder_id, **body.model_dump()}, 201 if created else 200)

    @app.put("/api/v1/cameras/{camera_id}", tags=["registry"], dependencies=[needs_key("admin")])
    async def put_camera(camera_id: SourceId, body: CameraUpsert) -> JSONResponse:
        created = await svc.registry.put_camera(camera_id, body)
        return JSONResponse({"camera_id": camera_id, **body.model_dump()}, 201 if created else 200)

    # --- sessions -------------------------------------------------------------------------
    @app.post("/api/v1/auth/login", tags=["auth"])
    async def login(body: Login) -> JSONResponse:
        result = await svc.sessions.login(body.username, body.password)
        if result is None:
            raise HttpError(401, "unauthorized", "wrong username or password")
        token, user = result
        return JSONResponse(
            {
                "token": token,
                "username": user.username,
                "display_name": user.display_name,
                "role": user.role,
                "expires_in": svc.sessions.ttl_s,
            }
        )

    @app.get("/api/v1/auth/me", tags=["auth"])
    async def me(user: Annotated[User, Depends(operator)]) -> dict[str, str]:
        return {"username": user.username, "display_name": user.display_name, "role": user.role}

    # --- read side ------------------------------------------------------------------------
    @app.get("/api/v1/incidents", tags=["read"])
    async def incidents(
        user: Annotated[User, Depends(operator)],
        status: Annotated[
            str, Query(max_length=200, description="open, all, or comma-separated states")
        ] = "open",
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        if status == "all":
            statuses: list[str] | None = None
        elif status == "open":
            statuses = [s.value for s in OPEN_STATES]
        else:
            statuses = [s.strip() for s in status.split(",") if s.strip()]
            bad = [s for s in statuses if s not in IncidentState._value2member_map_]
            if bad:
                raise HttpError(
                    422,
                    "invalid",
                    f"status: unknown state {bad[0]!r}; use open, all or one of "
                    f"{', '.join(s.value for s in IncidentState)}",
                )
        rows = await store.incident_rows(svc.pool, statuses, limit, offset)
        return {
            "incidents": [masked_incident(store.incident_view(r)) for r in rows],
            "limit": limit,
            "offset": offset,
        }

    @app.get("/api/v1/incidents/{incident_id}", tags=["read"])
    async def incident(
        incident_id: Annotated[str, PathParam(max_length=100)], user: Annotated[User, Depends(operator)]
    ) -> dict[str, Any]:
        row = await store.incident_row(svc.pool, incident_id)
        if row is None:
            raise HttpError(404, "not_found", f"no incident {incident_id!r}")
        view = masked_incident(store.incident_view(row))
        view["reports"] = [
            {
                "tracking_no": r["tracking_no"],
                "source": r["source"],
                "source_id": r["source_id"],
                "received_at": r["received_at"].isoformat(),
                "payload": masked_payload(r["source"], r["payload"]),
            }
            for r in await store.linked_reports(svc.pool, incident_id)
        ]
        view["timeline"] = [store.event_view(e) for e in await store.events_of(svc.pool, incident_id)]
        return view

    @app.get("/api/v1/reports/{tracking_no}", tags=["read"])
    async def report_progress(tracking_no: Annotated[str, PathParam(max_length=40)]) -> dict[str, Any]:
        """Public progress for the reporter (进度随时查): no personal data, public steps only."""
        row = await store.report_by_tracking_no(svc.pool, tracking_no)
        if row is None:
            raise HttpError(404, "not_found", f"no report {tracking_no!r}")
        timeline: list[dict[str, Any]] = [
            {"at": row["received_at"].isoformat(), "step": "received", "label": "已受理"}
        ]
        status, label = "received", "已受理"
        incident_id, since = row["incident_id"], None
        for _ in range(5):  # follow merges to the incident that carries the work
            incident_row = await store.incident_row(svc.pool, incident_id) if incident_id else None
            if incident_row is None:
                break
            state = IncidentState(incident_row["status"])
            status, label = state.value, STATE_LABELS[state]
            for e in await store.events_of(svc.pool, incident_row["incident_id"]):
                if not e["public"] or (since is not None and e["at"] < since):
                    continue
                ev = store.event_view(e)
                if ev["type"] == "incident.feedback":
                    timeline.append({"at": ev["at"], "step": "feedback", "label": "居民已评价"})
                elif ev["type"] != "incident.merge" or incident_row["merged_into"] is None:
                    step = IncidentState(ev["state"])
                    timeline.append({"at": ev["at"], "step": step.value, "label": STATE_LABELS[step]})
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

    @app.post("/api/v1/reports/{tracking_no}/feedback", status_code=202, tags=["read"])
    async def report_feedback(
        tracking_no: Annotated[str, PathParam(max_length=40)], body: Feedback
    ) -> JSONResponse:
        """The reporter rates the result once the incident is closed; "not fixed" reopens it."""
        row = await store.report_by_tracking_no(svc.pool, tracking_no)
        if row is None:
            raise HttpError(404, "not_found", f"no report {tracking_no!r}")
        incident_id = row["incident_id"]
        for _ in range(5):
            incident_row = await store.incident_row(svc.pool, incident_id) if incident_id else None
            if incident_row is None or incident_row["merged_into"] is None:
                break
            incident_id = incident_row["merged_into"]
        if incident_row is None or incident_row["status"] != "closed":
            raise HttpError(409, "not_closed", "feedback is possible once the case is closed (办结)")
        command = {
            "command_id": f"feedback:{tracking_no}:{uuid.uuid4().hex}",
            "incident_id": incident_id,
            "action": "feedback",
            "actor": f"resident:{tracking_no}",
            "at": datetime.now(UTC).isoformat(),
            "reason": None,
            "data": {"tracking_no": tracking_no, **body.model_dump()},
        }
        if svc.send_command is None:
            raise HttpError(503, "unavailable", "feedback not accepted, retry", {"Retry-After": "5"})
        try:
            await svc.send_command(command)
        except Exception as exc:
            raise HttpError(
                503, "unavailable", f"feedback not accepted, retry: {exc}", {"Retry-After": "5"}
            ) from exc
        return JSONResponse({"tracking_no": tracking_no, "status": "received"}, 202)

    @app.get("/api/v1/rates", tags=["read"])
    async def three_rates(
        user: Annotated[User, Depends(operator)],
        by: Annotated[Literal["grid", "community", "org", "day", "all"], Query()] = "all",
        since: Annotated[
            date | None, Query(alias="from", description="first Beijing day (default: 7 days ago)")
        ] = None,
        until: Annotated[
            date | None, Query(alias="to", description="last Beijing day, inclusive (default: today)")
        ] = None,
    ) -> dict[str, Any]:
        """三率 — response, resolution and satisfaction rates (definitions in dispatcher/rates.py)."""
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
        rows = await report.rates(svc.pool, svc.plans, by, start, end, now)
        return {
            "by": by,
            "from": first.isoformat(),
            "to": last.isoformat(),
            "rows": [asdict(r) for r in rows],
        }

    # --- pages ----------------------------------------------------------------------------
    @app.get("/api/v1/config", tags=["pages"])
    async def config() -> dict[str, str]:
        return {"ws_url": svc.settings.ws_url}

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        await svc.pool.fetchval("SELECT 1")
        return {"status": "ok"}

    grid_cache: dict[str, Any] = {}

    @app.post("/api/v1/photos", status_code=201, tags=["responders"])
    async def upload_photo(
        request: Request,
        user: Annotated[User, Depends(operator)],
        content_type: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        """A responder's on-site photo (the raw image as the body): answers its URL for task notes."""
        if user.role != "responder" or not user.responder_id:
            raise HttpError(403, "forbidden", "only responders upload photos")
        kind = (content_type or "").split(";")[0].strip().lower()
        if kind not in PHOTO_TYPES:
            raise HttpError(
                415, "unsupported", f"Content-Type must be one of {', '.join(sorted(PHOTO_TYPES))}"
            )
        body = await request.body()
        if not body:
            raise HttpError(422, "invalid", "body: empty image")
        if len(body) > MAX_PHOTO_BYTES:
            raise HttpError(413, "too_large", f"photo larger than {MAX_PHOTO_BYTES} bytes")
        if not body.startswith(PHOTO_TYPES[kind]):
            raise HttpError(422, "invalid", f"body: not a {kind} image")
        photo_id = uuid.uuid4().hex
        await svc.pool.execute(
            "INSERT INTO photos (photo_id, responder_id, content_type, bytes) VALUES ($1, $2, $3, $4)",
            photo_id,
            user.responder_id,
            kind,
            body,
        )
        url = str(request.url_for("photo", photo_id=photo_id))
        return JSONResponse({"photo_id": photo_id, "url": url}, 201)

    @app.get("/api/v1/photos/{photo_id}", tags=["responders"], name="photo")
    async def photo(photo_id: Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$")]) -> Response:
        row = await svc.pool.fetchrow("SELECT content_type, bytes FROM photos WHERE photo_id = $1", photo_id)
        if row is None:
            raise HttpError(404, "not_found", "no such photo")
        return Response(
            row["bytes"], media_type=row["content_type"], headers={"Cache-Control": "private, max-age=86400"}
        )

    @app.get("/api/v1/grids", tags=["read"])
    async def grids(user: Annotated[User, Depends(operator)]) -> dict[str, Any]:
        """The street's grids as GeoJSON (for the console's map)."""
        if not grid_cache:
            rows = await svc.pool.fetch(
                """SELECT g.grid_id, g.name, g.community_id, c.name AS community_name, g.polygon
                     FROM grids g JOIN communities c USING (community_id) ORDER BY g.grid_id"""
            )
            grid_cache["fc"] = {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": r["polygon"],
                        "properties": {
                            "grid_id": r["grid_id"],
                            "name": r["name"],
                            "community_id": r["community_id"],
                            "community_name": r["community_name"],
                        },
                    }
                    for r in rows
                ],
            }
        return dict(grid_cache["fc"])

    @app.get("/api/v1/responders/live", tags=["read"])
    async def responders_live(user: Annotated[User, Depends(operator)]) -> dict[str, Any]:
        """Every located responder with kind, organisation, duty and status (for the map)."""
        if svc.live is None:
            raise HttpError(503, "unavailable", "live state not connected", {"Retry-After": "5"})
        ids = [r["responder_id"] for r in await svc.pool.fetch("SELECT responder_id FROM responders")]
        fields = ("name", "kind", "org", "on_duty", "status", "lon", "lat")
        out = []
        for rid, (name, kind, org, on_duty, status, lon, lat) in zip(
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
                }
            )
        return {"responders": out}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/responder", include_in_schema=False)
    async def responder_page() -> FileResponse:
        """The responders' mobile page (手机端)."""
        return FileResponse(STATIC / "responder.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if LEAFLET.is_dir():  # installed by ./centre (npm); the page says so when it is missing
        app.mount("/vendor/leaflet", StaticFiles(directory=LEAFLET), name="leaflet")
    return app
