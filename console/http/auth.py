"""Session routes: log in (growing waits after failures, never a lock), log out, who am I, and the
administrators' list of login lanes being guessed at (docs/security.md).
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time, and
# they name the guards made in `routes` (locals, which a string annotation could not reach).
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, field_validator

from console.auth import LOGINS_PER_MINUTE, LoginRefused
from console.http.common import (
    AUTH_ANSWERS,
    NO_STORE,
    PUBLIC,
    Caller,
    ConsoleServices,
    Guards,
    HttpError,
    bearer,
)
from console.permissions import Perm, user_allows
from contracts.fields import refuse_nul


class Login(BaseModel):
    _no_nul = field_validator("*", mode="before")(refuse_nul)
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=200)]
    device: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None,
        description="the device_token an earlier login as this user gave this browser or phone: "
        "its attempts then count in a lane of their own, which guessing elsewhere cannot slow",
    )


def add_routes(app: FastAPI, svc: ConsoleServices, guard: Guards) -> None:
    """This area's routes, on `app`."""
    needs_user = guard.needs_user
    origin = guard.origin

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

