"""Registry routes (administrators; every change audited): responders, cameras and accounts.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time, and
# they name the guards made in `routes` (locals, which a string annotation could not reach).
import asyncio
from typing import Annotated, Any

from fastapi import FastAPI
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from console import accounts
from console.http.common import AUTH_ANSWERS, Caller, ConsoleServices, Guards, HttpError, unprocessable
from console.intake import NotDurable, UnknownReference
from console.passwords import hash_password
from console.permissions import Perm, UserRole
from contracts.fields import SourceId, refuse_nul
from contracts.registry import CameraUpsert, ResponderUpsert


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


def add_routes(app: FastAPI, svc: ConsoleServices, guard: Guards) -> None:
    """This area's routes, on `app`."""
    needs_user = guard.needs_user
    needs_key_or_user = guard.needs_key_or_user
    audit = guard.audit

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
            before = await accounts.locked_account(conn, username)
            if before is None and new_hash is None:
                return await refuse("password", "required for a new user")
            if body.responder_id is not None and not await accounts.responder_exists(conn, body.responder_id):
                return await refuse("responder_id", f"unknown responder {body.responder_id!r}")
            await accounts.upsert_account(
                conn, username, body.display_name, body.role, new_hash, body.responder_id, body.disabled
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

