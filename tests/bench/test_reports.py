"""The reports the benchmarks post (`bench.reports.build_report`): every one is a report the
intake accepts (its channel's contract, a plausible time, a known camera), at a place inside the
demo city, and none repeats a source id, so no report of a run is taken for a duplicate.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from bench.reports import (
    APP_CATEGORIES,
    CHANNELS,
    CITY_LAT,
    CITY_LON,
    HOTLINE_CATEGORIES,
    INTAKE_PATHS,
    build_report,
    camera_ids,
)
from contracts.categories import CAMERA_ALARM_TYPES
from contracts.fields import Contract
from contracts.geo import GridIndex
from contracts.reports import (
    SOURCE_ID_FIELD,
    SOURCE_MODELS,
    SOURCE_TIME_FIELD,
    AppReport,
    CameraAlarm,
    HotlineTicket,
)
from devtools.city import City, generate_city
from infra.settings import Settings

# The run names the benchmarks use: uuid hex (latency, steady, throughput), "WARM<n>-<hex>"
# (the harness's warm-up) and "MEM-<hex>" (memory).
RUNS = (uuid.uuid4().hex[:8], uuid.uuid4().hex[:6], f"WARM0-{uuid.uuid4().hex[:6]}", "MEM-0a1b2c3d")
PER_RUN = 300


@pytest.fixture(scope="module")
def city() -> City:
    return generate_city()


@pytest.fixture(scope="module")
def grids(city: City) -> GridIndex:
    return city.grid_index()


def reports(run: str, count: int = PER_RUN) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(run)
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(count):
        channel, body = build_report(i, run, rng)
        out.append((channel, orjson.loads(body)))
    return out


def test_every_report_passes_its_channels_intake_contract() -> None:
    models: dict[str, type[Contract]] = {"camera": CameraAlarm, "hotline": HotlineTicket, "app": AppReport}
    assert models == SOURCE_MODELS and set(INTAKE_PATHS) == set(CHANNELS) == set(SOURCE_MODELS)
    window = Settings().time_window
    for run in RUNS:
        rng = random.Random(run)
        for i in range(PER_RUN):
            channel, body = build_report(i, run, rng)
            assert channel == CHANNELS[i % len(CHANNELS)]
            model = models[channel]
            # as the intake sees it: JSON straight off the wire, and the parsed object FastAPI holds
            parsed = model.model_validate_json(body)
            assert model.model_validate(orjson.loads(body)) == parsed
            # its own time is one the intake takes (not in the future, not too old)
            at = getattr(parsed, SOURCE_TIME_FIELD[channel])
            assert at.utcoffset() is not None
            assert window.problem(at, datetime.now(UTC)) is None, (channel, at)


def test_every_channel_and_category_comes_round() -> None:
    got = reports(RUNS[0])
    assert Counter(channel for channel, _ in got) == dict.fromkeys(CHANNELS, PER_RUN // 3)
    cameras = {str(b["alarm_type"]) for c, b in got if c == "camera"}
    hotline = {(str(b["category"]), str(b["time_limit"])) for c, b in got if c == "hotline"}
    app = {str(b["category"]) for c, b in got if c == "app"}
    assert cameras == set(CAMERA_ALARM_TYPES)
    assert hotline == set(HOTLINE_CATEGORIES)
    assert app == set(APP_CATEGORIES)


def test_every_report_lies_inside_the_demo_city(city: City, grids: GridIndex) -> None:
    assert (CITY_LON[0], CITY_LAT[0], CITY_LON[1], CITY_LAT[1]) == city.bbox
    known = {c.camera_id: c for c in city.cameras}
    assert set(camera_ids()) == set(known)
    used: set[str] = set()
    for run in RUNS:
        for channel, body in reports(run):
            if channel == "camera":
                # a camera alarm is placed by its camera: one the registry knows, in the city
                camera = known[str(body["camera_id"])]
                used.add(camera.camera_id)
                lon, lat = camera.lon, camera.lat
            else:
                lon, lat = float(body["lon"]), float(body["lat"])
            assert CITY_LON[0] <= lon <= CITY_LON[1] and CITY_LAT[0] <= lat <= CITY_LAT[1], (
                channel,
                lon,
                lat,
            )
            assert grids.locate(lon, lat) is not None, (channel, lon, lat)
    # alarms come from cameras across the city, not from one camera absorbing every alarm
    assert len(used) > 150


def test_source_ids_are_unique_per_report_and_run() -> None:
    seen: Counter[tuple[str, str]] = Counter()
    for run in RUNS:
        for channel, body in reports(run):
            seen[(channel, str(body[SOURCE_ID_FIELD[channel]]))] += 1
    assert len(seen) == len(RUNS) * PER_RUN
    assert max(seen.values()) == 1


def test_the_same_report_number_differs_between_runs_and_repeats_within_one() -> None:
    rng_a, rng_b = random.Random(5), random.Random(5)
    for i in (0, 1, 2, 99_999, 1_000_000):
        channel, a = build_report(i, "run-a", rng_a)
        again_channel, again = build_report(i, "run-a", rng_b)
        other_channel, other = build_report(i, "run-b", random.Random(5))
        key = SOURCE_ID_FIELD[channel]
        assert channel == again_channel == other_channel
        assert orjson.loads(a)[key] == orjson.loads(again)[key] != orjson.loads(other)[key]


def test_ids_stay_valid_for_a_million_reports() -> None:
    """The throughput and memory scenarios number reports past 99,999: the ids stay in contract."""
    rng = random.Random(2)
    for i in (99_999, 100_000, 1_234_567):
        for k in range(len(CHANNELS)):
            channel, body = build_report(i * 3 + k, f"WARM1-{uuid.uuid4().hex[:6]}", rng)
            parsed = SOURCE_MODELS[channel].model_validate_json(body)
            assert str(i * 3 + k) in getattr(parsed, SOURCE_ID_FIELD[channel])
