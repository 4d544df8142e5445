"""Access control over HTTP, on a fresh in-process app with the real PostgreSQL and Redis.

The authorization matrix calls every route of the app (enumerated from `app.routes`: a new route
without a row here fails) as every kind of caller and checks the status. Then: object-level
checks for responders, masking of every endpoint that returns incidents, the audited reveal,
the lockout answer, idle expiry, and that no one can edit the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Mount

from console.auth import ApiKeys, Sessions
from console.http import ConsoleServices, access_rules, create_http_app
from console.intake import IntakeService
from console.passwords import hash_password
from console.permissions import KEY_PERMISSIONS, USER_PERMISSIONS, Perm, key_allows, user_allows
from console.registry import RegistryService
from console.serving import http_config
from console.throttle import Backoff, LoginPolicy
from devtools.seed import DEMO_API_KEYS, api_key_hash
from devtools.stack import free_port
from dispatcher.core.task import MAX_PHOTOS
from infra.db import init_connection
from infra.livestate import LiveState
from infra.settings import Settings

PASSWORD = "access-test-2026"
PHONE, NAME, REPORTER = "13912345678", "王先生", "resident-7788"
# Numbers people typed into free text (a description, a note): personal data all the same.
TYPED_MOBILE, TYPED_LANDLINE, TYPED_ID = "13700001111", "023-68881234", "500101199001011234"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
KEYS = ("camera", "hotline", "app", "positions", "admin_key")
USERS = ("operator", "commander", "viewer", "admin", "responder", "responder2")
CALLERS = ("none", *KEYS, *USERS)
STAFF = ("operator", "commander", "viewer", "admin")


@dataclass
class World:
    app: FastAPI
    pool: asyncpg.Pool
    tokens: dict[str, str]
    usernames: dict[str, str]
    incident_id: str
    tracking_no: str
    photo_id: str
    responder_ids: dict[str, str]
    sessions: Sessions


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def client(app: FastAPI, ip: str = "10.1.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://console.test")


async def seed_incident(pool: asyncpg.Pool, responder_id: str) -> tuple[str, str]:
    """A hotline incident with personal data, its report, and an accepted task for `responder_id`."""
    tracking = uid("TRK")
    iid = f"INC-{tracking}"
    payload = {
        "ticket_no": uid("12345"),
        "caller_phone": PHONE,
        "caller_name": NAME,
        "reporter_id": REPORTER,
        "category": "cooking_fumes",
        "description": f"油烟，身份证{TYPED_ID}",
    }
    record = {"caller_phone": PHONE, "caller_name": NAME, "reporter_id": REPORTER, "location": {}}
    await pool.execute(
        """INSERT INTO reports (tracking_no, source, source_id, payload, incident_id)
           VALUES ($1, 'hotline', $2, $3, $4)""",
        tracking,
        payload["ticket_no"],
        payload,
        iid,
    )
    await pool.execute(
        """INSERT INTO incidents (incident_id, status, source, category, severity, title, description,
                                  lon, lat, occurred_at, record)
           VALUES ($1, 'dispatched', 'hotline', 'cooking_fumes', 3, '油烟扰民', $3,
                   106.53, 29.63, now(), $2)""",
        iid,
        record,
        f"楼下饭店油烟，回电{TYPED_MOBILE}联系人李女士",
    )
    await pool.execute(
        "INSERT INTO incident_reports (incident_id, tracking_no) VALUES ($1, $2)", iid, tracking
    )
    await pool.execute(
        """INSERT INTO incident_events (event_id, incident_id, version, type, actor, at, public, data)
           VALUES ($1, $2, 1, 'incident.file', 'system:intake', now(), true, $3)""",
        uid("EV"),
        iid,
        {"state": "new", "caller_phone": PHONE},
    )
    await pool.execute(
        """INSERT INTO incident_events (event_id, incident_id, version, type, actor, at, public, data)
           VALUES ($1, $2, 2, 'incident.note', 'operator:duty', now(), false, $3)""",
        uid("EV"),
        iid,
        {"state": "dispatched", "text": f"居民来电{TYPED_LANDLINE}催办", "reason": f"改约{TYPED_MOBILE}"},
    )
    await pool.execute(
        """INSERT INTO tasks (task_id, incident_id, responder_id, responder_name, responder_kind, kind,
                              state, version, org, offered_at, accepted_at, updated_at, note)
           VALUES ($1, $2, $3, '测试网格员', 'grid_worker', 'response', 'accepted', 1, '测试社区',
                   now(), now(), now(), $4)""",
        uid("T"),
        iid,
        responder_id,
        f"已电话联系{TYPED_LANDLINE}",
    )
    return iid, tracking


def make_app(pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, sessions: Sessions) -> FastAPI:
    live = LiveState(redis)
    dead_producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")  # never started: nothing is published
    return create_http_app(
        ConsoleServices(
            settings=replace(settings, session_ttl_s=sessions.ttl_s),
            pool=pool,
            api_keys=ApiKeys(pool),
            sessions=sessions,
            intake=IntakeService(pool, dead_producer, publish_timeout_s=0.5),
            registry=RegistryService(pool, dead_producer, live),
            live=live,
        )
    )


@pytest.fixture(scope="module")
async def world(pg: asyncpg.Pool, redis: aioredis.Redis, settings: Settings) -> AsyncIterator[World]:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=5, init=init_connection)
    assert pool is not None
    await pool.execute(
        """INSERT INTO api_keys (key_hash, role, name)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING""",
        [api_key_hash(k) for k in DEMO_API_KEYS.values()],
        list(DEMO_API_KEYS),
        list(DEMO_API_KEYS),
    )
    pw = hash_password(PASSWORD)
    usernames: dict[str, str] = {}
    responder_ids: dict[str, str] = {}
    for caller in USERS:
        username = uid(caller)
        role = "responder" if caller.startswith("responder") else caller
        rid = None
        if role == "responder":
            rid = username  # a responder logs in with their id
            await pool.execute(
                """INSERT INTO responders (responder_id, name, kind, org)
                   VALUES ($1, '测试', 'grid_worker', '社区')""",
                rid,
            )
            responder_ids[caller] = rid
        await pool.execute(
            """INSERT INTO users (username, display_name, role, password_hash, responder_id)
               VALUES ($1, $1, $2, $3, $4)""",
            username,
            role,
            pw,
            rid,
        )
        usernames[caller] = username
    iid, tracking = await seed_incident(pool, responder_ids["responder"])
    sessions = Sessions(pool, 3600, policy=LoginPolicy(pair=Backoff(free=4, first_s=900, most_s=900)))
    app = make_app(pool, redis, settings, sessions)
    tokens: dict[str, str] = {}
    async with client(app) as http:
        for caller, username in usernames.items():
            r = await http.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
            assert r.status_code == 200, r.text
            tokens[caller] = r.json()["token"]
        r = await http.post(
            "/api/v1/photos",
            content=PNG,
            headers={"Content-Type": "image/png", "Authorization": f"Bearer {tokens['responder']}"},
        )
        assert r.status_code == 201, r.text
        photo_id = r.json()["photo_id"]
    yield World(app, pool, tokens, usernames, iid, tracking, photo_id, responder_ids, sessions)
    await pool.close()


def headers(world: World, caller: str) -> dict[str, str]:
    if caller == "none":
        return {}
    if caller in KEYS:
        return {"X-Api-Key": DEMO_API_KEYS["admin" if caller == "admin_key" else caller]}
    return {"Authorization": f"Bearer {world.tokens[caller]}"}


def expect(default: int, **by_caller: int) -> dict[str, int]:
    return {c: by_caller.get(c, default) for c in CALLERS}


def staff(ok: int, others: int = 403, **extra: int) -> dict[str, int]:
    """Session users: staff `ok`, responders `others`; keys and nobody 401."""
    users = {u: (ok if u in STAFF else others) for u in USERS}
    return expect(401, **{**users, **extra})


def key_only(key: str, ok: int = 422) -> dict[str, int]:
    return expect(401, **{key: ok})


# (method, path) -> how to call it and what each caller gets. Path templates are filled in by `call`.
MATRIX: dict[tuple[str, str], tuple[dict[str, Any], dict[str, int]]] = {
    ("POST", "/api/v1/intake/camera-alarms"): ({"json": {}}, key_only("camera")),
    ("POST", "/api/v1/intake/hotline-tickets"): ({"json": {}}, key_only("hotline")),
    ("POST", "/api/v1/intake/app-reports"): ({"json": {}}, key_only("app")),
    ("POST", "/api/v1/intake/positions"): ({"json": {}}, key_only("positions")),
    ("PUT", "/api/v1/responders/{responder_id}"): (
        {"json": {}},
        staff(403, admin=422, admin_key=422),
    ),
    ("PUT", "/api/v1/cameras/{camera_id}"): ({"json": {}}, staff(403, admin=422, admin_key=422)),
    ("PUT", "/api/v1/users/{username}"): (
        {"json": {"display_name": "新观察员", "role": "viewer", "password": "a-long-password-1"}},
        staff(403, admin=201),
    ),
    ("POST", "/api/v1/auth/login"): ({"json": {}}, expect(422)),
    ("POST", "/api/v1/auth/logout"): (
        {"fresh_session": True},
        expect(204, none=401, **dict.fromkeys(KEYS, 401)),
    ),
    ("GET", "/api/v1/auth/me"): ({}, staff(200, 200)),
    ("GET", "/api/v1/auth/throttles"): ({}, staff(403, admin=200)),
    ("GET", "/api/v1/incidents"): ({}, staff(200, 200)),
    ("GET", "/api/v1/incidents/{incident_id}"): ({}, staff(200, 200, responder2=403)),
    ("POST", "/api/v1/incidents/{incident_id}/reveal"): (
        {"json": {"reason": "回访核实"}},
        staff(403, operator=200, commander=200),
    ),
    ("GET", "/api/v1/audit"): ({}, staff(403, operator=200, commander=200, admin=200)),
    ("GET", "/api/v1/reports/{tracking_no}"): ({}, expect(200)),
    ("POST", "/api/v1/reports/{tracking_no}/feedback"): ({"json": {}}, expect(422)),
    ("GET", "/api/v1/rates"): ({}, staff(200)),
    ("GET", "/api/v1/config"): ({}, expect(200)),
    ("GET", "/healthz"): ({}, expect(200)),
    ("POST", "/api/v1/photos"): (
        {"content": b"", "headers": {"Content-Type": "image/png"}},
        staff(403, 422),
    ),
    ("GET", "/api/v1/photos/{photo_id}"): (
        {},
        staff(200, 200, admin=403, responder2=403),
    ),
    ("GET", "/api/v1/grids"): ({}, staff(200)),
    ("GET", "/api/v1/responders/live"): ({}, staff(200)),
    ("GET", "/"): ({}, expect(200)),
    ("GET", "/responder"): ({}, expect(200)),
    ("GET", "/favicon.ico"): ({}, expect(204)),
    ("GET", "/docs"): ({}, expect(200)),
}
# Routes that are not API routes: FastAPI's docs and the static files. Public by nature.
PUBLIC_PAGES = {
    "/openapi.json": "/openapi.json",
    "/static": "/static/console.js",
    "/vendor/leaflet": "/vendor/leaflet/leaflet.js",
    "/vendor/swagger-ui": "/vendor/swagger-ui/swagger-ui-bundle.js",
}


def fill(world: World, path: str) -> str:
    return (
        path.replace("{responder_id}", uid("R"))
        .replace("{camera_id}", uid("CAM"))
        .replace("{username}", uid("new"))
        .replace("{incident_id}", world.incident_id)
        .replace("{tracking_no}", world.tracking_no)
        .replace("{photo_id}", world.photo_id)
    )


async def call(world: World, http: httpx.AsyncClient, method: str, path: str, caller: str) -> httpx.Response:
    how = dict(MATRIX[(method, path)][0])
    hdrs = {**how.pop("headers", {}), **headers(world, caller)}
    if how.pop("fresh_session", False) and caller in USERS:
        fresh = await world.sessions.login(world.usernames[caller], PASSWORD)
        assert fresh is not None
        hdrs["Authorization"] = f"Bearer {fresh[0]}"
    return await http.request(method, fill(world, path), headers=hdrs, **how)


async def test_every_route_answers_every_caller_as_the_table_says(world: World) -> None:
    routes: list[tuple[str, str]] = []
    pages: list[str] = []
    for route in world.app.routes:
        if isinstance(route, APIRoute):
            routes += [(m, route.path) for m in sorted(route.methods)]
        elif isinstance(route, Mount):
            pages.append(route.path)
        else:
            pages.append(route.path)  # type: ignore[attr-defined]
    unknown = [r for r in routes if r not in MATRIX] + [p for p in pages if p not in PUBLIC_PAGES]
    assert not unknown, f"routes without a row in the authorization matrix: {unknown}"
    assert set(MATRIX) == set(routes), "rows for routes that no longer exist"
    wrong = []
    async with client(world.app) as http:
        for method, path in routes:
            for caller, want in MATRIX[(method, path)][1].items():
                r = await call(world, http, method, path, caller)
                if r.status_code != want:
                    wrong.append(f"{method} {path} as {caller}: {r.status_code} (want {want}) {r.text[:160]}")
                elif r.status_code in (401, 403):
                    body = r.json()
                    assert body["error"] and body["message"], (method, path, caller, body)
        for url in PUBLIC_PAGES.values():  # ./centre test installs the browser libraries: none is skipped
            r = await http.get(url)
            if r.status_code != 200:
                wrong.append(f"GET {url}: {r.status_code}")
    assert not wrong, "\n".join(wrong)


def test_the_app_declares_one_access_rule_per_route(world: World) -> None:
    rules = access_rules(world.app)
    assert rules[("POST", "/api/v1/incidents/{incident_id}/reveal")] == "user:reveal"
    assert rules[("PUT", "/api/v1/cameras/{camera_id}")] == "key|user:registry.write"
    assert rules[("POST", "/api/v1/intake/camera-alarms")] == "key:intake.camera"
    assert rules[("GET", "/api/v1/reports/{tracking_no}")] == "public"


def test_an_app_with_an_unguarded_route_refuses_to_build(world: World) -> None:
    app = FastAPI()

    @app.get("/api/v1/oops")
    async def oops() -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="GET /api/v1/oops"):
        access_rules(app)


def test_permission_table() -> None:
    assert {r for r, perms in USER_PERMISSIONS.items() if Perm.REVEAL in perms} == {"operator", "commander"}
    assert {r for r, perms in USER_PERMISSIONS.items() if Perm.DISPATCH in perms} == {"operator", "commander"}
    assert {r for r, perms in USER_PERMISSIONS.items() if Perm.AUDIT_READ in perms} == {
        "operator",
        "commander",
        "admin",
    }
    assert {r for r, perms in USER_PERMISSIONS.items() if Perm.REGISTRY_WRITE in perms} == {"admin"}
    assert {r for r, perms in KEY_PERMISSIONS.items() if Perm.REGISTRY_WRITE in perms} == {"admin"}
    assert USER_PERMISSIONS["viewer"] == {Perm.SESSION, Perm.BOARD_READ, Perm.PHOTO_READ_ANY}
    assert USER_PERMISSIONS["responder"] == {Perm.SESSION, Perm.OWN_TASKS_READ, Perm.PHOTO_UPLOAD}
    # Each intake key reaches its own endpoint and nothing else.
    for role in ("camera", "hotline", "app", "positions"):
        assert KEY_PERMISSIONS[role] == {Perm(f"intake.{role}")}
    assert not user_allows(None, Perm.SESSION) and not key_allows("nobody", Perm.INTAKE_APP)
    assert not user_allows("responder", Perm.BOARD_READ) and not user_allows("viewer", Perm.REVEAL)
    # docs/security.md prints the table: every permission is named there.
    doc = (Path(__file__).resolve().parents[3] / "docs" / "security.md").read_text(encoding="utf-8")
    assert all(f"`{p.value}`" in doc for p in Perm), [p.value for p in Perm if f"`{p.value}`" not in doc]


def no_personal_data(payload: Any) -> None:
    text = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS).decode()
    for secret in (PHONE, NAME, REPORTER, TYPED_MOBILE, TYPED_LANDLINE, TYPED_ID):
        assert secret not in text, (secret, text[:400])


async def test_no_endpoint_answers_anybody_with_personal_data(world: World) -> None:
    """Every GET route of the app (from its own route table, not a list here), as every caller:
    no answer holds a caller's phone or name, a reporter's id, or a number typed into free text.
    Only the audited reveal (a POST) returns them."""
    async with client(world.app) as http:
        gets = [path for (method, path) in MATRIX if method == "GET"]
        assert len(gets) >= 12  # the route table really was read
        for path in gets:
            for caller in CALLERS:
                r = await http.get(fill(world, path), headers=headers(world, caller))
                if r.headers.get("content-type", "").startswith("application/json"):
                    no_personal_data(r.json())


async def test_the_incident_endpoints_mask_personal_data_where_it_sits(world: World) -> None:
    async with client(world.app) as http:
        for caller in ("operator", "commander", "viewer", "admin", "responder"):
            auth = headers(world, caller)
            listing = (await http.get("/api/v1/incidents?status=all", headers=auth)).json()
            full = (await http.get(f"/api/v1/incidents/{world.incident_id}", headers=auth)).json()
            progress = (await http.get(f"/api/v1/reports/{world.tracking_no}")).json()
            for payload in (listing, full, progress):
                no_personal_data(payload)
            assert any(i["incident_id"] == world.incident_id for i in listing["incidents"]), caller
            if caller != "responder":
                assert full["caller_phone"] == "139****5678" and full["caller_name"] == "王**"
                assert full["reports"][0]["payload"]["caller_phone"] == "139****5678"
                assert full["timeline"][0]["data"]["caller_phone"] == "139****5678"
                assert full["tasks"] and full["recommended"] is not None
                # numbers typed into free text are masked where they sit
                assert "回电137****1111联系人" in full["description"]
                assert full["reports"][0]["payload"]["description"] == "油烟，身份证5001**********1234"
                assert full["tasks"][0]["note"] == "已电话联系023*****1234"
                assert full["timeline"][1]["data"]["text"] == "居民来电023*****1234催办"
        # A responder's view: their job, no personal fields even masked, no other responders.
        mine = (
            await http.get(f"/api/v1/incidents/{world.incident_id}", headers=headers(world, "responder"))
        ).json()
        assert "caller_phone" not in mine and "recommended" not in mine and "reports" not in mine
        assert [t["responder_id"] for t in mine["tasks"]] == [world.responder_ids["responder"]]
        other = (await http.get("/api/v1/incidents?status=all", headers=headers(world, "responder2"))).json()
        assert other["incidents"] == []


async def test_a_reveal_answers_the_numbers_and_is_audited(world: World) -> None:
    async with client(world.app, ip="10.9.8.7") as http:
        r = await http.post(
            f"/api/v1/incidents/{world.incident_id}/reveal",
            json={"reason": "回访居民核实情况"},
            headers=headers(world, "commander"),
        )
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        assert (
            body["caller_phone"] == PHONE and body["caller_name"] == NAME and body["reporter_id"] == REPORTER
        )
        assert body["reports"][0]["caller_phone"] == PHONE
        # and the free text with numbers in it, unmasked, named by where it sits
        texts = {t["where"].split(".")[-1]: t["text"] for t in body["texts"]}
        assert TYPED_MOBILE in texts["description"] and TYPED_LANDLINE in texts["note"]
        assert TYPED_LANDLINE in texts["text"] and TYPED_MOBILE in texts["reason"]
        assert body["reports"][0]["texts"] == [{"where": "description", "text": f"油烟，身份证{TYPED_ID}"}]
        entry = await world.pool.fetchrow("SELECT * FROM audit_log WHERE command_id = $1", body["audit_id"])
        assert entry["kind"] == "reveal" and entry["actor"] == f"commander:{world.usernames['commander']}"
        assert entry["incident_id"] == world.incident_id and entry["origin"] == "10.9.8.7"
        assert entry["detail"] == "回访居民核实情况" and entry["outcome"] == "revealed"
        assert entry["data"]["fields"] == [
            "caller_name",
            "caller_phone",
            "description",
            "note",
            "reason",
            "reporter_id",
            "text",
        ]
        for value in (PHONE, TYPED_MOBILE, TYPED_LANDLINE, TYPED_ID):
            assert value not in str(entry["data"])  # the log names the fields, never their values
        # The reveal is readable in the audit log over the API, newest first, filtered.
        log = await http.get(
            f"/api/v1/audit?kind=reveal&incident_id={world.incident_id}&limit=1",
            headers=headers(world, "operator"),
        )
        assert log.status_code == 200
        [latest] = log.json()["entries"]
        assert latest["id"] == body["audit_id"] and latest["origin"] == "10.9.8.7"
        # A reason is required; a viewer or a responder is refused (and nothing is revealed).
        assert (
            await http.post(
                f"/api/v1/incidents/{world.incident_id}/reveal", json={}, headers=headers(world, "operator")
            )
        ).status_code == 422
        for caller in ("viewer", "responder"):
            refused = await http.post(
                f"/api/v1/incidents/{world.incident_id}/reveal",
                json={"reason": "好奇"},
                headers=headers(world, caller),
            )
            assert refused.status_code == 403 and PHONE not in refused.text


async def test_audit_pages_newest_first(world: World) -> None:
    async with client(world.app) as http:
        auth = headers(world, "admin")
        first = (await http.get("/api/v1/audit?limit=2", headers=auth)).json()
        assert len(first["entries"]) == 2 and first["next_before"] is not None
        seqs = [e["seq"] for e in first["entries"]]
        assert seqs == sorted(seqs, reverse=True)
        second = (await http.get(f"/api/v1/audit?limit=2&before={first['next_before']}", headers=auth)).json()
        assert all(e["seq"] < seqs[-1] for e in second["entries"])
        logins = (
            await http.get(f"/api/v1/audit?kind=login&actor=admin:{world.usernames['admin']}", headers=auth)
        ).json()
        assert logins["entries"] and all(
            e["kind"] == "login" and e["outcome"] == "ok" for e in logins["entries"]
        )
        assert (await http.get("/api/v1/audit?kind=nonsense", headers=auth)).status_code == 422
        assert (await http.get("/api/v1/audit?since=2026-01-01T00:00:00", headers=auth)).status_code == 422
        for far in ("0001-01-01T00:00:00%2B08:00", "9999-12-31T23:00:00-08:00"):  # not a 500
            r = await http.get(f"/api/v1/audit?since={far}", headers=auth)
            assert r.status_code == 422 and r.json()["message"].startswith("since:"), r.text


async def test_nobody_can_edit_the_audit_log(world: World) -> None:
    entry = await world.pool.fetchval("SELECT command_id FROM audit_log ORDER BY seq DESC LIMIT 1")
    for sql in (
        "UPDATE audit_log SET outcome = 'ok' WHERE command_id = $1",
        "DELETE FROM audit_log WHERE command_id = $1",
    ):
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await world.pool.execute(sql, entry)
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await world.pool.execute("TRUNCATE audit_log")
    assert await world.pool.fetchval("SELECT 1 FROM audit_log WHERE command_id = $1", entry)
    # And no route writes to it but by appending: no PUT, PATCH or DELETE under /api/v1/audit.
    assert [m for (m, p) in access_rules(world.app) if p.startswith("/api/v1/audit")] == ["GET"]


async def test_registry_and_user_changes_are_audited_and_take_effect(world: World) -> None:
    async with client(world.app, ip="10.7.7.7") as http:
        cam = uid("CAM")
        r = await http.put(
            f"/api/v1/cameras/{cam}",
            json={"name": "测试枪机", "lon": 106.53, "lat": 29.63},
            headers=headers(world, "admin"),
        )
        assert r.status_code == 201, r.text
        row = await world.pool.fetchrow(
            "SELECT * FROM audit_log WHERE kind = 'admin' AND data->>'camera_id' = $1", cam
        )
        assert row["actor"] == f"admin:{world.usernames['admin']}" and row["outcome"] == "created"
        assert row["origin"] == "10.7.7.7"
        # A user disabled by the administrator loses their session at once and cannot log in.
        victim = uid("viewer")
        body = {"display_name": "临时观察员", "role": "viewer", "password": "temporary-pass-1"}
        assert (
            await http.put(f"/api/v1/users/{victim}", json=body, headers=headers(world, "admin"))
        ).status_code == 201
        login = await http.post("/api/v1/auth/login", json={"username": victim, "password": body["password"]})
        token = login.json()["token"]
        assert (
            await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        ).status_code == 200
        off = {**body, "disabled": True}
        del off["password"]
        r = await http.put(f"/api/v1/users/{victim}", json=off, headers=headers(world, "admin"))
        assert r.status_code == 200 and r.json()["sessions_ended"] == 1
        assert (
            await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        ).status_code == 401
        again = await http.post("/api/v1/auth/login", json={"username": victim, "password": body["password"]})
        assert again.status_code == 401
        outcomes = [
            r["outcome"]
            for r in await world.pool.fetch(
                "SELECT outcome FROM audit_log WHERE kind = 'admin' AND data->>'username' = $1 ORDER BY seq",
                victim,
            )
        ]
        assert outcomes == ["created", "updated"]
        # Refusals name the field.
        bad = await http.put(
            f"/api/v1/users/{uid('x')}",
            json={"display_name": "x", "role": "viewer"},
            headers=headers(world, "admin"),
        )
        assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "password"


async def test_repeated_failures_answer_429_with_retry_after(world: World) -> None:
    async with client(world.app, ip="10.55.0.1") as http:
        username = world.usernames["viewer"]
        for _ in range(4):
            r = await http.post(
                "/api/v1/auth/login", json={"username": username, "password": "wrong-password"}
            )
            assert r.status_code == 401
        r = await http.post("/api/v1/auth/login", json={"username": username, "password": "wrong-password"})
        assert r.status_code == 429 and r.json()["error"] == "login_delayed"
        assert (
            int(r.headers["retry-after"]) == 900
            and "15分钟后再试" in r.json()["message"]
            and "retry in 900 s" in r.json()["message"]
        )
        r = await http.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 429  # the right password too, while its lane waits
        # Existing sessions are not ended by a wait (it slows guessing, not work).
        assert (await http.get("/api/v1/auth/me", headers=headers(world, "viewer"))).status_code == 200
        # The administrator sees the lane that waits ...
        lanes = (await http.get("/api/v1/auth/throttles", headers=headers(world, "admin"))).json()["lanes"]
        assert {"lane": "pair", "username": username, "address": "10.55.0.1"}.items() <= lanes[0].items()
        # ... and lifts it by setting a new password.
        r = await http.put(
            f"/api/v1/users/{username}",
            json={"display_name": "观察员", "role": "viewer", "password": "a-new-password-2"},
            headers=headers(world, "admin"),
        )
        assert r.status_code == 200
        r = await http.post("/api/v1/auth/login", json={"username": username, "password": "a-new-password-2"})
        assert r.status_code == 200
        world.tokens["viewer"] = r.json()["token"]  # the password change ended the old session


async def test_an_idle_session_expires_over_http(
    world: World, redis: aioredis.Redis, settings: Settings
) -> None:
    app = make_app(world.pool, redis, settings, Sessions(world.pool, 1))  # 1 s idle TTL
    async with client(app) as http:
        r = await http.post(
            "/api/v1/auth/login", json={"username": world.usernames["operator"], "password": PASSWORD}
        )
        assert r.status_code == 200 and r.json()["expires_in"] == 1
        auth = {"Authorization": f"Bearer {r.json()['token']}"}
        for _ in range(4):  # in use for 2 s: alive, the idle deadline slides
            await asyncio.sleep(0.5)
            assert (await http.get("/api/v1/auth/me", headers=auth)).status_code == 200
        await asyncio.sleep(1.3)  # idle past the TTL
        r = await http.get("/api/v1/auth/me", headers=auth)
        assert r.status_code == 401 and "expired" in r.json()["message"]


async def test_client_addresses_come_from_trusted_proxies_only(
    world: World, redis: aioredis.Redis, settings: Settings
) -> None:
    behind_lb = replace(settings, trusted_proxies="10.200.0.0/16, 192.0.2.1")
    app = make_app(world.pool, redis, behind_lb, world.sessions)
    username = world.usernames["commander"]

    async def login_origin(peer: str, forwarded: str) -> str:
        async with client(app, ip=peer) as http:
            r = await http.post(
                "/api/v1/auth/login",
                json={"username": username, "password": PASSWORD},
                headers={"X-Forwarded-For": forwarded},
            )
        assert r.status_code == 200, r.text
        return str(
            await world.pool.fetchval(
                "SELECT origin FROM audit_log WHERE kind = 'login' AND actor = $1 ORDER BY seq DESC LIMIT 1",
                f"commander:{username}",
            )
        )

    # Through the load balancer: the client it saw (spoofed hops before it are ignored).
    assert await login_origin("10.200.0.5", "6.6.6.6, 203.0.113.7, 10.200.3.3") == "203.0.113.7"
    # Straight from the network: a forged header changes nothing.
    assert await login_origin("198.51.100.9", "192.0.2.1") == "198.51.100.9"


@contextlib.contextmanager
def _no_signals(server: uvicorn.Server) -> Iterator[None]:
    yield


async def _served_login_origin(world: World, settings: Settings, redis: aioredis.Redis) -> str:
    """Log in through the app served by uvicorn as console.main configures it, from 127.0.0.1
    with a forged X-Forwarded-For; the address the audit log recorded."""
    app = make_app(world.pool, redis, settings, Sessions(world.pool, 3600))
    server = uvicorn.Server(http_config(app, settings))
    server.capture_signals = lambda: _no_signals(server)  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        username = world.usernames["commander"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}") as http:
            r = await http.post(
                "/api/v1/auth/login",
                json={"username": username, "password": PASSWORD},
                headers={"X-Forwarded-For": "10.9.8.7"},
            )
            assert r.status_code == 200, r.text
        return str(
            await world.pool.fetchval(
                "SELECT origin FROM audit_log WHERE kind = 'login' AND actor = $1 ORDER BY seq DESC LIMIT 1",
                f"commander:{username}",
            )
        )
    finally:
        server.should_exit = True
        await serving


async def test_uvicorn_as_configured_does_not_believe_a_forged_forwarded_for(
    world: World,
    settings: Settings,
    redis: aioredis.Redis,
) -> None:
    """uvicorn's proxy headers trusted loopback before the app's rule ran: from 127.0.0.1, a
    forged header was the audited address and dodged the login throttle."""
    direct = replace(settings, http_port=free_port(), trusted_proxies="")
    assert await _served_login_origin(world, direct, redis) == "127.0.0.1"
    behind = replace(settings, http_port=free_port(), trusted_proxies="127.0.0.1")
    assert await _served_login_origin(world, behind, redis) == "10.9.8.7"


async def test_a_task_takes_at_most_nine_photos(world: World) -> None:
    async with client(world.app) as http:
        auth = {"Content-Type": "image/png", **headers(world, "responder")}
        held = await world.pool.fetchval(
            "SELECT count(*) FROM photos WHERE responder_id = $1", world.responder_ids["responder"]
        )
        answers = [
            (await http.post("/api/v1/photos", content=PNG, headers=auth)).status_code
            for _ in range(MAX_PHOTOS + 1 - held)
        ]
        assert answers == [201] * (MAX_PHOTOS - held) + [409]
        r = await http.post("/api/v1/photos", content=PNG, headers=auth)
        assert r.status_code == 409 and r.json()["error"] == "too_many_photos"


async def test_a_result_is_rated_once_per_closing(world: World) -> None:
    """Repeated feedback on one case used to be accepted, each adding a timeline entry."""
    iid, tracking = world.incident_id, world.tracking_no
    await world.pool.execute("UPDATE incidents SET status = 'closed' WHERE incident_id = $1", iid)
    await world.pool.execute(
        """INSERT INTO incident_events (event_id, incident_id, version, type, actor, at, public, data)
           VALUES ($1, $2, 50, 'incident.close', 'system:dispatcher', now() - interval '1 minute', true,
                   '{"state": "closed"}')""",
        uid("EV"),
        iid,
    )
    try:
        await world.pool.execute(
            """INSERT INTO feedback (feedback_id, incident_id, tracking_no, satisfied, fixed, at)
               VALUES ($1, $2, $3, true, true, now())""",
            uid("FB"),
            iid,
            tracking,
        )
        async with client(world.app) as http:
            r = await http.post(
                f"/api/v1/reports/{tracking}/feedback", json={"fixed": True, "satisfied": True, "rating": 5}
            )
        assert r.status_code == 409 and r.json()["error"] == "already_rated", r.text
        assert "已评价" in r.json()["message"]
    finally:
        await world.pool.execute("UPDATE incidents SET status = 'dispatched' WHERE incident_id = $1", iid)


PUBLIC_BURST = int(Settings().public_requests_per_s * 30)  # the defaults: 2 a second, 30 s' worth
USER_REQUESTS_BURST = int(Settings().account_requests_per_s * 10)  # 10 a second, 10 s' worth


async def test_the_public_progress_api_is_rate_limited_per_address(world: World) -> None:
    async with client(world.app, ip="198.51.100.77") as http:
        statuses = [
            (await http.get(f"/api/v1/reports/{world.tracking_no}")).status_code
            for _ in range(PUBLIC_BURST + 5)
        ]
        assert statuses[:PUBLIC_BURST] == [200] * PUBLIC_BURST and 429 in statuses[PUBLIC_BURST:]
        limited = await http.get(f"/api/v1/reports/{world.tracking_no}")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    async with client(world.app, ip="198.51.100.78") as other:  # another address: its own allowance
        assert (await other.get(f"/api/v1/reports/{world.tracking_no}")).status_code == 200


@pytest.mark.parametrize("bad_id", ["%2E%2E", ".hidden", "-rf", "a b"])
async def test_a_registry_id_must_start_with_a_letter_or_digit(world: World, bad_id: str) -> None:
    """A responder id of `..` was accepted into the registry."""
    async with client(world.app) as http:
        r = await http.put(
            f"/api/v1/responders/{bad_id}",
            json={"name": "测试", "kind": "volunteer", "org": "队", "on_duty": True},
            headers=headers(world, "admin_key"),
        )
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "responder_id", r.text


async def test_one_account_flooding_the_api_is_slowed_and_others_are_not(
    world: World, redis: aioredis.Redis, settings: Settings
) -> None:
    app = make_app(world.pool, redis, settings, world.sessions)  # its own per-account counts
    async with client(app) as http:
        statuses = [
            (await http.get("/api/v1/incidents?status=open", headers=headers(world, "viewer"))).status_code
            for _ in range(USER_REQUESTS_BURST + 5)
        ]
        assert statuses[:USER_REQUESTS_BURST] == [200] * USER_REQUESTS_BURST and 429 in statuses
        r = await http.get("/api/v1/incidents?status=open", headers=headers(world, "viewer"))
        assert r.status_code == 429 and "此账户请求过于频繁" in r.json()["message"]
        assert int(r.headers["retry-after"]) >= 1
        ok = await http.get("/api/v1/incidents?status=open", headers=headers(world, "operator"))
        assert ok.status_code == 200  # another account: its own allowance
