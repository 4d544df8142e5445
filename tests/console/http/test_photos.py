"""The photos area over HTTP: a responder's photo belongs to the task they are working on (none
active: 409), must say it is a photo (415 otherwise) and be one (422 otherwise), is stored with its
task and incident and read back as sent; an unknown photo is 404.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx
import pytest

from console.http.photos import MAX_PHOTO_BYTES
from console.passwords import hash_password
from tests.console.http import test_access as access
from tests.console.http.test_access import PASSWORD, World, client, headers, uid

world = access.world  # demo users and an incident to hold tasks on

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256))
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


@dataclass(frozen=True)
class Phone:
    responder_id: str
    auth: dict[str, str]


async def a_responder(world: World, http: httpx.AsyncClient, task_state: str | None) -> Phone:
    """A new responder logged in on their phone, with a task in `task_state` on the world's
    incident (None: no task at all)."""
    rid = uid("V")
    await world.pool.execute(
        "INSERT INTO responders (responder_id, name, kind, org) VALUES ($1, '志愿者', 'volunteer', '队')", rid
    )
    await world.pool.execute(
        """INSERT INTO users (username, display_name, role, password_hash, responder_id)
           VALUES ($1, $1, 'responder', $2, $1)""",
        rid,
        hash_password(PASSWORD),
    )
    if task_state is not None:
        await world.pool.execute(
            """INSERT INTO tasks (task_id, incident_id, responder_id, responder_name, responder_kind, kind,
                                  state, version, org, offered_at, updated_at)
               VALUES ($1, $2, $3, '志愿者', 'volunteer', 'response', $4, 1, '队', now(), now())""",
            uid("T"),
            world.incident_id,
            rid,
            task_state,
        )
    r = await http.post("/api/v1/auth/login", json={"username": rid, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return Phone(rid, {"Authorization": f"Bearer {r.json()['token']}"})


async def stored(world: World, phone: Phone) -> int:
    return int(
        await world.pool.fetchval("SELECT count(*) FROM photos WHERE responder_id = $1", phone.responder_id)
    )


async def upload(
    http: httpx.AsyncClient, phone: Phone, body: bytes, content_type: str | None
) -> httpx.Response:
    kind = {} if content_type is None else {"Content-Type": content_type}
    return await http.post("/api/v1/photos", content=body, headers={**phone.auth, **kind})


@pytest.mark.parametrize("task_state", [None, "offered", "done", "declined"])
async def test_a_responder_without_an_active_task_is_409(world: World, task_state: str | None) -> None:
    async with client(world.app) as http:
        phone = await a_responder(world, http, task_state)
        r = await upload(http, phone, JPEG, "image/jpeg")
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "no_active_task" and "accepted" in r.json()["message"]
    assert await stored(world, phone) == 0


@pytest.mark.parametrize("task_state", ["accepted", "en_route", "on_scene"])
async def test_a_photo_of_the_working_task_is_kept_and_read_back_as_sent(
    world: World, task_state: str
) -> None:
    async with client(world.app) as http:
        phone = await a_responder(world, http, task_state)
        r = await upload(http, phone, JPEG, "image/JPEG; charset=binary")  # media type read loosely
        assert r.status_code == 201, r.text
        photo_id, url = r.json()["photo_id"], r.json()["url"]
        assert url == f"http://console.test/api/v1/photos/{photo_id}"
        for reader in (phone.auth, headers(world, "viewer")):  # the uploader, and staff
            back = await http.get(f"/api/v1/photos/{photo_id}", headers=reader)
            assert back.status_code == 200 and back.content == JPEG
            assert back.headers["content-type"] == "image/jpeg"
            assert back.headers["cache-control"] == "private, max-age=3600"
    row = await world.pool.fetchrow("SELECT * FROM photos WHERE photo_id = $1", photo_id)
    task = await world.pool.fetchval("SELECT task_id FROM tasks WHERE responder_id = $1", phone.responder_id)
    assert (row["incident_id"], row["task_id"]) == (world.incident_id, task)


@pytest.mark.parametrize("content_type", [None, "text/plain", "image/gif", "application/octet-stream"])
async def test_a_body_that_does_not_say_it_is_a_photo_is_415(world: World, content_type: str | None) -> None:
    async with client(world.app) as http:
        phone = await a_responder(world, http, "accepted")
        r = await upload(http, phone, PNG, content_type)
    assert r.status_code == 415, r.text
    assert r.json() == {
        "error": "unsupported",
        "message": "Content-Type must be one of image/jpeg, image/png, image/webp",
    }
    assert await stored(world, phone) == 0


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"", "image/png", "body: empty image"),
        (b"GIF89a" + bytes(64), "image/png", "body: not a image/png image"),
        (PNG, "image/jpeg", "body: not a image/jpeg image"),  # a PNG sent as a JPEG
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/webp", "body: not a image/webp image"),
    ],
)
async def test_a_body_that_is_not_that_image_is_422(
    world: World, body: bytes, content_type: str, message: str
) -> None:
    async with client(world.app) as http:
        phone = await a_responder(world, http, "accepted")
        r = await upload(http, phone, body, content_type)
    assert r.status_code == 422, r.text
    assert r.json() == {"error": "invalid", "message": message}
    assert await stored(world, phone) == 0


async def test_a_photo_over_the_limit_is_413_before_it_is_read(world: World) -> None:
    async with client(world.app) as http:
        phone = await a_responder(world, http, "accepted")
        r = await upload(http, phone, PNG + bytes(MAX_PHOTO_BYTES), "image/png")
    assert r.status_code == 413 and r.json()["error"] == "too_large", r.text
    assert await stored(world, phone) == 0


async def test_an_unknown_photo_is_404(world: World) -> None:
    async with client(world.app) as http:
        r = await http.get(f"/api/v1/photos/{uuid.uuid4().hex}", headers=headers(world, "viewer"))
        assert r.status_code == 404, r.text
        assert r.json() == {"error": "not_found", "message": "no such photo"}
        # not even the shape of a photo id: refused by name
        r = await http.get(f"/api/v1/photos/{uuid.uuid4().hex.upper()}", headers=headers(world, "viewer"))
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "photo_id", r.text
