"""The registry area over HTTP: responders and cameras are created (201) then updated (200) by the
administrator's key or an administrator's session, every change — refusals included — readable in
the audit log (GET /api/v1/audit); accounts: a new one needs a password, the responder role and
only it a responder id, an administrator cannot disable their own login, and a new password ends
the user's sessions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from fastapi import FastAPI

from contracts import topics
from tests.console.http import test_intake as intake
from tests.console.http.test_access import World, client, headers, uid
from tests.console.test_intake import raw_records

world, producer, app = intake.world, intake.producer, intake.app  # the real app, publishing


async def audit_of(
    world: World, http: httpx.AsyncClient, since: datetime, **match: str
) -> list[dict[str, Any]]:
    """The administrative audit entries since `since` whose data holds `match`, newest first, read
    over the API as an administrator."""
    r = await http.get(
        "/api/v1/audit",
        params={"kind": "admin", "since": since.isoformat(), "limit": 500},
        headers=headers(world, "admin"),
    )
    assert r.status_code == 200, r.text
    return [e for e in r.json()["entries"] if match.items() <= e["data"].items()]


def responder(**change: Any) -> dict[str, Any]:
    return {"name": "张三", "kind": "volunteer", "org": "清晖岸志愿队", "on_duty": True, **change}


async def test_a_responder_is_created_then_updated_and_both_are_audited(
    world: World, app: FastAPI, broker: str
) -> None:
    since = datetime.now(UTC)
    rid = uid("V")
    async with client(app, ip="10.20.0.1") as http:
        r = await http.put(f"/api/v1/responders/{rid}", json=responder(), headers=headers(world, "admin_key"))
        assert r.status_code == 201, r.text
        assert r.json() == {"responder_id": rid, "skills": [], "grid_id": None, **responder()}
        change = responder(name="张三丰", kind="grid_worker", skills=["急救"], on_duty=False)
        r = await http.put(f"/api/v1/responders/{rid}", json=change, headers=headers(world, "admin"))
        assert r.status_code == 200 and r.json()["name"] == "张三丰", r.text
        entries = await audit_of(world, http, since, responder_id=rid)
    row = await world.pool.fetchrow("SELECT * FROM responders WHERE responder_id = $1", rid)
    assert (row["name"], row["kind"], row["skills"], row["on_duty"]) == (
        "张三丰",
        "grid_worker",
        ["急救"],
        False,
    )
    # newest first: who, what and from where, with the change as it was made
    assert [(e["action"], e["outcome"], e["actor"]) for e in entries] == [
        ("put_responder", "updated", f"admin:{world.usernames['admin']}"),
        ("put_responder", "created", "key:admin"),
    ]
    assert all(e["origin"] == "10.20.0.1" for e in entries)
    assert entries[0]["data"]["skills"] == ["急救"] and entries[1]["data"]["name"] == "张三"
    # The live roster hears of both changes.
    changes = await raw_records(broker, rid, topics.RESPONDERS_CHANGES)
    assert [c["name"] for c in changes] == ["张三", "张三丰"]


async def test_a_responder_in_an_unknown_grid_is_refused_and_the_refusal_audited(
    world: World, app: FastAPI
) -> None:
    since = datetime.now(UTC)
    rid, grid = uid("G"), uid("GRID-NOWHERE")
    async with client(app) as http:
        r = await http.put(
            f"/api/v1/responders/{rid}",
            json=responder(kind="grid_worker", grid_id=grid),
            headers=headers(world, "admin_key"),
        )
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "grid_id", r.text
        [entry] = await audit_of(world, http, since, responder_id=rid)
    assert entry["outcome"] == "refused" and grid in entry["detail"]
    assert await world.pool.fetchval("SELECT 1 FROM responders WHERE responder_id = $1", rid) is None


async def test_a_camera_is_created_then_updated_and_both_are_audited(world: World, app: FastAPI) -> None:
    since = datetime.now(UTC)
    cam = uid("CAM")
    async with client(app) as http:
        first = {"name": "清晖岸东门枪机", "lon": 106.5301, "lat": 29.6302}
        r = await http.put(f"/api/v1/cameras/{cam}", json=first, headers=headers(world, "admin"))
        assert r.status_code == 201 and r.json() == {"camera_id": cam, **first}, r.text
        moved = {"name": "清晖岸东门枪机（移位）", "lon": 106.531, "lat": 29.631}
        r = await http.put(f"/api/v1/cameras/{cam}", json=moved, headers=headers(world, "admin_key"))
        assert r.status_code == 200 and r.json() == {"camera_id": cam, **moved}, r.text
        entries = await audit_of(world, http, since, camera_id=cam)
        # a camera out of range is refused by name
        r = await http.put(
            f"/api/v1/cameras/{cam}", json={**moved, "lon": 181}, headers=headers(world, "admin_key")
        )
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "lon", r.text
    row = await world.pool.fetchrow("SELECT name, lon, lat FROM cameras WHERE camera_id = $1", cam)
    assert dict(row) == moved
    assert [(e["action"], e["outcome"], e["actor"]) for e in entries] == [
        ("put_camera", "updated", "key:admin"),
        ("put_camera", "created", f"admin:{world.usernames['admin']}"),
    ]
    assert entries[0]["data"] == {"camera_id": cam, **moved}


def account(**change: Any) -> dict[str, Any]:
    return {"display_name": "新值班员", "role": "operator", "password": "first-password-2026", **change}


async def test_a_new_user_needs_a_password(world: World, app: FastAPI) -> None:
    since = datetime.now(UTC)
    username = uid("new")
    async with client(app) as http:
        r = await http.put(
            f"/api/v1/users/{username}",
            json={"display_name": "无密码", "role": "viewer"},
            headers=headers(world, "admin"),
        )
        assert r.status_code == 422, r.text
        assert r.json()["fields"] == [{"field": "password", "reason": "required for a new user"}]
        [entry] = await audit_of(world, http, since, username=username)
        assert entry["outcome"] == "refused" and entry["detail"].startswith("password:")
        # a password too short is refused by name as well
        r = await http.put(
            f"/api/v1/users/{username}", json=account(password="short"), headers=headers(world, "admin")
        )
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "password", r.text
        assert await world.pool.fetchval("SELECT 1 FROM users WHERE username = $1", username) is None
        r = await http.put(f"/api/v1/users/{username}", json=account(), headers=headers(world, "admin"))
        assert r.status_code == 201, r.text
        assert r.json() == {
            "username": username,
            "display_name": "新值班员",
            "role": "operator",
            "disabled": False,
            "responder_id": None,
            "sessions_ended": 0,
        }
        login = await http.post(
            "/api/v1/auth/login", json={"username": username, "password": "first-password-2026"}
        )
        assert login.status_code == 200 and login.json()["role"] == "operator"


async def test_the_responder_role_and_only_it_takes_a_responder_id(world: World, app: FastAPI) -> None:
    rid = world.responder_ids["responder2"]
    async with client(app) as http:
        for body, reason in (
            (account(role="responder"), "required for role responder, and only for it"),
            (account(role="viewer", responder_id=rid), "required for role responder, and only for it"),
            (account(role="responder", responder_id=uid("NOBODY")), "unknown responder"),
        ):
            r = await http.put(f"/api/v1/users/{uid('phone')}", json=body, headers=headers(world, "admin"))
            assert r.status_code == 422, r.text
            [field] = r.json()["fields"]
            assert field["field"] == "responder_id" and field["reason"].startswith(reason), field
        username = uid("phone")
        r = await http.put(
            f"/api/v1/users/{username}",
            json=account(role="responder", responder_id=rid),
            headers=headers(world, "admin"),
        )
        assert r.status_code == 201 and r.json()["responder_id"] == rid, r.text
        token = (
            await http.post(
                "/api/v1/auth/login", json={"username": username, "password": "first-password-2026"}
            )
        ).json()["token"]
        me = await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.json()["role"] == "responder" and me.json()["responder_id"] == rid


async def test_an_administrator_cannot_disable_their_own_login(world: World, app: FastAPI) -> None:
    since = datetime.now(UTC)
    admin = world.usernames["admin"]
    async with client(app) as http:
        r = await http.put(
            f"/api/v1/users/{admin}",
            json={"display_name": "管理员", "role": "admin", "disabled": True},
            headers=headers(world, "admin"),
        )
        assert r.status_code == 422, r.text
        assert r.json()["fields"] == [
            {"field": "disabled", "reason": "an administrator cannot disable their own login"}
        ]
        # nothing changed: still enabled, the session still works
        assert (await http.get("/api/v1/auth/me", headers=headers(world, "admin"))).status_code == 200
        [entry] = await audit_of(world, http, since, username=admin)
    assert entry["outcome"] == "refused" and entry["detail"].startswith("disabled:")
    assert await world.pool.fetchval("SELECT disabled FROM users WHERE username = $1", admin) is False


async def test_a_new_password_ends_the_users_sessions(world: World, app: FastAPI) -> None:
    since = datetime.now(UTC)
    username = uid("duty")
    old, new = "first-password-2026", "second-password-2026"

    async def login(http: httpx.AsyncClient, password: str) -> httpx.Response:
        return await http.post("/api/v1/auth/login", json={"username": username, "password": password})

    async def me(http: httpx.AsyncClient, token: str) -> int:
        return (await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})).status_code

    async with client(app) as http:
        admin = headers(world, "admin")
        assert (await http.put(f"/api/v1/users/{username}", json=account(), headers=admin)).status_code == 201
        tokens = [(await login(http, old)).json()["token"] for _ in range(2)]  # a console and a laptop
        # a new display name alone ends nothing
        r = await http.put(
            f"/api/v1/users/{username}", json=account(display_name="改名", password=None), headers=admin
        )
        assert r.status_code == 200 and r.json()["sessions_ended"] == 0, r.text
        assert [await me(http, t) for t in tokens] == [200, 200]
        # a new password ends both, at once
        r = await http.put(f"/api/v1/users/{username}", json=account(password=new), headers=admin)
        assert r.status_code == 200 and r.json()["sessions_ended"] == 2, r.text
        assert [await me(http, t) for t in tokens] == [401, 401]
        assert (await login(http, old)).status_code == 401
        assert (await login(http, new)).status_code == 200
        entries = await audit_of(world, http, since, username=username)
    assert [
        (e["outcome"], e["data"]["password_changed"], e["data"].get("sessions_ended")) for e in entries
    ] == [
        ("updated", True, 2),
        ("updated", False, 0),
        ("created", True, 0),
    ]
    text = orjson.dumps(entries).decode()
    assert old not in text and new not in text  # the log says a password changed, never which
