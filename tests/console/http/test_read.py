"""The read area over HTTP: incidents listed masked, filtered by state (an unknown state refused by
name) and paged; one incident whole with its linked reports and timeline; the audited reveal,
whose audit entry names the fields and never their values; 三率 with its dates checked; the grids
as GeoJSON.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from console.intake import BEIJING
from infra.settings import Settings
from tests.console.http import test_access as access
from tests.console.http.test_access import (
    NAME,
    PHONE,
    REPORTER,
    TYPED_ID,
    TYPED_LANDLINE,
    TYPED_MOBILE,
    World,
    client,
    headers,
    make_app,
    uid,
)

world = access.world  # demo users and one hotline incident with a caller's number, a report and a task
SECRETS = (PHONE, NAME, REPORTER, TYPED_MOBILE, TYPED_LANDLINE, TYPED_ID)


@pytest.fixture
async def http(world: World, redis: aioredis.Redis, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A fresh app on the world (its own grid cache), request limits out of the way."""
    fast = replace(settings, account_requests_per_s=1e6, public_requests_per_s=1e6)
    async with client(make_app(world.pool, redis, fast, world.sessions)) as c:
        yield c


async def an_incident(
    pool: asyncpg.Pool,
    status: str = "new",
    occurred_at: datetime | None = None,
    grid_id: str | None = None,
    severity: int = 4,
) -> str:
    """An incident with nothing personal in it."""
    incident_id = uid("INC")
    await pool.execute(
        """INSERT INTO incidents (incident_id, status, source, category, severity, title, lon, lat,
                                  grid_id, occurred_at, record)
           VALUES ($1, $2, 'app', 'garbage_overflow', $5, '垃圾满溢', 106.53, 29.63, $3, $4, '{}')""",
        incident_id,
        status,
        grid_id,
        occurred_at or datetime.now(UTC),
        severity,
    )
    return incident_id


@contextlib.asynccontextmanager
async def listed_first(pool: asyncpg.Pool, *statuses: str) -> AsyncIterator[list[str]]:
    """Incidents in `statuses` that come first in every listing whatever else the session filed
    (severity I for the state filters' order, dated far ahead for the newest-first order of
    `all`), taken out afterwards so that they skew nothing later."""
    ahead = datetime.now(UTC) + timedelta(days=365 * 60)
    made = [
        await an_incident(pool, status, ahead + timedelta(minutes=i), severity=1)
        for i, status in enumerate(statuses)
    ]
    try:
        yield made
    finally:
        await pool.execute("DELETE FROM incidents WHERE incident_id = ANY($1::text[])", made)


