"""The HTTP entry point: intake, registry, read API, login and the browser pages (FastAPI).

Handlers are thin: check who is calling, call a service, shape the answer. Every route declares
who may call it (a dependency made by `needs_key`, `needs_user`, `needs_key_or_user` or `PUBLIC`;
the app refuses to start with a route that declares nothing), and handlers add object-level
checks (a responder's own tasks, a photo's incident). The table is docs/security.md.
Every rejection names the problem: 400 malformed JSON, 401 bad or missing credentials,
403 a role that may not do this, 404 unknown id, 413 body too large, 422 field and reason,
429 (with Retry-After) a locked username or throttled address, 503 (with Retry-After) when a
report cannot be made durable right now.
"""

import asyncio
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import asyncpg
import orjson
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console.addresses import Networks, client_address, trusted_networks
from console.audit import KINDS, AuditLog, AuditQuery
from console.auth import LOGINS_PER_MINUTE, ApiKeys, LoginRefused, Sessions, User
from console.intake import BEIJING, IntakeService, InvalidField, NotDurable, UnknownReference
from console.passwords import hash_password
from console.permissions import Perm, UserRole, key_allows, user_allows
from console.ratelimit import KeyedLimiter
from console.registry import RegistryService
from contracts.commands import Command, command_json
from contracts.fields import SourceId, refuse_nul
from contracts.masking import (
    PERSONAL_FIELDS,
    masked_event,
    masked_incident,
    masked_payload,
    responder_incident,
    unmasked_texts,
)
from contracts.positions import PositionBatch
from contracts.registry import CameraUpsert, ResponderUpsert
from contracts.reports import AppReport, CameraAlarm, HotlineTicket
from contracts.states import ACTIVE_TASK_STATES, INCIDENT_STATE_LABELS, OPEN_STATES, IncidentState, TaskState
from contracts.timewindow import representable
from dispatcher.core.plan import PlanBook, load_plans
from dispatcher.core.task import MAX_PHOTOS
from dispatcher.readmodel import incidents as reads
from dispatcher.readmodel import rates, views
from infra.livestate import LiveState
from infra.settings import Settings

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


SWAGGER_UI = LEAFLET.parent.parent / "swagger-ui-dist"  # beside Leaflet in node_modules

# Accepted photo formats and the bytes each file starts with.
PHOTO_TYPES = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG\r\n\x1a\n", "image/webp": b"RIFF"}
MAX_PHOTO_BYTES = 5 * 1024 * 1024
# Bursts allowed by the request limits (PUBLIC_REQUESTS_PER_S, ACCOUNT_REQUESTS_PER_S), in
# seconds' worth of the rate: a page's first load, a resident refreshing a few times.
PUBLIC_BURST_S, ACCOUNT_BURST_S = 30.0, 10.0
# A report some stage refused for good: the public status says it waits for a person.
STUCK_LABEL: Final = "受理异常，待工作人员人工核查"
# Task states in which a responder "holds" a task: they may read its incident and its photos.
HELD_TASK_STATES = ACTIVE_TASK_STATES | {TaskState.DONE}


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
    audit: AuditLog | None = None  # default: one on `pool`


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


def limited(limiter: KeyedLimiter, key: str, chinese: str, english: str) -> None:
    """Count one request against `key`; over the rate, 429 with Retry-After (whole seconds)."""
    wait = limiter.take(key, asyncio.get_running_loop().time())
    if wait:
        seconds = max(1, int(wait + 0.999))
        message = f"{chinese}，请{seconds}秒后再试 / {english}: retry in {seconds} s"
        raise HttpError(429, "rate_limited", message, {"Retry-After": str(seconds)})


def content_security_policy(settings: Settings) -> str:
    """What the pages may load: scripts and styles from this server only (the map library and
    the docs page are served from npm, never a CDN), the live socket, and images from anywhere
    (camera snapshots and residents' photos live on the platforms that sent them)."""
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",  # Leaflet and Swagger UI set style attributes
            "img-src 'self' data: blob: http: https:",
            f"connect-src 'self' {settings.ws_url}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


