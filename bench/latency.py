"""Intake → console latency, beside the raw broker round trip: `python -m bench.latency`.

    python -m bench.latency [--reports N] [--rate R] [--workers W] [--json]

The benchmark starts its own isolated centre the way the end-to-end tests do (its own Tansu
broker on a free port, database `centre_bench_<pid>` dropped at the end, Redis db 13 flushed,
topics created, the demo city seeded, the streams workers, dispatcher and console server run by
`devtools.stack.Supervisor`), then drives it from this process through the public contracts only:

* one WebSocket console logged in as the demo duty operator;
* N reports posted over HTTP at a steady rate, round-robin across the three channels (camera
  alarms, 12345 tickets, app reports), each with a unique source id;
* for each report, *intake → console* = arrival of the first delta for `INC-<tracking_no>` at the
  console minus the moment just before the POST was sent (both `time.perf_counter` here), and
  *intake HTTP 202* = the POST's own answer time;
* *raw broker produce → consume*: an aiokafka producer (acks=all) and a consumer with the stack's
  `fetch_max_wait_ms` on a dedicated one-partition topic, one message at a time.

It prints one table (or `--json`), the ratio of the two p50s and whether the 100 ms p50 target
is met. The measuring core, `measure(settings, reports, rate)`, only needs the Settings of an
already running stack, so a smoke test can run it against the e2e fixture.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import httpx
import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.figures import percentile
from contracts.categories import CAMERA_ALARM_TYPES
from devtools.broker import start_tansu
from devtools.city import generate_city
from devtools.seed import DEMO_API_KEYS, DEMO_USERS, seed_all
from devtools.stack import Supervisor, ensure_postgres, ensure_redis, free_port, isolated_settings
from infra.db import drop_database
from infra.kafka_admin import create_topics
from infra.settings import Settings

TARGET_P50_MS: Final = 100.0
# The demo city's box (WGS-84): every generated point falls inside a grid.
CITY_LON: Final = (106.50, 106.58)
CITY_LAT: Final = (29.60, 29.66)
BEIJING: Final = timezone(timedelta(hours=8))

Channel = Literal["camera", "hotline", "app"]
CHANNELS: Final[tuple[Channel, ...]] = ("camera", "hotline", "app")
INTAKE_PATHS: Final[dict[Channel, str]] = {
    "camera": "/api/v1/intake/camera-alarms",
    "hotline": "/api/v1/intake/hotline-tickets",
    "app": "/api/v1/intake/app-reports",
}
HOTLINE_CATEGORIES: Final = (
    ("cooking_fumes", "24h"),
    ("water_supply", "24h"),
    ("noise", "7d"),
    ("sewage", "24h"),
)
APP_CATEGORIES: Final = ("garbage_overflow", "road_damage", "streetlight", "illegal_parking", "noise")

ROW_BROKER: Final = "raw broker produce→consume"
ROW_HTTP: Final = "intake HTTP 202"
ROW_CONSOLE: Final = "intake → console"


def say(msg: str) -> None:
    """Progress goes to stderr, so `--json` leaves stdout to the figures."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Figures


@dataclass(frozen=True, slots=True)
class Stat:
    """One row of the table; milliseconds, None when there were no samples."""

    name: str
    n: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @classmethod
    def of(cls, name: str, seconds: Sequence[float]) -> Stat:
        if not seconds:
            return cls(name, 0, None, None, None)
        ms = sorted(s * 1000.0 for s in seconds)
        return cls(name, len(ms), percentile(ms, 50), percentile(ms, 99), ms[-1])


@dataclass(frozen=True, slots=True)
class Results:
    broker: Stat
    http_202: Stat
    console: Stat
    stages: list[Stat]  # where intake → console goes, from the wall-clock stamps in the deltas
    reports: int
    rate: float
    sent_rate: float  # the rate actually achieved
    accepted: int  # answered 202
    failed: int  # answered anything else, or not at all
    missing: int  # accepted but no delta within the settle time

    @property
    def rows(self) -> list[Stat]:
        return [self.broker, self.http_202, self.console]

    @property
    def ratio(self) -> float | None:
        """intake → console p50 over raw broker p50."""
        if self.console.p50_ms is None or not self.broker.p50_ms:
            return None
        return self.console.p50_ms / self.broker.p50_ms

    @property
    def target_met(self) -> bool:
        return (
            self.console.p50_ms is not None
            and self.console.p50_ms <= TARGET_P50_MS
            and self.failed == 0
            and self.missing == 0
        )


