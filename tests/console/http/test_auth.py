"""The session area over HTTP: a login answers a token and a device token, /auth/me says who the
token belongs to and what it may do, logout ends the token at once, a wrong password is 401 the
same for known and unknown users, and administrators see the login lanes being guessed at.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import httpx

from console.passwords import hash_password
from tests.console.http import test_access as access
from tests.console.http.test_access import PASSWORD, World, client, headers, uid

world = access.world  # demo users with their tokens, on an app with the default request limits


async def a_user(world: World, role: str = "operator") -> str:
    """A fresh account (its own login allowance: 10 logins a minute)."""
    username = uid(role)
    await world.pool.execute(
        """INSERT INTO users (username, display_name, role, password_hash)
           VALUES ($1, '测试用户', $2, $3)""",
        username,
        role,
        hash_password(PASSWORD),
    )
    return username


def an_address() -> str:
    """An address of its own, so that no other test's failures count in its lanes."""
    return f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


async def login(
    http: httpx.AsyncClient, username: str, password: str = PASSWORD, **extra: Any
) -> httpx.Response:
    return await http.post("/api/v1/auth/login", json={"username": username, "password": password, **extra})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_login_answers_a_token_and_a_device_token(world: World) -> None:
    username = await a_user(world)
    async with client(world.app) as http:
        r = await login(http, username)
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"  # no proxy or browser cache keeps a token
        body = r.json()
        assert set(body) == {"token", "username", "display_name", "role", "expires_in", "device_token"}
        assert (body["username"], body["display_name"], body["role"]) == (username, "测试用户", "operator")
        assert body["expires_in"] == world.sessions.ttl_s
        assert len(body["token"]) >= 40 and len(body["device_token"]) >= 40
        assert body["token"] != body["device_token"]
        # The device shows its token next time and keeps it; a made-up one is not taken.
        again = (await login(http, username, device=body["device_token"])).json()
        assert again["device_token"] == body["device_token"] and again["token"] != body["token"]
        forged = (await login(http, username, device="made-up-device-token")).json()
        assert forged["device_token"] not in ("made-up-device-token", body["device_token"])
        # two sessions, both alive
        for token in (body["token"], again["token"]):
            assert (await http.get("/api/v1/auth/me", headers=bearer(token))).status_code == 200


async def test_me_says_who_the_token_is_and_what_it_may_do(world: World) -> None:
    async with client(world.app) as http:
        me = (await http.get("/api/v1/auth/me", headers=headers(world, "operator"))).json()
        assert me["username"] == world.usernames["operator"] and me["role"] == "operator"
        assert me["responder_id"] is None
        assert {"session", "board.read", "dispatch", "reveal", "audit.read"} <= set(me["permissions"])
        assert not {"users.write", "registry.write", "photo.upload"} & set(me["permissions"])
        assert me["permissions"] == sorted(me["permissions"])
        phone = (await http.get("/api/v1/auth/me", headers=headers(world, "responder"))).json()
        assert phone["role"] == "responder" and phone["responder_id"] == world.responder_ids["responder"]
        assert phone["permissions"] == ["own_tasks.read", "photo.upload", "session"]
        r = await http.get("/api/v1/auth/me", headers=bearer("not-a-token"))
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


async def test_logout_ends_that_token_and_no_other(world: World) -> None:
    username = await a_user(world)
    async with client(world.app, ip="10.31.0.7") as http:
        ending, staying = [(await login(http, username)).json()["token"] for _ in range(2)]
        r = await http.post("/api/v1/auth/logout", headers=bearer(ending))
        assert r.status_code == 204 and r.content == b""
        r = await http.get("/api/v1/auth/me", headers=bearer(ending))
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert (await http.post("/api/v1/auth/logout", headers=bearer(ending))).status_code == 401
        assert (await http.get("/api/v1/auth/me", headers=bearer(staying))).status_code == 200
    entry = await world.pool.fetchrow(
        "SELECT * FROM audit_log WHERE kind = 'logout' AND actor = $1 ORDER BY seq DESC LIMIT 1",
        f"operator:{username}",
    )
    assert entry["outcome"] == "ok" and entry["origin"] == "10.31.0.7"


async def test_a_wrong_password_is_401_alike_for_known_and_unknown_users(world: World) -> None:
    username = await a_user(world)
    async with client(world.app, ip=an_address()) as http:
        wrong = await login(http, username, "not-the-password")
        unknown = await login(http, uid("nobody"), "not-the-password")
        # a disabled user with the right password learns nothing more either
        await world.pool.execute("UPDATE users SET disabled = true WHERE username = $1", username)
        disabled = await login(http, username)
    for r in (wrong, unknown, disabled):
        assert r.status_code == 401, r.text
        assert r.json() == {"error": "unauthorized", "message": "wrong username or password"}
        assert "token" not in r.text


async def test_administrators_see_the_lanes_being_guessed_at(world: World) -> None:
    username, address = await a_user(world, "viewer"), an_address()
    async with client(world.app, ip=address) as http:
        assert (await login(http, username, "guess-1")).status_code == 401
        r = await http.get("/api/v1/auth/throttles", headers=headers(world, "admin"))
        assert r.status_code == 200, r.text
        lanes = {(lane["lane"], lane["username"], lane["address"]): lane for lane in r.json()["lanes"]}
        # the failure counts for the pair, the user from anywhere and the address for anyone
        # (one failure is free: each lane may try again at once)
        for key in (("pair", username, address), ("user", username, None), ("ip", None, address)):
            lane = lanes[key]
            assert lane["failures"] == 1, lane
            assert datetime.fromisoformat(lane["next_attempt"]) <= datetime.now(UTC), lane
            assert datetime.fromisoformat(lane["last_failure"]) <= datetime.now(UTC), lane
        # A success clears the lane it was made in, not the user's: a guesser elsewhere still counts.
        assert (await login(http, username)).status_code == 200
        after = (await http.get("/api/v1/auth/throttles", headers=headers(world, "admin"))).json()["lanes"]
        seen = {(lane["lane"], lane["username"], lane["address"]) for lane in after}
        assert ("pair", username, address) not in seen and ("user", username, None) in seen
        # only administrators see them
        r = await http.get("/api/v1/auth/throttles", headers=headers(world, "commander"))
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
