"""The HTTP entry point of the console server: intake, registry, read API, login, photos, the
residents' progress and the browser pages (FastAPI), one router per area.

Handlers are thin: check who is calling, call a service or the read model, shape the answer.
Every route declares who may call it (`console.http.common.Guards`, or `PUBLIC`; the app refuses
to start with a route that declares nothing), and handlers add object-level checks (a
responder's own tasks, a photo's incident). The table is docs/security.md.
Every rejection names the problem: 400 malformed JSON, 401 bad or missing credentials,
403 a role that may not do this, 404 unknown id, 413 body too large, 422 field and reason,
429 (with Retry-After) a throttled login, account or address, 503 (with Retry-After) when a
report cannot be made durable right now.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from console.http import auth, intake, pages, photos, public, read, registry
from console.http.common import ConsoleServices, Guards, HttpError, access_rules
from console.http.middleware import BodyLimit, RefuseNul, SecurityHeaders, content_security_policy


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def create_http_app(svc: ConsoleServices) -> FastAPI:
    app = FastAPI(
        title="街道基层治理指挥中心 API",
        version="1.0",
        description=(
            "Intake, registry and read API of the street command centre. "
            "The WebSocket protocol is in docs/live-protocol.md."
        ),
        docs_url=None,  # served by console.http.pages from npm's Swagger UI, not FastAPI's CDN page
        redoc_url=None,
    )
    # No redirect from a path with a trailing slash: Starlette's built the Location from the
    # Host header, so any Host the client sent was reflected (an open redirect).
    app.router.redirect_slashes = False
    app.add_middleware(BodyLimit, limit=svc.settings.max_body_bytes)
    app.add_middleware(RefuseNul)
    app.add_middleware(SecurityHeaders, csp=content_security_policy(svc.settings))
    _error_handlers(app)
    guard = Guards(svc)
    # Each area adds its routes to the app itself (APIRoutes of the app's own, so that
    # `access_rules` sees every one of them).
    for area in (intake, registry, auth, read, public, photos, pages):
        area.add_routes(app, svc, guard)
    pages.mount_files(app)
    app.state.access_rules = access_rules(app)  # refuses to build an app with an unguarded route
    return app


def _error_handlers(app: FastAPI) -> None:
    """Every refusal, ours or the framework's, in one shape: {"error", "message"[, "fields"]}."""

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
