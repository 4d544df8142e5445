"""The benchmarks' harness: the stack each scenario runs on (`bench_stack`: its own Tansu, database
and Redis database, the services as processes), the raw broker round trip every latency is set
beside, the run's size, and what every process of the stack costs in CPU (`CpuWatch`). Driving
it is `bench.drive`; the reports it posts, `bench.reports`. Scenarios (`bench.latency`, `steady`,
`fanout`, `throughput`, `nearest`, `memory`) use them; `bench.city` runs them in one table.
It is long (some 520 lines) because starting a stack that can be measured takes its processes,
their warm-up and their consumer groups formed, and the latency driver the warm-up uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import httpx
import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.figures import Figure
from bench.reports import (
    CHANNELS,
    INTAKE_PATHS,
    Channel,
    build_report,
)
from devtools.broker import start_tansu
from devtools.seed import DEMO_API_KEYS, DEMO_USERS, seed_all
from devtools.stack import Supervisor, ensure_postgres, ensure_redis, free_port, isolated_settings
from infra.db import drop_database
from infra.kafka_admin import create_topics
from infra.settings import Settings


def say(msg: str) -> None:
    """Progress goes to stderr, so `--json` leaves stdout to the figures."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)



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


def enriched_ns(incident: dict[str, Any]) -> int | None:
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
                        t, wall, intake_ns if isinstance(intake_ns, int) else None, enriched_ns(incident)
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


def bench_settings(port: int, partitions: int, **overrides: Any) -> Settings:
    return isolated_settings(
        "bench",
        f"127.0.0.1:{port}",
        os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432"),
        os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
        topic_partitions=partitions,
        **overrides,
    )


async def reset_stores(s: Settings) -> None:
    await drop_database(s.database_url)
    r = aioredis.Redis.from_url(s.redis_url)
    try:
        await r.flushdb()
    finally:
        await r.aclose()


async def wait_group(settings: Settings, members: int, deadline: float) -> None:
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
                await wait_group(settings, workers, deadline)


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
        asyncio.run(reset_stores(settings))
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
            asyncio.run(reset_stores(settings))
        except Exception as exc:
            say(f"could not clean the stores up: {exc!r}")
        for i in range(workers):
            shutil.rmtree(state / f"faust-{settings.faust_web_port + i}", ignore_errors=True)


@dataclass(frozen=True, slots=True)
class Size:
    """How big each scenario is; `full` is the issue's, `quick` keeps the tests fast."""

    steady_rate: float = 200.0
    steady_s: float = 60.0
    responders: int = 10_000
    position_period_s: float = 5.0
    consoles: int = 20
    dispatch_rate: float = 2.0
    dispatch_phones: int = 20
    fanout_consoles: int = 100
    fanout_phones: int = 5_000
    fanout_rate: float = 10.0
    fanout_s: float = 30.0
    # from well below the machine's limit, so the highest absorbed rate is found, not just missed
    steps: tuple[float, ...] = (25, 50, 100, 150, 200, 300, 400, 700, 1000, 1500, 2000, 2500, 3000)
    step_s: float = 15.0
    drain_s: float = 180.0  # after a step left a backlog: time for it to drain before the next run
    hold_s: float = 60.0
    posters: int = 2
    nearest_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    nearest_queries: int = 500
    memory_responders: int = 100_000
    memory_incidents: int = 1_000_000
    broker_messages: int = 300


@dataclass(slots=True)
class Proc:
    name: str
    pid: int

    def cpu_s(self) -> float:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0


def stack_processes(settings: Settings) -> list[Proc]:
    """The stack's own processes (found by their environment: this stack's HTTP port or broker
    address), plus Redis; PostgreSQL's processes are summed as one."""
    mine = f"HTTP_PORT={settings.http_port}".encode()
    broker_port = settings.kafka_bootstrap.rsplit(":", 1)[1]
    found: list[Proc] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes() if b"python" in cmd[0] else b""
        except OSError:
            continue
        text = b" ".join(cmd).decode(errors="replace")
        pid = int(entry.name)
        if mine in environ.split(b"\0"):
            for module, name in (
                ("streams.worker", "streams worker"),
                ("dispatcher.main", "dispatcher"),
                ("console.main", "console server"),
            ):
                if module in text:
                    found.append(Proc(f"{name} {pid}" if name == "streams worker" else name, pid))
        elif "tansu" in text and re.search(rf":{broker_port}(?!\d)", text):
            found.append(Proc("broker (Tansu)", pid))
        elif text.startswith("redis-server"):
            found.append(Proc("redis-server", pid))
    return sorted(found, key=lambda p: p.name)


def postgres_cpu_s() -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    total += Proc("postgres", int(entry.name)).cpu_s()
    return total


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (every core, /proc/stat: all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


MACHINE: Final = "machine (all processes)"


@dataclass(slots=True)
class CpuWatch:
    """CPU seconds each process used between `start` and `stop`, as a share of one core; with
    the whole machine's, so the load drivers' and everything else's share shows too (on two
    cores, 200 % is saturation)."""

    procs: list[Proc]
    t0: float = 0.0
    c0: dict[str, float] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)

    def _read(self) -> dict[str, float]:
        return (
            {p.name: p.cpu_s() for p in self.procs}
            | {"postgres (all)": postgres_cpu_s()}
            | {MACHINE: machine_busy_s()}
        )

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = self._read()

    def stop(self) -> None:
        span = max(time.monotonic() - self.t0, 1e-6)
        now = self._read()
        self.shares = {k: (now[k] - self.c0.get(k, 0.0)) / span for k in now}
        stack = sum(v for k, v in self.shares.items() if k != MACHINE)
        self.shares["load drivers and the rest"] = max(self.shares[MACHINE] - stack, 0.0)

    def figures(self, scenario: str) -> list[Figure]:
        cores = os.cpu_count() or 1
        return [
            Figure.of_value(
                scenario,
                f"CPU {name}",
                share * 100,
                "% core",
                note=f"{cores} cores: {cores * 100} % is every core busy" if name == MACHINE else "",
            )
            for name, share in sorted(self.shares.items(), key=lambda kv: -kv[1])
            if share >= 0.005
        ]