class SecurityHeaders:
    """ASGI middleware: every answer forbids MIME sniffing, framing and leaking the URL onward,
    and carries the pages' Content-Security-Policy."""

    HEADERS: Final = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    ]

    def __init__(self, app: ASGIApp, csp: str = "default-src 'self'") -> None:
        self.app = app
        self._headers = [*self.HEADERS, (b"content-security-policy", csp.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self._headers]
            await send(message)

        await self.app(scope, receive, with_headers)


class RefuseNul:
    """ASGI middleware: a NUL character (U+0000) in the path or a query parameter is refused
    with 422 naming it; PostgreSQL text cannot hold one, so it would otherwise fail a query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"), True)
            where = ["path"] if "\x00" in scope.get("path", "") else []
            where += [name or "query" for name, value in query if "\x00" in value]
            if where:
                reason = "must not contain the NUL character (U+0000)"
                fields = [{"field": w, "reason": reason} for w in where]
                message = "; ".join(f"{w}: {reason}" for w in where)
                body = orjson.dumps({"error": "invalid", "message": message, "fields": fields})
                await send(
                    {
                        "type": "http.response.start",
                        "status": 422,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


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
    _no_nul = field_validator("*", mode="before")(refuse_nul)
    fixed: bool = Field(description="false: the problem is not solved, and the case reopens")
    satisfied: bool
    rating: Annotated[int, Field(ge=1, le=5)] | None = None
    comment: Annotated[str, Field(max_length=500)] | None = None


class Login(BaseModel):
    _no_nul = field_validator("*", mode="before")(refuse_nul)
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=200)]
    device: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None,
        description="the device_token an earlier login as this user gave this browser or phone: "
        "its attempts then count in a lane of their own, which guessing elsewhere cannot slow",
    )


class Reveal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    _no_nul = field_validator("*", mode="before")(refuse_nul)
    reason: Annotated[
        str, Field(min_length=2, max_length=200, description="why the number is needed (recorded)")
    ]


class UserUpsert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    _no_nul = field_validator("*", mode="before")(refuse_nul)
    display_name: Annotated[str, Field(min_length=1, max_length=64)]
    role: UserRole
    password: Annotated[str, Field(min_length=10, max_length=200)] | None = Field(
        default=None, description="required for a new user; a change logs the user out everywhere"
    )
    disabled: bool = Field(default=False, description="true: no login, every session ends now")
    responder_id: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="the responder this phone login belongs to (role responder only)"
    )


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, once checked: a user's session or an API key's role, and from where."""

    origin: str | None
    user: User | None = None
    key_role: str | None = None

    @property
    def actor(self) -> str:
        return self.user.actor if self.user is not None else f"key:{self.key_role}"


def bearer(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


def client_ip(request: Request, trusted_proxies: Networks) -> str | None:
    """The caller's address (console.addresses: only a trusted proxy names another)."""
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.get("x-forwarded-for"), trusted_proxies)


def _rule(check: Callable[..., Awaitable[Any]], rule: str) -> Any:
    """Mark an access dependency with its rule, for the start-up check and the docs."""
    check.__access_rule__ = rule  # type: ignore[attr-defined]
    return Depends(check)


async def _public() -> None:
    """No credentials: the reporter's progress, the pages, health."""


_public.__access_rule__ = "public"  # type: ignore[attr-defined]
PUBLIC = Depends(_public)


def access_rules(app: FastAPI) -> dict[tuple[str, str], str]:
    """(method, path) -> the access rule each route declares. Raises if one declares none."""
    found: dict[tuple[str, str], str] = {}
    missing = []
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue  # docs, openapi.json and the static mounts: public by nature
        rules = _declared(route.dependant)
        for method in sorted(route.methods or ()):
            if len(rules) != 1:
                missing.append(f"{method} {route.path}: {rules or 'no rule'}")
            else:
                found[(method, route.path)] = rules[0]
    if missing:
        raise RuntimeError("every route needs exactly one access rule: " + "; ".join(missing))
    return found


def _declared(dependant: Any) -> list[str]:
    out: list[str] = []
    for dep in dependant.dependencies:
        rule = getattr(dep.call, "__access_rule__", None)
        if rule is not None:
            out.append(rule)
        out += _declared(dep)
    return out


NO_STORE = {"Cache-Control": "no-store"}
# Documented on every route that checks credentials (the fuzz and clients read them).
AUTH_ANSWERS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, invalid or expired credentials"},
    403: {"description": "this role may not do this (or not to this object)"},
}