# --------------------------------------------------------------------------------------------
# Reports


def _now_beijing() -> str:
    return datetime.now(BEIJING).isoformat(timespec="seconds")


@functools.cache
def _camera_ids() -> tuple[str, ...]:
    """The demo city's cameras (in the registry of every bench stack)."""
    return tuple(c.camera_id for c in generate_city().cameras)


def build_report(i: int, run: str, rng: random.Random) -> tuple[Channel, bytes]:
    """Report number i of a run: channels round-robin, unique source ids, points in the city;
    camera alarms from cameras across the city (one camera raising every third report made
    one incident absorb thousands, nothing like a street's traffic)."""
    channel = CHANNELS[i % len(CHANNELS)]
    lon = round(rng.uniform(*CITY_LON), 6)
    lat = round(rng.uniform(*CITY_LAT), 6)
    body: dict[str, Any]
    if channel == "camera":
        body = {
            "alarm_id": f"CAM-BENCH-{run}-{i:05d}",
            "camera_id": rng.choice(_camera_ids()),
            "alarm_type": CAMERA_ALARM_TYPES[(i // 3) % len(CAMERA_ALARM_TYPES)],
            "confidence": 0.87,
            "occurred_at": _now_beijing(),
            "snapshot_url": f"http://video.example/snap/{i}.jpg",
            "stream_url": "rtsp://video.example/live/42",
        }
    elif channel == "hotline":
        category, limit = HOTLINE_CATEGORIES[(i // 3) % len(HOTLINE_CATEGORIES)]
        body = {
            "ticket_no": f"12345-BENCH-{run}-{i:05d}",
            "received_at": _now_beijing(),
            "caller_phone": "13800138000",
            "caller_name": "李女士",
            "category": category,
            "description": "压测工单",
            "address": "清晖岸小区3栋",
            "lon": lon,
            "lat": lat,
            "time_limit": limit,
        }
    else:
        body = {
            "report_id": f"SSP-BENCH-{run}-{i:05d}",
            "reporter_id": "resident-1029",
            "reported_at": _now_beijing(),
            "category": APP_CATEGORIES[(i // 3) % len(APP_CATEGORIES)],
            "description": "压测随手拍",
            "lon": lon,
            "lat": lat,
            "photo_urls": [f"http://app.example/p/{i}.jpg"],
        }
    return channel, orjson.dumps(body)


# --------------------------------------------------------------------------------------------
# The driver: one HTTP client and one operator console


@dataclass(frozen=True, slots=True)
class Sent:
    channel: Channel
    status: int  # 0: no answer
    tracking_no: str | None
    t0: float  # perf_counter just before the POST
    t1: float  # perf_counter at the answer
    wall0_ns: int  # time.time_ns just before the POST
    error: str = ""

    @property
    def incident_id(self) -> str | None:
        return None if self.tracking_no is None else f"INC-{self.tracking_no}"


@dataclass(frozen=True, slots=True)
class Arrival:
    t: float  # perf_counter when the first delta for the incident came off the socket
    wall_ns: int
    intake_ns: int | None  # stamped by the intake
    enriched_ns: int | None  # stamped by the enrich agent


def _enriched_ns(incident: dict[str, Any]) -> int | None:
    stamp = (incident.get("recommended") or {}).get("enriched_at")
    if not isinstance(stamp, str):
        return None
    try:
        at = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1e9)


class Driver:
    """Posts reports and stamps the arrival of each incident's first delta at a live console."""

    def __init__(self, settings: Settings, username: str = "duty") -> None:
        self.settings = settings
        self.username = username
        self.arrivals: dict[str, Arrival] = {}
        self._arrived = asyncio.Event()
        self._http: httpx.AsyncClient | None = None
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Driver:
        s = self.settings
        self._http = httpx.AsyncClient(
            base_url=f"http://{s.http_host}:{s.http_port}",
            timeout=30,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
        )
        try:
            password = next(pw for user, _, _, pw in DEMO_USERS if user == self.username)
            login = {"username": self.username, "password": password}
            r = await self._http.post("/api/v1/auth/login", json=login)
            r.raise_for_status()
            token = str(r.json()["token"])
            self._ws = await connect(f"ws://{s.http_host}:{s.ws_port}", max_size=2**26)
            await self._ws.send(orjson.dumps({"type": "auth", "id": "bench", "token": token}).decode())
            ack = orjson.loads(await asyncio.wait_for(self._ws.recv(), 10))
            if ack.get("type") != "ack":
                raise RuntimeError(f"console refused the bench operator: {ack}")
            first = orjson.loads(await asyncio.wait_for(self._ws.recv(), 10))
            if first.get("type") != "snapshot":
                raise RuntimeError(f"expected a snapshot, got {first.get('type')!r}")
            self._reader = asyncio.create_task(self._read(self._ws), name="bench-console-reader")
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.aclose()

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                t, wall = time.perf_counter(), time.time_ns()
                frame = orjson.loads(raw)
                if frame.get("type") != "delta":
                    continue
                incident = frame.get("incident") or {}
                iid = incident.get("incident_id")
                if isinstance(iid, str) and iid not in self.arrivals:
                    intake_ns = incident.get("intake_ns")
                    self.arrivals[iid] = Arrival(
                        t, wall, intake_ns if isinstance(intake_ns, int) else None, _enriched_ns(incident)
                    )
                    self._arrived.set()

    async def post(self, channel: Channel, body: bytes) -> Sent:
        assert self._http is not None
        headers = {"X-Api-Key": DEMO_API_KEYS[channel], "Content-Type": "application/json"}
        wall0 = time.time_ns()
        t0 = time.perf_counter()
        try:
            r = await self._http.post(INTAKE_PATHS[channel], content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Sent(channel, 0, None, t0, time.perf_counter(), wall0, repr(exc))
        t1 = time.perf_counter()
        if r.status_code != 202:
            return Sent(channel, r.status_code, None, t0, t1, wall0, r.text[:300])
        return Sent(channel, 202, str(r.json()["tracking_no"]), t0, t1, wall0)

    async def wait_for(self, incident_ids: set[str], within_s: float) -> bool:
        """True once every incident has reached the console; False after `within_s` seconds."""
        deadline = time.monotonic() + within_s
        while True:
            self._arrived.clear()
            if incident_ids <= self.arrivals.keys():
                return True
            if self._reader is None or self._reader.done():
                raise RuntimeError("the console connection closed")
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, 1.0))


# --------------------------------------------------------------------------------------------
# The measurements


async def measure_broker(settings: Settings, messages: int = 300, warmup: int = 10) -> list[float]:
    """Seconds from send to receipt, one message at a time, on a fresh one-partition topic."""
    topic = f"bench.roundtrip.{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, settings.topic_replication)])
        for _ in range(50):
            if topic in await admin.list_topics():
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_servers,
        acks="all",
        enable_idempotence=settings.kafka_idempotence,
        linger_ms=0,
        request_timeout_ms=10_000,
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_servers,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        auto_offset_reset="earliest",
    )
    loop = asyncio.get_running_loop()
    waiting: dict[int, asyncio.Future[float]] = {}

    async def receive() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            t = time.perf_counter()
            for records in batches.values():
                for record in records:
                    fut = waiting.get(int(record.key))
                    if fut is not None and not fut.done():
                        fut.set_result(t)

    await producer.start()
    receiver: asyncio.Task[None] | None = None
    try:
        await consumer.start()
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        receiver = asyncio.create_task(receive(), name="bench-broker-receiver")
        value = b"x" * 600  # about the size of a report on reports.raw
        samples: list[float] = []
        for i in range(warmup + messages):
            fut: asyncio.Future[float] = loop.create_future()
            waiting[i] = fut
            t0 = time.perf_counter()
            await producer.send_and_wait(topic, key=str(i).encode(), value=value)
            got = await asyncio.wait_for(fut, 10)
            if i >= warmup:
                samples.append(got - t0)
        return samples
    finally:
        if receiver is not None:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
        await consumer.stop()
        await producer.stop()
        with contextlib.suppress(Exception):
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers, request_timeout_ms=5_000)
            await admin.start()
            try:
                await admin.delete_topics([topic])
            finally:
                await admin.close()


@dataclass(slots=True)
class _IntakeRun:
    sent: list[Sent] = field(default_factory=list)
    arrivals: dict[str, Arrival] = field(default_factory=dict)
    span_s: float = 0.0


async def measure_intake(settings: Settings, reports: int, rate: float, settle_s: float = 30.0) -> _IntakeRun:
    run = uuid.uuid4().hex[:8]
    rng = random.Random(run)
    bodies = [build_report(i, run, rng) for i in range(reports)]
    out = _IntakeRun()
    async with Driver(settings) as driver:
        start = time.perf_counter()
        tasks: list[asyncio.Task[Sent]] = []
        for i, (channel, body) in enumerate(bodies):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(driver.post(channel, body)))
        out.sent = list(await asyncio.gather(*tasks))
        out.span_s = max(s.t0 for s in out.sent) - start if out.sent else 0.0
        ids = {s.incident_id for s in out.sent if s.incident_id is not None}
        if not await driver.wait_for(ids, settle_s):
            lost = len(ids - driver.arrivals.keys())
            say(f"{lost} incident(s) did not reach the console in {settle_s:.0f}s")
        out.arrivals = dict(driver.arrivals)
    return out


async def measure(
    settings: Settings,
    reports: int = 300,
    rate: float = 20.0,
    *,
    broker_messages: int = 300,
    settle_s: float = 30.0,
) -> Results:
    """Measure a running stack: the raw broker round trip, then intake → console under load."""
    if reports < 1 or rate <= 0 or broker_messages < 1:
        raise ValueError("reports and broker_messages must be positive, rate above zero")
    say(f"raw broker round trip: {broker_messages} messages")
    broker = await measure_broker(settings, broker_messages)
    say(f"posting {reports} reports at {rate:g}/s")
    run = await measure_intake(settings, reports, rate, settle_s)

    accepted = [s for s in run.sent if s.status == 202]
    for s in run.sent:
        if s.status != 202:
            say(f"{s.channel} report answered {s.status}: {s.error}")
    console: list[float] = []
    to_intake: list[float] = []
    to_enriched: list[float] = []
    to_console: list[float] = []
    for s in accepted:
        a = run.arrivals.get(s.incident_id or "")
        if a is None:
            continue
        console.append(a.t - s.t0)
        if a.intake_ns is not None:
            to_intake.append((a.intake_ns - s.wall0_ns) / 1e9)
            if a.enriched_ns is not None:
                to_enriched.append((a.enriched_ns - a.intake_ns) / 1e9)
        if a.enriched_ns is not None:
            to_console.append((a.wall_ns - a.enriched_ns) / 1e9)
    reached = len(console)
    return Results(
        broker=Stat.of(ROW_BROKER, broker),
        http_202=Stat.of(ROW_HTTP, [s.t1 - s.t0 for s in accepted]),
        console=Stat.of(ROW_CONSOLE, console),
        stages=[
            Stat.of("POST sent → intake stamp (HTTP, auth, PG insert)", to_intake),
            Stat.of("intake stamp → enriched (2 Kafka hops, normalise, enrich)", to_enriched),
            Stat.of("enriched → console (2 Kafka hops, dispatcher PG, WS)", to_console),
        ],
        reports=reports,
        rate=rate,
        sent_rate=(len(run.sent) - 1) / run.span_s if run.span_s > 0 else float(len(run.sent)),
        accepted=len(accepted),
        failed=len(run.sent) - len(accepted),
        missing=len(accepted) - reached,
    )


# --------------------------------------------------------------------------------------------
# The isolated stack


def bench_settings(port: int, partitions: int, **overrides: Any) -> Settings:
    return isolated_settings(
        "bench",
        f"127.0.0.1:{port}",
        os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432"),
        os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
        topic_partitions=partitions,
        **overrides,
    )


async def _reset_stores(s: Settings) -> None:
    await drop_database(s.database_url)
    r = aioredis.Redis.from_url(s.redis_url)
    try:
        await r.flushdb()
    finally:
        await r.aclose()


async def _wait_group(settings: Settings, members: int, deadline: float) -> None:
    """Wait until the streams workers' consumer group is stable with all its members."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers, request_timeout_ms=5_000)
    await admin.start()
    try:
        while time.monotonic() < deadline:
            try:
                answers = await admin.describe_consumer_groups([settings.faust_app_id])
            except Exception as exc:  # a broker without DescribeGroups: fall back to a pause
                say(f"cannot describe the consumer group ({exc!r}); pausing 5 s instead")
                await asyncio.sleep(5)
                return
            groups = [g for answer in answers for g in answer.groups]
            if any(g[2] == "Stable" and len(g[5]) >= members for g in groups):
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"the {members} streams workers did not form a stable group")
    finally:
        await admin.close()


async def warm_up(settings: Settings, workers: int, within_s: float = 90.0) -> None:
    """Until one report per channel has reached a console: every consumer group has formed."""
    deadline = time.monotonic() + within_s
    rng = random.Random(0)
    async with Driver(settings) as driver:
        for rnd in range(2):
            for i in range(len(CHANNELS)):
                sent = await driver.post(*build_report(i, f"WARM{rnd}-{uuid.uuid4().hex[:6]}", rng))
                if sent.incident_id is None:
                    raise RuntimeError(f"warm-up report answered {sent.status}: {sent.error}")
                if not await driver.wait_for({sent.incident_id}, deadline - time.monotonic()):
                    raise RuntimeError("pipeline did not come up: a warm-up report never reached the console")
            if rnd == 0 and workers > 1:
                await _wait_group(settings, workers, deadline)


@contextlib.contextmanager
def bench_stack(
    workers: int = 1,
    partitions: int = 4,
    *,
    before_start: Callable[[Settings], None] | None = None,
    on_start: Callable[[Supervisor, subprocess.Popen[bytes]], None] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Iterator[Settings]:
    """A whole centre of its own, stopped and cleaned up on exit (also on Ctrl-C or an error).

    `before_start` runs once the stores are migrated and seeded, before any process starts (bulk
    loads for the scale scenarios); `on_start` gets the supervisor and the broker's process once
    the centre's processes are spawned (scenarios that measure them by pid); `overrides` are
    Settings fields for every process of the stack.
    """
    port = free_port()
    settings = bench_settings(port, partitions, **(overrides or {}))
    ensure_postgres(settings)
    ensure_redis(settings)
    state = Path(settings.state_dir)
    say(f"starting Tansu on {settings.kafka_bootstrap}")
    broker: subprocess.Popen[bytes] | None = start_tansu("127.0.0.1", port, state / f"tansu-{port}.log")
    sup: Supervisor | None = None
    try:
        asyncio.run(_reset_stores(settings))
        asyncio.run(create_topics(settings))
        say("seeding the demo city")
        asyncio.run(seed_all(settings))
        if before_start is not None:
            before_start(settings)
        say(f"starting {workers} streams worker(s), the dispatcher and the console server")
        sup = Supervisor(settings, workers=workers)
        sup.start()
        if on_start is not None and broker is not None:
            on_start(sup, broker)
        sup.wait_healthy(90)
        say("warming up")
        asyncio.run(warm_up(settings, workers))
        yield settings
        sup.check()
    finally:
        say("stopping the stack")
        if sup is not None:
            sup.stop()
        if broker is not None:
            broker.terminate()
            try:
                broker.wait(5)
            except subprocess.TimeoutExpired:
                broker.kill()
        try:
            asyncio.run(_reset_stores(settings))
        except Exception as exc:
            say(f"could not clean the stores up: {exc!r}")
        for i in range(workers):
            shutil.rmtree(state / f"faust-{settings.faust_web_port + i}", ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Output


@dataclass(frozen=True, slots=True)
class Meta:
    date: str
    nproc: int
    python: str
    platform: str
    command: str
    workers: int
    partitions: int
    fetch_max_wait_ms: int

    @classmethod
    def now(cls, argv: Sequence[str], workers: int, partitions: int, fetch_max_wait_ms: int) -> Meta:
        try:
            nproc = len(os.sched_getaffinity(0))
        except AttributeError:
            nproc = os.cpu_count() or 1
        return cls(
            date=datetime.now().astimezone().isoformat(timespec="seconds"),
            nproc=nproc,
            python=f"{platform.python_implementation()} {platform.python_version()}",
            platform=platform.platform(),
            command=" ".join(["python -m bench.latency", shlex.join(argv)]).strip(),
            workers=workers,
            partitions=partitions,
            fetch_max_wait_ms=fetch_max_wait_ms,
        )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_table(results: Results) -> str:
    width = max(len(r.name) for r in [*results.rows, *results.stages]) + 2
    head = f"{'':<{width}}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'p50 ÷ broker p50':>18}"
    base = results.broker.p50_ms

    def row(r: Stat) -> str:
        times = "-" if r.p50_ms is None or not base else f"{r.p50_ms / base:.1f}×"
        figures = f"{_ms(r.p50_ms):>10}{_ms(r.p99_ms):>10}{_ms(r.max_ms):>10}"
        return f"{r.name:<{width}}{r.n:>6}{figures}{times:>18}"

    ratio = "-" if results.ratio is None else f"{results.ratio:.1f}×"
    return "\n".join(
        [
            head,
            "-" * len(head),
            *(row(r) for r in results.rows),
            "-" * len(head),
            f"intake → console p50 / raw broker p50 = {ratio}",
            "",
            "where intake → console goes (wall-clock stamps carried by the delta):",
            *(row(r) for r in results.stages),
        ]
    )


def format_report(meta: Meta, results: Results) -> str:
    verdict = "MET" if results.target_met else "NOT MET"
    p50 = _ms(results.console.p50_ms)
    lines = [
        f"date:     {meta.date}",
        f"machine:  nproc={meta.nproc}, {meta.python}, {meta.platform}",
        f"command:  {meta.command}",
        f"stack:    Tansu (in memory), {meta.workers} streams worker(s), {meta.partitions} partitions, "
        f"fetch_max_wait_ms={meta.fetch_max_wait_ms}",
        f"load:     {results.reports} reports at {results.rate:g}/s (achieved {results.sent_rate:.1f}/s), "
        f"{results.accepted} accepted, {results.failed} failed, {results.missing} never reached the console",
        "",
        format_table(results),
        "",
        f"target:   intake → console p50 ≤ {TARGET_P50_MS:.0f} ms: {verdict} (p50 {p50} ms)",
    ]
    return "\n".join(lines)


def _rounded(stat: Stat) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(stat).items()}


def to_json(meta: Meta, results: Results) -> dict[str, Any]:
    return {
        **asdict(meta),
        "reports": results.reports,
        "rate": results.rate,
        "sent_rate": round(results.sent_rate, 2),
        "accepted": results.accepted,
        "failed": results.failed,
        "missing": results.missing,
        "rows": [_rounded(r) for r in results.rows],
        "stages": [_rounded(r) for r in results.stages],
        "ratio_console_p50_to_broker_p50": None if results.ratio is None else round(results.ratio, 2),
        "target": {"p50_ms": TARGET_P50_MS, "met": results.target_met},
    }


# --------------------------------------------------------------------------------------------
# Command line


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--reports", type=int, default=300, help="reports to post (default 300)")
    parser.add_argument("--rate", type=float, default=20.0, help="reports per second (default 20)")
    parser.add_argument("--workers", type=int, default=1, help="streams workers (default 1, as in e2e)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic (default 4)")
    parser.add_argument("--broker-messages", type=int, default=300, help="raw round trips (default 300)")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds to wait for the last deltas")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.reports < 1 or args.rate <= 0 or args.workers < 1 or args.broker_messages < 1:
        parser.error("--reports, --workers and --broker-messages must be at least 1, --rate above 0")

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        # devtools.stack reports on stdout; keep stdout for the figures (--json).
        with contextlib.redirect_stdout(sys.stderr), bench_stack(args.workers, args.partitions) as settings:
            results = asyncio.run(
                measure(
                    settings,
                    args.reports,
                    args.rate,
                    broker_messages=args.broker_messages,
                    settle_s=args.settle,
                )
            )
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    meta = Meta.now(argv, args.workers, args.partitions, settings.fetch_max_wait_ms)
    if args.json:
        print(json.dumps(to_json(meta, results), ensure_ascii=False, indent=2))
    else:
        print(format_report(meta, results))
    return 0 if results.failed == 0 and results.missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
