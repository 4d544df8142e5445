"""The simulator's own parts: reports the intake accepts, movement, seeded decisions, logins."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.categories import CATEGORIES
from contracts.reports import AppReport, CameraAlarm, HotlineTicket
from devtools.city import MAX_LAT, MAX_LON, MIN_LAT, MIN_LON, generate_city
from devtools.seed import DEMO_RESPONDER_PASSWORD
from devtools.simulator import (
    DESCRIPTIONS,
    DONE_NOTES,
    Decider,
    ReportFactory,
    SimConfig,
    Simulator,
    distance_m,
    photo_url,
    step_toward,
    walk_step,
)
from infra.settings import Settings

CAMERAS = [c.camera_id for c in generate_city().cameras]
MODELS = {"camera": CameraAlarm, "hotline": HotlineTicket, "app": AppReport}
ID_FIELD = {"camera": "alarm_id", "hotline": "ticket_no", "app": "report_id"}


def test_every_category_has_descriptions_and_every_family_done_notes() -> None:
    assert set(DESCRIPTIONS) == set(CATEGORIES)
    assert {c.family for c in CATEGORIES.values()} <= set(DONE_NOTES)


@pytest.mark.parametrize("source", ["camera", "hotline", "app"])
def test_reports_are_valid_against_the_intake_contracts(source: str) -> None:
    factory = ReportFactory(random.Random(7), CAMERAS)
    ids = set()
    for _ in range(300):
        got, body = factory.make(source)  # type: ignore[arg-type]
        assert got == source
        model = MODELS[source].model_validate(body)  # the intake's own validation
        ids.add(body[ID_FIELD[source]])
        if source == "camera":
            assert body["camera_id"] in CAMERAS
        else:
            assert MIN_LON < model.lon < MAX_LON and MIN_LAT < model.lat < MAX_LAT  # type: ignore[attr-defined]
            assert body["description"] and any(
                d in body["description"] for d in DESCRIPTIONS[body["category"]]
            )
    assert len(ids) == 300  # unique source ids


def test_source_ids_differ_between_runs_and_channels_mix() -> None:
    a, b = ReportFactory(random.Random(1), CAMERAS), ReportFactory(random.Random(1), CAMERAS)
    assert a.make("app")[1]["report_id"] != b.make("app")[1]["report_id"]
    sources = Counter(a.make()[0] for _ in range(600))
    assert set(sources) == {"camera", "hotline", "app"} and min(sources.values()) > 100
    no_cameras = ReportFactory(random.Random(1), [])
    assert {no_cameras.make()[0] for _ in range(100)} == {"hotline", "app"}


def test_categories_spread() -> None:
    factory = ReportFactory(random.Random(3), CAMERAS)
    cats = {factory.make("hotline")[1]["category"] for _ in range(500)}
    assert cats == set(CATEGORIES)


lon_s = st.floats(min_value=MIN_LON, max_value=MAX_LON)
lat_s = st.floats(min_value=MIN_LAT, max_value=MAX_LAT)


@settings(max_examples=300, deadline=None)
@given(
    lon_s, lat_s, lon_s, lat_s, st.floats(min_value=0, max_value=300), st.floats(min_value=0, max_value=10)
)
def test_a_step_moves_at_the_speed_and_never_overshoots(
    lon: float, lat: float, tlon: float, tlat: float, speed: float, dt: float
) -> None:
    before = distance_m(lon, lat, tlon, tlat)
    nlon, nlat, arrived = step_toward(lon, lat, tlon, tlat, speed, dt)
    after = distance_m(nlon, nlat, tlon, tlat)
    moved = distance_m(lon, lat, nlon, nlat)
    assert moved <= speed * dt + 1e-6  # never faster than the speed
    assert after <= before + 1e-6  # always toward the target, never past it
    if arrived:
        assert (nlon, nlat) == (tlon, tlat) and before <= speed * dt + 1e-6
    else:
        assert moved == pytest.approx(speed * dt, rel=1e-3, abs=1e-3)
        assert after == pytest.approx(before - speed * dt, rel=1e-3, abs=1e-3)


def test_travel_takes_distance_over_speed() -> None:
    lon, lat, target = 106.51, 29.61, (106.53, 29.62)
    speed, dt, steps, arrived = 15 / 3.6 * 20, 1.5, 0, False
    total = distance_m(lon, lat, *target)
    while not arrived:
        lon, lat, arrived = step_toward(lon, lat, *target, speed, dt)
        steps += 1
    assert steps == -(-total // (speed * dt))  # ceil: the last step stops at the scene


def test_walk_stays_inside_the_street() -> None:
    rng = random.Random(5)
    lon, lat = MIN_LON + 0.0001, MAX_LAT - 0.0001
    for _ in range(1000):
        nlon, nlat = walk_step(rng, lon, lat, 50)
        assert MIN_LON <= nlon <= MAX_LON and MIN_LAT <= nlat <= MAX_LAT
        assert distance_m(lon, lat, nlon, nlat) <= 52
        lon, lat = nlon, nlat


def test_decisions_are_deterministic_with_a_seed_and_near_their_rates() -> None:
    def run(seed: int) -> list[object]:
        d = Decider(random.Random(seed), accept_rate=0.85, verify_pass_rate=0.9)
        return [d.offer() for _ in range(2000)] + [d.verification() for _ in range(2000)]

    first, again = run(11), run(11)
    assert first == again
    assert run(12) != first
    d = Decider(random.Random(11))
    offers = [d.offer() for _ in range(4000)]
    accepted = sum(o.accept for o in offers) / len(offers)
    assert 0.82 < accepted < 0.88
    assert all(o.reason for o in offers if not o.accept)  # a decline always has a reason
    checks = [d.verification() for _ in range(4000)]
    passed = sum(c.passed for c in checks) / len(checks)
    assert 0.87 < passed < 0.93
    assert all(c.reason for c in checks if not c.passed)
    assert d.done_note("smoke_fire") in DONE_NOTES["fire"]
    assert d.done_note("no-such-category") in DONE_NOTES["other"]
    assert Decider(random.Random(1), accept_rate=0).offer().accept is False
    assert Decider(random.Random(1), accept_rate=1).offer().accept is True
    assert photo_url("T-1") == "http://sim.example/p/T-1.jpg"


def test_config_from_env() -> None:
    s = Settings(sim_reports_per_min=30)
    c = SimConfig.from_env(s, {"SIM_AUTO_DISPATCH": "0", "SIM_SPEEDUP": "50", "SIM_SEED": "4"})
    assert (c.reports_per_min, c.auto_dispatch, c.speedup, c.seed) == (30, False, 50, 4)
    d = SimConfig.from_env(Settings(), {})
    assert (d.reports_per_min, d.auto_dispatch, d.speedup, d.accept_rate) == (6, True, 20, 0.85)
    with pytest.raises(ValueError, match="SIM_SPEEDUP"):
        SimConfig.from_env(s, {"SIM_SPEEDUP": "fast"})


async def test_a_responder_without_a_phone_login_is_left_alone_and_logins_keep_their_device() -> None:
    """A registry responder with no account (PUT /api/v1/responders makes none) used to be
    tried at every offer; the failures piled up until every login from the machine was refused.
    The login endpoint here is a stand-in answering as the centre does (401 for no account)."""
    logins: list[dict[str, Any]] = []

    def centre(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        logins.append(body)
        if body["username"] == "V-NOACCOUNT":
            return httpx.Response(401, json={"error": "unauthorized", "message": "wrong password"})
        return httpx.Response(200, json={"token": f"t-{len(logins)}", "device_token": "dev-1"})

    sim = Simulator(Settings(), SimConfig(reports_per_min=0, seed=1))
    async with httpx.AsyncClient(transport=httpx.MockTransport(centre), base_url="http://centre") as http:
        sim.http = http
        sim._offer_seen("V-NOACCOUNT", "T-1")
        session = sim.sessions["V-NOACCOUNT"]
        assert session.runner is not None
        await session.runner
        assert "V-NOACCOUNT" in sim.no_phone and "V-NOACCOUNT" not in sim.sessions
        sim._offer_seen("V-NOACCOUNT", "T-2")  # a later offer to them: not tried again
        assert "V-NOACCOUNT" not in sim.sessions
        assert [b["username"] for b in logins] == ["V-NOACCOUNT"]
        # a login that worked keeps the device token and shows it next time
        await sim.login("P-0001", DEMO_RESPONDER_PASSWORD)
        sim.tokens.clear()
        await sim.login("P-0001", DEMO_RESPONDER_PASSWORD)
        assert "device" not in logins[1] and logins[2]["device"] == "dev-1"
