"""The residents' area over HTTP (进度随时查): a report's public progress by its tracking number, in
Chinese, public steps only and no personal data, following the report from intake through the
dispatcher's filing to its end; 404 for a number nobody was given; feedback before the case is
closed refused (409 not_closed).

Reports come in through the real intake; the dispatcher's filing and commands are driven directly
(dispatcher.service.IncidentService), as the streams that would carry them do not run here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from contracts.commands import Command
from contracts.incidents import EnrichedIncident
from dispatcher.core.plan import load_plans
from dispatcher.service import IncidentService
from tests.console.http import test_intake as intake
from tests.console.http.test_access import World, client, headers, uid

world, producer, app = intake.world, intake.producer, intake.app  # the real app, publishing

PHONE, NAME = "13566667777", "赵女士"
TYPED = "13122223333"  # a number an operator typed into a reason


def ticket() -> dict[str, Any]:
    return {**intake.hotline_ticket(), "caller_phone": PHONE, "caller_name": NAME}


async def taken(world: World, http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    r = await http.post("/api/v1/intake/hotline-tickets", json=body, headers=headers(world, "hotline"))
    assert r.status_code == 202, r.text
    return str(r.json()["tracking_no"])


async def filed(world: World, tracking_no: str, body: dict[str, Any]) -> str:
    """File the report as the dispatcher does once the streams have enriched it; its incident id."""
    now = datetime.now(UTC)
    record = EnrichedIncident.model_validate(
        {
            "incident_id": f"INC-{tracking_no}",
            "tracking_no": tracking_no,
            "source": "hotline",
            "source_id": body["ticket_no"],
            "category": body["category"],
            "category_label": "餐饮油烟",
            "severity": 3,
            "title": "餐饮油烟·测试",
            "description": body["description"],
            "occurred_at": now,
            "received_at": now,
            "due_at": now + timedelta(hours=24),
            "location": {"lon": body["lon"], "lat": body["lat"], "out_of_area": True},
            "caller_phone": PHONE,
            "caller_name": NAME,
            "time_limit": body["time_limit"],
            "nearest": {"police": [], "grid_worker": [], "volunteer": []},
            "enriched_at": now,
            "enrichment_id": f"INC-{tracking_no}:enriched",
        }
    )
    result = await IncidentService(world.pool, load_plans()).file(record)
    assert [m["type"] for m in result.messages] == ["incident.file"]
    return record.incident_id


async def commanded(world: World, incident_id: str, action: str, reason: str | None = None) -> None:
    command = Command(
        action,
        incident_id,
        f"operator:duty:{uuid.uuid4().hex[:8]}",
        "operator:duty",
        datetime.now(UTC),
        reason,
    )
    result = await IncidentService(world.pool, load_plans()).handle(command)
    assert result.refused is None, result.refused


def no_personal_data(r: httpx.Response) -> None:
    for secret in (PHONE, NAME, TYPED, "135****7777", "赵**"):  # not even masked
        assert secret not in r.text, (secret, r.text)


async def test_a_reports_progress_follows_it_in_chinese_without_personal_data(
    world: World, app: FastAPI
) -> None:
    body = ticket()
    async with client(app) as http:
        tracking_no = await taken(world, http, body)
        r = await http.get(f"/api/v1/reports/{tracking_no}")
        assert r.status_code == 200, r.text
        progress = r.json()
        assert progress["status"] == "received" and progress["status_label"] == "已受理"
        assert progress["category"] == "cooking_fumes"
        assert [(s["step"], s["label"]) for s in progress["timeline"]] == [("received", "已受理")]
        no_personal_data(r)

        incident_id = await filed(world, tracking_no, body)
        r = await http.get(f"/api/v1/reports/{tracking_no}")
        assert r.json()["status"] == "new" and r.json()["status_label"] == "待派遣"
        assert [s["label"] for s in r.json()["timeline"]] == ["已受理", "待派遣"]
        no_personal_data(r)

        # Cancelled with a reason that holds a number: the step shows, the reason does not.
        await commanded(world, incident_id, "cancel", reason=f"重复工单，已电话{TYPED}告知")
        r = await http.get(f"/api/v1/reports/{tracking_no}")
    progress = r.json()
    assert progress["status"] == "cancelled" and progress["status_label"] == "已撤销"
    assert [(s["step"], s["label"]) for s in progress["timeline"]] == [
        ("received", "已受理"),
        ("new", "待派遣"),
        ("cancelled", "已撤销"),
    ]
    assert all(set(s) == {"at", "step", "label"} for s in progress["timeline"])
    assert set(progress) == {"tracking_no", "status", "status_label", "category", "timeline"}
    no_personal_data(r)
    assert "重复工单" not in r.text and "operator" not in r.text  # nor the staff's words or names


async def test_only_public_steps_are_shown(world: World, app: FastAPI) -> None:
    body = ticket()
    async with client(app) as http:
        tracking_no = await taken(world, http, body)
        incident_id = await filed(world, tracking_no, body)
        version = await world.pool.fetchval(
            "SELECT max(version) FROM incident_events WHERE incident_id = $1", incident_id
        )
        await world.pool.execute(
            """INSERT INTO incident_events (event_id, incident_id, version, type, actor, at, public, data)
               VALUES ($1, $2, $3, 'incident.note', 'operator:duty', now(), false, $4)""",
            uid("EV"),
            incident_id,
            version + 1,
            {"state": "new", "text": f"居民{NAME}来电{TYPED}"},
        )
        r = await http.get(f"/api/v1/reports/{tracking_no}")
    assert [s["label"] for s in r.json()["timeline"]] == ["已受理", "待派遣"]
    no_personal_data(r)


async def test_a_report_a_later_stage_refused_says_it_waits_for_a_person(world: World, app: FastAPI) -> None:
    async with client(app) as http:
        tracking_no = await taken(world, http, ticket())
        await world.pool.execute(
            """UPDATE reports SET refused_at = now(), refused_stage = 'normalise',
                      refused_reason = 'caller_phone: 13566667777 is not a number' WHERE tracking_no = $1""",
            tracking_no,
        )
        r = await http.get(f"/api/v1/reports/{tracking_no}")
    progress = r.json()
    assert progress["status"] == "stuck" and progress["status_label"] == "受理异常，待工作人员人工核查"
    assert [s["step"] for s in progress["timeline"]] == ["received", "stuck"]
    no_personal_data(r)
    assert "normalise" not in r.text  # the stage and the reason are the ops' dead letter's


async def test_an_unknown_tracking_number_is_404(app: FastAPI) -> None:
    unknown = f"H20261122-{uuid.uuid4().hex[:8].upper()}"
    async with client(app) as http:
        r = await http.get(f"/api/v1/reports/{unknown}")
        assert r.status_code == 404, r.text
        assert r.json() == {"error": "not_found", "message": f"no report {unknown!r}"}
        r = await http.post(f"/api/v1/reports/{unknown}/feedback", json={"fixed": True, "satisfied": True})
        assert r.status_code == 404 and r.json()["error"] == "not_found", r.text


async def test_feedback_before_the_case_is_closed_is_409_not_closed(world: World, app: FastAPI) -> None:
    body = ticket()
    rating = {"fixed": False, "satisfied": False, "rating": 1, "comment": "还没处理"}
    async with client(app) as http:
        tracking_no = await taken(world, http, body)
        answers = [await http.post(f"/api/v1/reports/{tracking_no}/feedback", json=rating)]  # not yet filed
        incident_id = await filed(world, tracking_no, body)
        answers.append(await http.post(f"/api/v1/reports/{tracking_no}/feedback", json=rating))  # open
        await commanded(world, incident_id, "cancel", reason="误报")
        answers.append(await http.post(f"/api/v1/reports/{tracking_no}/feedback", json=rating))  # cancelled
        # a rating out of range is refused by name before anything else
        bad = await http.post(f"/api/v1/reports/{tracking_no}/feedback", json={**rating, "rating": 6})
    for r in answers:
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "not_closed" and "办结" in r.json()["message"]
    assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "rating", bad.text
    # nothing was recorded nor reopened
    assert await world.pool.fetchval("SELECT count(*) FROM feedback WHERE tracking_no = $1", tracking_no) == 0
    status = await world.pool.fetchval("SELECT status FROM incidents WHERE incident_id = $1", incident_id)
    assert status == "cancelled"
