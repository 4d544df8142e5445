"""The ops tail shows records flowing through every topic of the running pipeline."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from contracts import topics
from infra.settings import Settings
from tests.e2e.conftest import KEYS, Console, app_report, incident_id

pytestmark = pytest.mark.e2e


async def test_tail_shows_every_topic_of_the_pipeline(
    stack: Settings, http: httpx.AsyncClient, console: Console
) -> None:
    tag = uuid.uuid4().hex[:8]
    admin = {"X-Api-Key": KEYS["admin"]}
    body = {"name": "尾随测试", "kind": "police", "org": "弹子石派出所", "on_duty": True}
    assert (await http.put(f"/api/v1/responders/P-T{tag}", headers=admin, json=body)).status_code == 201
    fix = {"responder_id": "P-0002", "lon": 106.52, "lat": 29.62, "at": datetime.now(UTC).isoformat()}
    r = await http.post(
        "/api/v1/intake/positions", headers={"X-Api-Key": KEYS["positions"]}, json={"positions": [fix]}
    )
    assert r.status_code == 202
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topics.REPORTS_RAW, key=f"BAD-{tag}".encode(), value=b"{broken")
    finally:
        await producer.stop()
    r = await http.post(
        "/api/v1/intake/app-reports", headers={"X-Api-Key": KEYS["app"]}, json=app_report(f"SSP-{tag}")
    )
    iid = incident_id(r.json()["tracking_no"])
    grid = (await console.wait_incident(iid))["location"]["grid_id"]

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streams.tail",
        "--all",
        "--from",
        "beginning",
        "--json",
        "--timeout",
        "2",
        "--bootstrap",
        stack.kafka_bootstrap,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = [orjson.loads(line) for line in out.splitlines() if line.strip()]
    seen = {line["topic"] for line in lines}
    assert seen >= set(topics.PIPELINE_TOPICS), sorted(set(topics.PIPELINE_TOPICS) - seen)
    # The report's journey, hop by hop, under the keys the design card names.
    keys = {(line["topic"], line["key"]) for line in lines}
    tracking = iid.removeprefix("INC-")
    assert (topics.REPORTS_RAW, tracking) in keys
    for topic in (topics.INCIDENTS_LOCATED, topics.INCIDENTS_ENRICHED, topics.INCIDENTS_EVENTS):
        assert (topic, iid) in keys
    assert (topics.DEADLETTER, f"BAD-{tag}") in keys
    assert (topics.RESPONDERS_CHANGES, f"P-T{tag}") in keys

    # Filters: by source and category, the app report's records only.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streams.tail",
        topics.INCIDENTS_ENRICHED,
        "--from",
        "beginning",
        "--json",
        "--source",
        "app",
        "--category",
        "garbage_overflow",
        "--grid",
        grid,
        "--timeout",
        "2",
        "--bootstrap",
        stack.kafka_bootstrap,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    filtered = [orjson.loads(line) for line in out.splitlines() if line.strip()]
    assert iid in {f["key"] for f in filtered}
    assert all(f["value"]["source"] == "app" and f["value"]["location"]["grid_id"] == grid for f in filtered)
