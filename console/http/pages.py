"""The pages (the console, the responders' phone page, the API docs), their static files and
browser libraries (from npm, served here: no CDN), the pages' config, and health.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time, and
# they name the guards made in `routes` (locals, which a string annotation could not reach).
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from console.http.common import PUBLIC, ConsoleServices, Guards, HttpError
from infra.db import ping
from infra.faults import DATABASE_UNAVAILABLE

STATIC = Path(__file__).resolve().parent.parent / "static"
# Leaflet comes from npm (package.json): the source tree when run from a checkout, the working
# directory in the production image.
LEAFLET = next(
    (
        d
        for d in (
            Path(__file__).resolve().parents[2] / "node_modules" / "leaflet" / "dist",
            Path.cwd() / "node_modules" / "leaflet" / "dist",
        )
        if d.is_dir()
    ),
    Path.cwd() / "node_modules" / "leaflet" / "dist",
)
SWAGGER_UI = LEAFLET.parent.parent / "swagger-ui-dist"  # beside Leaflet in node_modules


def mount_files(app: FastAPI) -> None:
    """The pages' static files and the browser libraries, as files (no access rule: public)."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if LEAFLET.is_dir():  # installed by ./centre (npm); the page says so when it is missing
        app.mount("/vendor/leaflet", StaticFiles(directory=LEAFLET), name="leaflet")
    if SWAGGER_UI.is_dir():
        app.mount("/vendor/swagger-ui", StaticFiles(directory=SWAGGER_UI), name="swagger-ui")


def add_routes(app: FastAPI, svc: ConsoleServices, guard: Guards) -> None:
    """This area's routes, on `app`."""

    @app.get("/api/v1/config", tags=["pages"], dependencies=[PUBLIC])
    async def config() -> dict[str, str]:
        return {"ws_url": svc.settings.ws_url}

    @app.get("/healthz", tags=["ops"], dependencies=[PUBLIC])
    async def healthz() -> dict[str, str]:
        try:
            await ping(svc.pool)
        except DATABASE_UNAVAILABLE as exc:  # in the usual shape, for load balancers and people
            raise HttpError(503, "unavailable", "database unavailable", {"Retry-After": "5"}) from exc
        return {"status": "ok"}

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

