"""A 202 is a promise: any body the intake accepts passes normalise, enrich and filing.

Bodies are generated from the intake's own schemas (its OpenAPI document, by schemathesis), their times
drawn from anywhere a sender could put them (the plausible window, its edges, the years 1, 1970,
2100 and 9999, with any offset), and posted to the real HTTP app on the real PostgreSQL, Redis and
broker. Whatever is acknowledged is then taken through the stages exactly as the pipeline would:
the record the intake published (recorded off the real producer), the streams worker's
normalise and enrich, the dispatcher's filing. None may refuse it. Whatever is not acknowledged
must be a 4xx naming the field (never a 5xx).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import schemathesis
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from console.auth import ApiKeys, Sessions
from console.http import ConsoleServices, create_http_app
from console.intake import IntakeService
from console.registry import RegistryService
from contracts import topics
from contracts.incidents import EnrichedIncident
from contracts.reports import SOURCE_TIME_FIELD
from devtools.seed import DEMO_API_KEYS, api_key_hash
from dispatcher.core.plan import load_plans
from dispatcher.service import IncidentService
from infra.db import create_pool
from infra.kafka import make_producer, start_producer
from infra.kafka_admin import create_topics
from infra.livestate import LiveState
from infra.settings import Settings
from streams.service import StreamService

CAMERA = "PROP-CAM-0001"
PATHS = {"camera": "camera-alarms", "hotline": "hotline-tickets", "app": "app-reports"}
KEYS = {"camera": "camera", "hotline": "hotline", "app": "app"}
EXAMPLES = 60  # per channel


class RecordingProducer:
    """The real producer, keeping what was sent on `reports.raw` (the intake's promise)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self.raw: dict[bytes, bytes] = {}

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, **kw: Any) -> Any:
        if topic == topics.REPORTS_RAW and key is not None and value is not None:
            self.raw[key] = value
        return await self._producer.send(topic, value=value, key=key, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


@dataclass
class Pipeline:
    http: httpx.AsyncClient
    producer: RecordingProducer
    streams: StreamService
    dispatcher: IncidentService
    pool: asyncpg.Pool
    loop: asyncio.AbstractEventLoop
    schema: Any
    seen: dict[str, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
async def pipeline(pg: asyncpg.Pool, redis: aioredis.Redis, settings: Settings) -> AsyncIterator[Pipeline]:
    s = replace(settings, kafka_idempotence=False)
    await create_topics(s)
    pool = await create_pool(s.database_url, max_size=5)
    started = await pool.fetchval("SELECT now()")
    await pool.execute(
        """INSERT INTO api_keys (key_hash, role, name)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING""",
        [api_key_hash(k) for k in DEMO_API_KEYS.values()],
        list(DEMO_API_KEYS),
        list(DEMO_API_KEYS),
    )
    await pool.execute(
        """INSERT INTO cameras (camera_id, name, lon, lat) VALUES ($1, '性质测试摄像头', 106.53, 29.63)
           ON CONFLICT DO NOTHING""",
        CAMERA,
    )
    producer = make_producer(s)
    await start_producer(producer)
    recording = RecordingProducer(producer)
    live = LiveState(redis)
    app = create_http_app(
        ConsoleServices(
            settings=s,
            pool=pool,
            api_keys=ApiKeys(pool),
            sessions=Sessions(pool, s.session_ttl_s),
            intake=IntakeService(pool, recording, window=s.time_window),  # type: ignore[arg-type]
            registry=RegistryService(pool, producer, live),
            live=live,
        )
    )
    streams = StreamService(s)
    await streams.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
        yield Pipeline(
            http,
            recording,
            streams,
            IncidentService(pool, load_plans(), live),
            pool,
            asyncio.get_running_loop(),
            schemathesis.openapi.from_dict(app.openapi()),
        )
    # The session's database is shared: what these filings left to do (merges' forwards in the
    # outbox, clocks' timers) is withdrawn, so no later test finds work it did not make.
    await pool.execute(
        "UPDATE outbox SET done_at = now() WHERE done_at IS NULL AND created_at >= $1", started
    )
    await pool.execute(
        """UPDATE timers SET cancelled_at = now() WHERE fired_at IS NULL AND cancelled_at IS NULL
              AND incident_id IN (SELECT incident_id FROM reports WHERE source_id LIKE 'PROP-%')"""
    )
    await streams.stop()
    await producer.stop()
    await pool.close()


def offsets() -> st.SearchStrategy[timezone]:
    return st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


def times(window: timedelta) -> st.SearchStrategy[str]:
    """A source's own time as a sender might write it: near now (inside the window and just
    outside it), at the extremes a hostile sender tries, or anything ISO 8601 allows."""
    now = datetime.now(UTC)
    near = st.builds(
        lambda delta, tz: (now + delta).astimezone(tz).isoformat(),
        st.timedeltas(-window - timedelta(days=2), timedelta(hours=2)),
        offsets(),
    )
    extremes = st.builds(
        lambda year, tz: datetime(year, 1, 1 if year > 1 else 2, 12, tzinfo=tz).isoformat(),
        st.sampled_from([1, 2, 1970, 1999, 2100, 2199, 2200, 9999]),
        offsets(),
    )
    anything = st.datetimes(timezones=offsets()).map(lambda d: d.isoformat())
    return st.one_of(near, near, extremes, anything)


def bodies(schema: Any, source: str, window: timedelta) -> st.SearchStrategy[dict[str, Any]]:
    """Valid bodies of the channel's operation (as its schema says), with the times and the
    camera drawn as above."""
    operation = schema[f"/api/v1/intake/{PATHS[source]}"]["POST"]
    generated = operation.as_strategy(GenerationMode.POSITIVE).map(lambda case: case.body)
    overrides: dict[str, st.SearchStrategy[Any]] = {SOURCE_TIME_FIELD[source]: times(window)}
    if source == "camera":
        overrides["camera_id"] = st.sampled_from([CAMERA, CAMERA, "NO-SUCH-CAMERA"])
    return st.tuples(generated, st.fixed_dictionaries(overrides)).map(lambda t: {**t[0], **t[1]})


async def _through_the_pipeline(p: Pipeline, source: str, body: dict[str, Any]) -> None:
    # a fresh source id: a repeat would only answer 200 with the first tracking number
    id_field = {"camera": "alarm_id", "hotline": "ticket_no", "app": "report_id"}[source]
    body = {**body, id_field: f"PROP-{uuid.uuid4().hex[:12]}"}
    answer = await p.http.post(
        f"/api/v1/intake/{PATHS[source]}",
        content=orjson.dumps(body),
        headers={"x-api-key": DEMO_API_KEYS[KEYS[source]], "content-type": "application/json"},
    )
    where = f"{source} {body!r} -> {answer.status_code} {answer.text[:300]}"
    p.seen[f"{source}:{answer.status_code}"] = p.seen.get(f"{source}:{answer.status_code}", 0) + 1
    assert answer.status_code < 500, where
    if answer.status_code != 202:
        assert answer.status_code in (400, 422), where
        reply = answer.json()
        assert reply.get("fields") or reply.get("error") == "malformed_json", where
        return
    tracking_no = answer.json()["tracking_no"]
    key = tracking_no.encode()
    raw = p.producer.raw[key]  # what the intake published before it acknowledged
    located = await p.streams.locate_report(key, raw)
    located_value = located.model_dump_json().encode()
    enriched = await p.streams.enrich(located.incident_id.encode(), located_value)
    again = EnrichedIncident.model_validate(orjson.loads(enriched.model_dump_json()))  # as it travels
    await p.dispatcher.file(again)
    filed = await p.pool.fetchval("SELECT incident_id FROM reports WHERE tracking_no = $1", tracking_no)
    assert filed is not None, where


@pytest.mark.parametrize("source", ["camera", "hotline", "app"])
async def test_any_body_the_intake_accepts_is_normalised_enriched_and_filed(
    pipeline: Pipeline, settings: Settings, source: str
) -> None:
    window = settings.time_window.max_age

    def sync(coro: Any) -> Any:
        """Hypothesis drives a synchronous function in a thread; each example runs on this loop."""
        return asyncio.run_coroutine_threadsafe(coro, pipeline.loop).result(60)

    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(body=bodies(pipeline.schema, source, window))
    def check(body: dict[str, Any]) -> None:
        sync(_through_the_pipeline(pipeline, source, body))

    await asyncio.to_thread(check)
    # the property is not vacuous: bodies of both kinds were generated on this channel
    assert pipeline.seen.get(f"{source}:202", 0) >= 5, pipeline.seen
    assert pipeline.seen.get(f"{source}:422", 0) >= 5, pipeline.seen
