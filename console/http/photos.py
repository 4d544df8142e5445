"""Photos: a responder's on-site photo for the task they work on, and reading one back (staff, the
uploader, responders holding a task on its incident). Stored in PostgreSQL (console.photos).
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time, and
# they name the guards made in `routes` (locals, which a string annotation could not reach).
from typing import Annotated

from fastapi import FastAPI, Header, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response

from console import photos
from console.http.common import AUTH_ANSWERS, HELD_TASK_STATES, Caller, ConsoleServices, Guards, HttpError
from console.permissions import Perm, user_allows
from dispatcher.core.task import MAX_PHOTOS
from dispatcher.readmodel import incidents as reads

# Accepted photo formats and the bytes each file starts with.
PHOTO_TYPES = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG\r\n\x1a\n", "image/webp": b"RIFF"}
MAX_PHOTO_BYTES = 5 * 1024 * 1024


def add_routes(app: FastAPI, svc: ConsoleServices, guard: Guards) -> None:
    """This area's routes, on `app`."""
    needs_user = guard.needs_user

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
        task = await photos.working_task(svc.pool, user.responder_id)
        if task is None:
            raise HttpError(
                409, "no_active_task", "photos belong to a task you have accepted: none is active"
            )
        held = await photos.count_of(svc.pool, task["task_id"])
        if held >= MAX_PHOTOS:
            raise HttpError(409, "too_many_photos", f"a task holds at most {MAX_PHOTOS} photos")
        photo_id = await photos.store(
            svc.pool, user.responder_id, kind, body, task["incident_id"], task["task_id"]
        )
        url = str(request.url_for("photo", photo_id=photo_id))
        return JSONResponse({"photo_id": photo_id, "url": url}, 201)

    async def held(responder_id: str, incident_id: str) -> list[dict[str, object]]:
        return await reads.held_tasks(svc.pool, responder_id, incident_id, HELD_TASK_STATES)

    @app.get("/api/v1/photos/{photo_id}", tags=["responders"], name="photo", responses=AUTH_ANSWERS)
    async def photo(
        photo_id: Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$")],
        caller: Annotated[Caller, needs_user(Perm.SESSION)],
    ) -> Response:
        """The photo, with Authorization: Bearer (pages fetch it and show a blob URL). Allowed:
        staff who read the board, the uploader, and responders holding a task on its incident."""
        user = caller.user
        assert user is not None
        row = await photos.fetch(svc.pool, photo_id)
        if row is None:
            raise HttpError(404, "not_found", "no such photo")
        allowed = user_allows(user.role, Perm.PHOTO_READ_ANY) or (
            user.responder_id is not None
            and (
                row["responder_id"] == user.responder_id
                or (
                    row["incident_id"] is not None
                    and bool(await held(user.responder_id, row["incident_id"]))
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