def create_http_app(svc: ConsoleServices) -> FastAPI:
    app = FastAPI(
        title="街道基层治理指挥中心 API",
        version="1.0",
        description=(
            "Intake, registry and read API of the street command centre. "
            "The WebSocket protocol is in docs/live-protocol.md."
        ),
        docs_url=None,  # served below from npm's Swagger UI, not FastAPI's CDN page
        redoc_url=None,
    )
    # No redirect from a path with a trailing slash: Starlette's built the Location from the
    # Host header, so any Host the client sent was reflected (an open redirect).
    app.router.redirect_slashes = False
    app.add_middleware(BodyLimit, limit=svc.settings.max_body_bytes)
    app.add_middleware(RefuseNul)
    app.add_middleware(SecurityHeaders, csp=content_security_policy(svc.settings))

    @app.exception_handler(HttpError)
    async def _http_error(request: Request, exc: HttpError) -> JSONResponse:
        return JSONResponse({"error": exc.error, "message": exc.message}, exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _framework_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """What FastAPI and Starlette refuse themselves (unknown path, wrong method, a body that
        cannot be decoded) answers in the same shape as ours, naming the problem."""
        cause = exc.__cause__
        if isinstance(cause, HttpError):  # the body limit tripped while FastAPI read the body
            return await _http_error(request, cause)
        if isinstance(cause, UnicodeDecodeError):
            message = f"body is not valid JSON: not UTF-8 ({cause.reason} at byte {cause.start})"
            return JSONResponse({"error": "malformed_json", "message": message}, 400)
        if exc.status_code == 404:
            error, message = "not_found", f"no such path: {request.url.path}"
        elif exc.status_code == 405:
            error, message = "method_not_allowed", f"{request.method} is not allowed on {request.url.path}"
        elif isinstance(cause, RecursionError):
            error, message = "malformed_json", "body is not valid JSON: nested too deeply"
        elif cause is not None:  # what went wrong inside is the server's log's, not the client's
            error, message = "bad_request", "body could not be read as JSON"
        else:
            error, message = "bad_request", str(exc.detail)
        return JSONResponse({"error": error, "message": message}, exc.status_code, headers=exc.headers)

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

    audit = svc.audit or AuditLog(svc.pool)
    trusted = trusted_networks(svc.settings.trusted_proxies)

    def origin(request: Request) -> str | None:
        return client_ip(request, trusted)

    # The public progress page (进度随时查) answers anyone with a tracking number: generous per
    # address (residents behind a carrier's NAT share one), bounded all the same.
    public_rate = svc.settings.public_requests_per_s
    public = KeyedLimiter(rate=public_rate, burst=public_rate * PUBLIC_BURST_S)

    def limit_public(request: Request) -> None:
        limited(public, origin(request) or "?", "查询过于频繁", "too many lookups from here")

    def needs_key(perm: Perm) -> Any:
        """An intake source's or the administrator's X-Api-Key that grants `perm`."""

        async def check(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> Caller:
            role = await svc.api_keys.role(x_api_key)
            if role is None:
                raise HttpError(
                    401, "unauthorized", "missing or invalid X-Api-Key", {"WWW-Authenticate": "ApiKey"}
                )
            if not key_allows(role, perm):
                # 401 as the intake contract says for a key that is not this endpoint's.
                raise HttpError(
                    401, "unauthorized", f"this X-Api-Key is not valid for this endpoint (needs {perm})"
                )
            return Caller(origin(request), key_role=role)

        return _rule(check, f"key:{perm}")

    # One account's requests (every session of it, on this server): a viewer's script reading the
    # whole board in a loop must not slow the operators' console; a page needs far less.
    account_rate = svc.settings.account_requests_per_s
    per_user = KeyedLimiter(rate=account_rate, burst=account_rate * ACCOUNT_BURST_S)

    async def session(authorization: str | None) -> User:
        user = await svc.sessions.user(bearer(authorization))
        if user is None:
            raise HttpError(
                401,
                "unauthorized",
                "log in first (Authorization: Bearer <token>); the session may have expired",
                {"WWW-Authenticate": "Bearer"},
            )
        limited(per_user, user.username, "此账户请求过于频繁", "too many requests for this account")
        return user

    def permitted(user: User, perms: tuple[Perm, ...]) -> None:
        if not any(user_allows(user.role, p) for p in perms):
            raise HttpError(
                403, "forbidden", f"role {user.role!r} may not do this (needs {' or '.join(perms)})"
            )

    def needs_user(*perms: Perm) -> Any:
        """A session (Authorization: Bearer) whose user's role grants any of `perms`."""

        async def check(request: Request, authorization: Annotated[str | None, Header()] = None) -> Caller:
            user = await session(authorization)
            permitted(user, perms)
            return Caller(origin(request), user=user)

        return _rule(check, "user:" + "|".join(perms))

    def needs_key_or_user(perm: Perm) -> Any:
        """The administrator's X-Api-Key (machines) or an administrator's session (people)."""

        async def check(
            request: Request,
            x_api_key: Annotated[str | None, Header()] = None,
            authorization: Annotated[str | None, Header()] = None,
        ) -> Caller:
            if x_api_key is not None or authorization is None:
                role = await svc.api_keys.role(x_api_key)
                if role is None or not key_allows(role, perm):
                    raise HttpError(
                        401,
                        "unauthorized",
                        f"missing or invalid X-Api-Key (needs {perm}), or log in as an administrator",
                        {"WWW-Authenticate": "ApiKey"},
                    )
                return Caller(origin(request), key_role=role)
            user = await session(authorization)
            permitted(user, (perm,))
            return Caller(origin(request), user=user)

        return _rule(check, f"key|user:{perm}")

    def unprocessable(exc: InvalidField) -> JSONResponse:
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
        except InvalidField as exc:
            return unprocessable(exc)
        except NotDurable as exc:
            raise HttpError(
                503, "unavailable", f"report not accepted, retry: {exc}", {"Retry-After": "5"}
            ) from exc
        status = 202 if accepted.created else 200
        return JSONResponse({"tracking_no": accepted.tracking_no, "status": "received"}, status)

    # --- intake ---------------------------------------------------------------------------
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

    # --- registry (administrators; every change audited) -----------------------------------
    async def admin_audit(
        caller: Caller, action: str, outcome: str, detail: str | None, data: dict[str, Any]
    ) -> None:
        await audit.record(
            "admin", action, caller.actor, outcome, origin=caller.origin, detail=detail, data=data
        )

    @app.put("/api/v1/responders/{responder_id}", tags=["registry"], responses=AUTH_ANSWERS)
    async def put_responder(
        responder_id: SourceId,
        body: ResponderUpsert,
        caller: Annotated[Caller, needs_key_or_user(Perm.REGISTRY_WRITE)],
    ) -> JSONResponse:
        data = {"responder_id": responder_id, **body.model_dump()}
        try:
            created = await svc.registry.put_responder(responder_id, body)
        except UnknownReference as exc:
            await admin_audit(caller, "put_responder", "refused", f"{exc.field}: {exc}", data)
            return unprocessable(exc)
        except NotDurable as exc:
            await admin_audit(caller, "put_responder", "failed", str(exc), data)
            raise HttpError(503, "unavailable", str(exc), {"Retry-After": "5"}) from exc
        await admin_audit(caller, "put_responder", "created" if created else "updated", None, data)
        return JSONResponse(data, 201 if created else 200)

    @app.put("/api/v1/cameras/{camera_id}", tags=["registry"], responses=AUTH_ANSWERS)
    async def put_camera(
        camera_id: SourceId,
        body: CameraUpsert,
        caller: Annotated[Caller, needs_key_or_user(Perm.REGISTRY_WRITE)],
    ) -> JSONResponse:
        created = await svc.registry.put_camera(camera_id, body)
        data = {"camera_id": camera_id, **body.model_dump()}
        await admin_audit(caller, "put_camera", "created" if created else "updated", None, data)
        return JSONResponse(data, 201 if created else 200)

    @app.put("/api/v1/users/{username}", tags=["registry"], responses=AUTH_ANSWERS)
    async def put_user(
        username: Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")],
        body: UserUpsert,
        caller: Annotated[Caller, needs_user(Perm.USERS_WRITE)],
    ) -> JSONResponse:
        """Create or change a console or phone login. A new password, a new role or disabling
        ends the user's sessions at once; a new password also lifts a lockout."""
        data: dict[str, Any] = {
            "username": username,
            "display_name": body.display_name,
            "role": body.role,
            "disabled": body.disabled,
            "responder_id": body.responder_id,
            "password_changed": body.password is not None,
        }

        async def refuse(field_name: str, reason: str) -> JSONResponse:
            await admin_audit(caller, "put_user", "refused", f"{field_name}: {reason}", data)
            return unprocessable(UnknownReference(field_name, reason))

        if (body.role == "responder") != (body.responder_id is not None):
            return await refuse("responder_id", "required for role responder, and only for it")
        if caller.user is not None and caller.user.username == username and body.disabled:
            return await refuse("disabled", "an administrator cannot disable their own login")
        new_hash = await asyncio.to_thread(hash_password, body.password) if body.password else None
        async with svc.pool.acquire() as conn, conn.transaction():
            before = await conn.fetchrow(
                "SELECT role, disabled FROM users WHERE username = $1 FOR UPDATE", username
            )
            if before is None and new_hash is None:
                return await refuse("password", "required for a new user")
            if body.responder_id is not None and not await conn.fetchval(
                "SELECT 1 FROM responders WHERE responder_id = $1", body.responder_id
            ):
                return await refuse("responder_id", f"unknown responder {body.responder_id!r}")
            await conn.execute(
                """INSERT INTO users (username, display_name, role, password_hash, responder_id, disabled)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (username) DO UPDATE SET
                       display_name = EXCLUDED.display_name, role = EXCLUDED.role,
                       password_hash = COALESCE($7, users.password_hash),
                       responder_id = EXCLUDED.responder_id, disabled = EXCLUDED.disabled,
                       updated_at = now()""",
                username,
                body.display_name,
                body.role,
                new_hash or "",
                body.responder_id,
                body.disabled,
                new_hash,
            )
            ends = before is not None and (
                new_hash is not None
                or before["role"] != body.role
                or (body.disabled and not before["disabled"])
            )
            data["sessions_ended"] = await svc.sessions.revoke_user(username, conn) if ends else 0
            if new_hash is not None:
                await svc.sessions.unlock(username, conn)
            await audit.record(
                "admin",
                "put_user",
                caller.actor,
                "created" if before is None else "updated",
                origin=caller.origin,
                data=data,
                conn=conn,
            )
        out = {k: v for k, v in data.items() if k != "password_changed"}
        return JSONResponse(out, 201 if before is None else 200)

    # --- sessions -------------------------------------------------------------------------
    @app.post(
        "/api/v1/auth/login",
        tags=["auth"],
        dependencies=[PUBLIC],
        responses={
            401: {"description": "wrong username or password"},
            429: {"description": "too many failed logins in this attempt's lane: wait (Retry-After)"},
        },
    )
    async def login(request: Request, body: Login) -> JSONResponse:
        """A session. Failed logins slow further guesses down with growing waits (429 with
        Retry-After), never a lock: see docs/security.md. Keep the `device_token` and send it
        as `device` next time."""
        result = await svc.sessions.attempt(body.username, body.password, origin(request), body.device)
        if isinstance(result, LoginRefused):
            if result.reason == "invalid":
                raise HttpError(401, "unauthorized", "wrong username or password")
            wait = result.retry_after_s
            if result.reason == "too_frequent":
                message = (
                    f"此账户登录过于频繁，请{wait}秒后再试 / more than {LOGINS_PER_MINUTE} logins of this "
                    f"account a minute: retry in {wait} s"
                )
                raise HttpError(429, "too_many_logins", message, {"Retry-After": str(wait)})
            shown = f"{wait}秒" if wait < 120 else f"{-(-wait // 60)}分钟"
            message = (
                f"登录失败次数过多，请{shown}后再试 / too many failed logins: retry in {wait} s"
                f" ({result.lane} lane)"
            )
            raise HttpError(429, "login_delayed", message, {"Retry-After": str(wait)})
        return JSONResponse(
            {
                "token": result.token,
                "username": result.user.username,
                "display_name": result.user.display_name,
                "role": result.user.role,
                "expires_in": svc.sessions.ttl_s,
                "device_token": result.device_token,
            },
            headers=NO_STORE,
        )

    @app.get("/api/v1/auth/throttles", tags=["auth"], responses=AUTH_ANSWERS)
    async def throttles(caller: Annotated[Caller, needs_user(Perm.USERS_WRITE)]) -> dict[str, Any]:
        """Administrators: the login lanes that have failures counting now (who is being
        guessed at, from where, and when each lane takes its next attempt)."""
        return {"lanes": await svc.sessions.throttles()}

    @app.post("/api/v1/auth/logout", status_code=204, tags=["auth"], responses=AUTH_ANSWERS)
    async def logout(
        caller: Annotated[Caller, needs_user(Perm.SESSION)],
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        """End this session now (the token stops working everywhere, WebSockets included)."""
        await svc.sessions.logout(bearer(authorization), caller.origin)
        return Response(status_code=204)

    @app.get("/api/v1/auth/me", tags=["auth"], responses=AUTH_ANSWERS)
    async def me(caller: Annotated[Caller, needs_user(Perm.SESSION)]) -> dict[str, Any]:
        user = caller.user
        assert user is not None
        return {
            "username": user.username,
            "display_name": user.display_name,
            "role": user.role,
            "responder_id": user.responder_id,
            "permissions": sorted(p.value for p in Perm if user_allows(user.role, p)),
        }

    # --- read side ------------------------------------------------------------------------
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

    async def my_tasks(responder_id: str, incident_id: str) -> list[dict[str, Any]]:
        """The responder's own tasks on this incident that they hold (not declined, expired, withdrawn)."""
        return [
            t
            for t in (views.task_view(r) for r in await reads.task_rows(svc.pool, incident_id))
            if t["responder_id"] == responder_id and t["state"] in HELD_TASK_STATES
        ]

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
        rows = await svc.pool.fetch(
            """SELECT i.* FROM incidents i
                WHERE ($2::text[] IS NULL OR i.status = ANY($2::text[]))
                  AND EXISTS (SELECT 1 FROM tasks t WHERE t.incident_id = i.incident_id
                                 AND t.responder_id = $1 AND t.state = ANY($3::text[]))
                ORDER BY i.severity, i.occurred_at LIMIT $4 OFFSET $5""",
            user.responder_id,
            statuses,
            list(HELD_TASK_STATES),
            limit,
            offset,
        )
        out = []
        for r in rows:
            mine = await my_tasks(str(user.responder_id), r["incident_id"])
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
            mine = await my_tasks(str(user.responder_id), incident_id)
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
        given = await svc.pool.fetchval(
            """SELECT 1 FROM feedback WHERE incident_id = $1 AND tracking_no = $2
                 AND at >= (SELECT max(at) FROM incident_events
                             WHERE incident_id = $1 AND type = 'incident.close')""",
            incident_id,
            tracking_no,
        )
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

    # --- pages ----------------------------------------------------------------------------
    @app.get("/api/v1/config", tags=["pages"], dependencies=[PUBLIC])
    async def config() -> dict[str, str]:
        return {"ws_url": svc.settings.ws_url}

    @app.get("/healthz", tags=["ops"], dependencies=[PUBLIC])
    async def healthz() -> dict[str, str]:
        await svc.pool.fetchval("SELECT 1")
        return {"status": "ok"}

    grid_cache: dict[str, Any] = {}

    @app.post(
        "/api/v1/photos",
        status_code=201,
        tags=["responders"],
        responses={**AUTH_ANSWERS, 409: {"description": "no active task to attach the photo to"}},
    )
    async def upload_photo(
        request: Request,
        caller: Annotated[Caller, needs_user(Perm.PHOTO_UPLOAD)],
        content_type: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        """A responder's on-site photo (the raw image as the body), for the task they are working
        on: answers its URL for the task's report. Only signed-in callers allowed to see that
        incident can fetch it."""
        user = caller.user
        if user is None or not user.responder_id:
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
        task = await svc.pool.fetchrow(
            """SELECT task_id, incident_id FROM tasks
                WHERE responder_id = $1 AND state IN ('accepted', 'en_route', 'on_scene')
                ORDER BY updated_at DESC LIMIT 1""",
            user.responder_id,
        )
        if task is None:
            raise HttpError(
                409, "no_active_task", "photos belong to a task you have accepted: none is active"
            )
        held = await svc.pool.fetchval("SELECT count(*) FROM photos WHERE task_id = $1", task["task_id"])
        if held >= MAX_PHOTOS:
            raise HttpError(409, "too_many_photos", f"a task holds at most {MAX_PHOTOS} photos")
        photo_id = uuid.uuid4().hex
        await svc.pool.execute(
            """INSERT INTO photos (photo_id, responder_id, content_type, bytes, incident_id, task_id)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            photo_id,
            user.responder_id,
            kind,
            body,
            task["incident_id"],
            task["task_id"],
        )
        url = str(request.url_for("photo", photo_id=photo_id))
        return JSONResponse({"photo_id": photo_id, "url": url}, 201)

    @app.get("/api/v1/photos/{photo_id}", tags=["responders"], name="photo", responses=AUTH_ANSWERS)
    async def photo(
        photo_id: Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$")],
        caller: Annotated[Caller, needs_user(Perm.SESSION)],
    ) -> Response:
        """The photo, with Authorization: Bearer (pages fetch it and show a blob URL). Allowed:
        staff who read the board, the uploader, and responders holding a task on its incident."""
        user = caller.user
        assert user is not None
        row = await svc.pool.fetchrow(
            "SELECT responder_id, incident_id, content_type, bytes FROM photos WHERE photo_id = $1", photo_id
        )
        if row is None:
            raise HttpError(404, "not_found", "no such photo")
        allowed = user_allows(user.role, Perm.PHOTO_READ_ANY) or (
            user.responder_id is not None
            and (
                row["responder_id"] == user.responder_id
                or (
                    row["incident_id"] is not None
                    and bool(await my_tasks(user.responder_id, row["incident_id"]))
                )
            )
        )
        if not allowed:
            raise HttpError(403, "forbidden", "this photo belongs to an incident you hold no task on")
        return Response(
            row["bytes"],
            media_type=row["content_type"],
            headers={"Cache-Control": "private, max-age=3600", "Vary": "Authorization"},
        )

    @app.get("/api/v1/grids", tags=["read"], responses=AUTH_ANSWERS)
    async def grids(caller: Annotated[Caller, needs_user(Perm.BOARD_READ)]) -> dict[str, Any]:
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

    @app.get("/api/v1/responders/live", tags=["read"], responses=AUTH_ANSWERS)
    async def responders_live(caller: Annotated[Caller, needs_user(Perm.BOARD_READ)]) -> dict[str, Any]:
        """Every located responder with kind, organisation, duty, status and the time of its
        position (`at`, epoch ms, as in the console's `positions` frames) for the map."""
        if svc.live is None:
            raise HttpError(503, "unavailable", "live state not connected", {"Retry-After": "5"})
        ids = [r["responder_id"] for r in await svc.pool.fetch("SELECT responder_id FROM responders")]
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

    @app.get("/", include_in_schema=False, dependencies=[PUBLIC])
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/responder", include_in_schema=False, dependencies=[PUBLIC])
    async def responder_page() -> FileResponse:
        """The responders' mobile page (手机端)."""
        return FileResponse(STATIC / "responder.html")

    @app.get("/favicon.ico", include_in_schema=False, dependencies=[PUBLIC])
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/docs", include_in_schema=False, dependencies=[PUBLIC])
    async def api_docs() -> FileResponse:
        """The OpenAPI document, readable (Swagger UI from npm, served here)."""
        return FileResponse(STATIC / "docs.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if LEAFLET.is_dir():  # installed by ./centre (npm); the page says so when it is missing
        app.mount("/vendor/leaflet", StaticFiles(directory=LEAFLET), name="leaflet")
    if SWAGGER_UI.is_dir():
        app.mount("/vendor/swagger-ui", StaticFiles(directory=SWAGGER_UI), name="swagger-ui")
    app.state.access_rules = access_rules(app)  # refuses to build an app with an unguarded route
    return app