def ids(r: httpx.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return [i["incident_id"] for i in r.json()["incidents"]]


async def test_incidents_are_listed_masked(world: World, http: httpx.AsyncClient) -> None:
    r = await http.get("/api/v1/incidents?status=all&limit=1000", headers=headers(world, "viewer"))
    [mine] = [i for i in r.json()["incidents"] if i["incident_id"] == world.incident_id]
    assert mine["caller_phone"] == "139****5678" and mine["caller_name"] == "王**"
    assert mine["status"] == "dispatched" and mine["title"] == "油烟扰民"
    assert "回电137****1111联系人" in mine["description"]  # a number typed into the text, masked too
    assert not [s for s in SECRETS if s in r.text]


async def test_the_status_filter_takes_states_and_names_an_unknown_one(
    world: World, http: httpx.AsyncClient
) -> None:
    auth = headers(world, "operator")
    async with listed_first(world.pool, "new", "dispatched", "cancelled") as made:
        new, dispatched, cancelled = made

        async def listed(query: str) -> set[str]:
            return set(ids(await http.get(f"/api/v1/incidents?limit=1000&{query}", headers=auth))) & set(made)

        assert await listed("status=open") == {new, dispatched}
        assert await listed("") == {new, dispatched}  # open is the default
        assert await listed("status=cancelled") == {cancelled}
        assert await listed("status=new,%20cancelled") == {new, cancelled}
        assert await listed("status=all") == {new, dispatched, cancelled}
    for status, named in (("bogus", "'bogus'"), ("new,Closed", "'Closed'"), ("open,new", "'open'")):
        r = await http.get("/api/v1/incidents", params={"status": status}, headers=auth)
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "invalid" and r.json()["message"].startswith(
            f"status: unknown state {named}"
        )
        assert "in_progress" in r.json()["message"]  # and says what would do


async def test_incidents_page_with_limit_and_offset(world: World, http: httpx.AsyncClient) -> None:
    auth = headers(world, "viewer")
    async with listed_first(world.pool, "cancelled", "cancelled", "cancelled") as made:
        first = await http.get("/api/v1/incidents?status=all&limit=2", headers=auth)
        assert ids(first) == [made[2], made[1]]  # newest first
        assert (first.json()["limit"], first.json()["offset"]) == (2, 0)
        second = await http.get("/api/v1/incidents?status=all&limit=2&offset=2", headers=auth)
        assert ids(second)[0] == made[0] and second.json()["offset"] == 2
        assert ids(await http.get("/api/v1/incidents?status=all&limit=1&offset=1", headers=auth)) == [made[1]]
    for query, field in (("limit=0", "limit"), ("limit=1001", "limit"), ("offset=-1", "offset")):
        r = await http.get(f"/api/v1/incidents?{query}", headers=auth)
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == field, r.text


async def test_one_incident_comes_whole_with_its_reports_and_timeline(
    world: World, http: httpx.AsyncClient
) -> None:
    r = await http.get(f"/api/v1/incidents/{world.incident_id}", headers=headers(world, "commander"))
    assert r.status_code == 200, r.text
    full = r.json()
    assert full["incident_id"] == world.incident_id and full["caller_phone"] == "139****5678"
    [report] = full["reports"]
    assert report["tracking_no"] == world.tracking_no and report["source"] == "hotline"
    assert report["payload"]["caller_phone"] == "139****5678" and report["payload"]["caller_name"] == "王**"
    assert [(e["type"], e["actor"]) for e in full["timeline"]] == [
        ("incident.file", "system:intake"),
        ("incident.note", "operator:duty"),
    ]
    assert [t["responder_id"] for t in full["tasks"]] == [world.responder_ids["responder"]]
    assert not [s for s in SECRETS if s in r.text]
    r = await http.get(f"/api/v1/incidents/{uid('INC-NONE')}", headers=headers(world, "commander"))
    assert r.status_code == 404 and r.json()["error"] == "not_found", r.text


async def test_a_reveal_is_audited_with_the_fields_never_their_values(
    world: World, http: httpx.AsyncClient
) -> None:
    reason = f"回访居民 {uid('case')}"
    r = await http.post(
        f"/api/v1/incidents/{world.incident_id}/reveal",
        json={"reason": reason},
        headers=headers(world, "operator"),
    )
    assert r.status_code == 200, r.text
    revealed = r.json()
    assert revealed["caller_phone"] == PHONE and revealed["caller_name"] == NAME
    assert {"caller_phone", "caller_name", "reporter_id"} <= set(revealed["fields"])
    log = await http.get(
        "/api/v1/audit",
        params={"kind": "reveal", "incident_id": world.incident_id},
        headers=headers(world, "admin"),
    )
    [entry] = [e for e in log.json()["entries"] if e["detail"] == reason]
    assert entry["id"] == revealed["audit_id"] and entry["outcome"] == "revealed"
    assert entry["actor"] == f"operator:{world.usernames['operator']}"
    assert entry["data"]["fields"] == revealed["fields"]
    assert entry["data"]["tracking_nos"] == [world.tracking_no]
    text = orjson.dumps(entry).decode()
    assert not [s for s in SECRETS if s in text], text  # which fields, never what they held


async def test_a_reveal_of_nothing_says_so_and_an_unknown_incident_is_404(
    world: World, http: httpx.AsyncClient
) -> None:
    plain = await an_incident(world.pool)
    r = await http.post(
        f"/api/v1/incidents/{plain}/reveal", json={"reason": "核实"}, headers=headers(world, "commander")
    )
    assert r.status_code == 200 and r.json()["fields"] == [] and r.json()["reports"] == [], r.text
    outcome = await world.pool.fetchval(
        "SELECT outcome FROM audit_log WHERE command_id = $1", r.json()["audit_id"]
    )
    assert outcome == "nothing_to_reveal"
    unknown = uid("INC-NONE")
    r = await http.post(
        f"/api/v1/incidents/{unknown}/reveal", json={"reason": "核实"}, headers=headers(world, "commander")
    )
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert await world.pool.fetchval("SELECT count(*) FROM audit_log WHERE incident_id = $1", unknown) == 0


async def test_rates_check_their_dates(world: World, http: httpx.AsyncClient) -> None:
    auth = headers(world, "viewer")
    for query, message in (
        ("from=2026-11-22&to=2026-11-01", "from: must not be after to"),
        ("from=1999-12-31&to=2000-01-05", "from: must be between 2000-01-01 and 2099-12-31"),
        ("from=2026-01-01&to=2100-01-01", "to: must be between 2000-01-01 and 2099-12-31"),
        ("from=2024-01-01&to=2026-01-01", "from/to: at most a year at a time"),
    ):
        r = await http.get(f"/api/v1/rates?{query}", headers=auth)
        assert r.status_code == 422 and r.json()["message"] == message, (query, r.text)
    for query, field in (("from=2026-13-01", "from"), ("by=street", "by")):
        r = await http.get(f"/api/v1/rates?{query}", headers=auth)
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == field, (query, r.text)
    r = await http.get("/api/v1/rates?by=day&from=2026-11-01&to=2026-11-22", headers=auth)
    assert r.status_code == 200, r.text
    assert {k: v for k, v in r.json().items() if k != "rows"} == {
        "by": "day",
        "from": "2026-11-01",
        "to": "2026-11-22",
    }
    # by default the last seven Beijing days, today included
    r = await http.get("/api/v1/rates", headers=auth)
    first, last = (datetime.fromisoformat(r.json()[k]).date() for k in ("from", "to"))
    assert last == datetime.now(BEIJING).date() and (last - first).days == 6 and r.json()["by"] == "all"


async def test_rates_count_an_incident_in_its_grid_and_its_days(
    world: World, http: httpx.AsyncClient
) -> None:
    grid = uid("GRID")
    await an_incident(world.pool, grid_id=grid)
    await an_incident(world.pool, "cancelled", grid_id=grid)
    auth = headers(world, "viewer")
    rows = (await http.get("/api/v1/rates?by=grid", headers=auth)).json()["rows"]
    [row] = [r for r in rows if r["key"] == grid]
    assert row["filed"] == 1  # a cancelled incident is not work the grid was given
    long_ago = (await http.get("/api/v1/rates?by=grid&from=2026-01-01&to=2026-01-07", headers=auth)).json()
    assert grid not in [r["key"] for r in long_ago["rows"]]


async def test_the_grids_come_as_geojson(world: World, http: httpx.AsyncClient) -> None:
    community, grid = uid("COM"), uid("GRID")
    # far from the demo street: a grid over it would take its points in other tests (shared database)
    ring = [[-150.53, -40.63], [-150.54, -40.63], [-150.54, -40.64], [-150.53, -40.64], [-150.53, -40.63]]
    polygon: dict[str, Any] = {"type": "Polygon", "coordinates": [ring]}
    await world.pool.execute(
        "INSERT INTO communities (community_id, name) VALUES ($1, '清晖岸社区')", community
    )
    await world.pool.execute(
        """INSERT INTO grids (grid_id, name, community_id, polygon, min_lon, min_lat, max_lon, max_lat)
           VALUES ($1, '第一网格', $2, $3, -150.54, -40.64, -150.53, -40.63)""",
        grid,
        community,
        polygon,
    )
    r = await http.get("/api/v1/grids", headers=headers(world, "viewer"))
    assert r.status_code == 200, r.text
    fc = r.json()
    assert fc["type"] == "FeatureCollection"
    assert all(f["type"] == "Feature" and f["geometry"]["type"] == "Polygon" for f in fc["features"])
    [feature] = [f for f in fc["features"] if f["properties"]["grid_id"] == grid]
    assert feature["geometry"] == polygon
    assert feature["properties"] == {
        "grid_id": grid,
        "name": "第一网格",
        "community_id": community,
        "community_name": "清晖岸社区",
    }
