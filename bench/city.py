"""The city-scale benchmark (issue 6): `python -m bench.city` (`./centre bench`), one table.

    python -m bench.city [--quick] [--only steady,fanout,throughput,nearest,memory] [--json]

It starts the real stack on this machine (`bench_stack`: its own Tansu, database and Redis
database; streams workers, dispatcher and console server as processes), drives it from driver
processes of its own (`bench.load`) through the public contracts only, and prints one table in
which every latency stands beside the raw broker produce→consume p50 measured in the same run.

Scenarios (full size; `--quick` is the tiny version the tests run):

* **steady**: 200 reports/s across the three channels, 10,000 responders each sending a position
  every 5 s (HTTP position intake, batched as gateways do), 20 consoles, and an operator who
  dispatches new incidents one click each to responders whose phones are connected. Times:
  report → every console, position → every console, dispatch command → the responder's phone.
* **fanout**: 5,000 responders' phones connected (each sending its position over the socket every
  5 s) and 100 consoles; a report's incident must reach every console. The console server's
  resident memory before and after the connections gives memory per connection.
* **throughput**: report rates stepped up (15 s a step) until a step is not absorbed (the posters
  cannot reach the rate, the intake refuses, or the consoles are still behind 5 s after the step);
  then the highest absorbed rate is held for 60 s and the backlog (accepted, not yet on the
  console) is sampled every second, and every accepted report must reach the console.
* **nearest**: `bench.nearest` (lookups at 1k/10k/100k responders beside a brute-force scan).
* **memory**: `bench.memory` (every process's memory at 100,000 responders and 1,000,000 stored
  incidents), on a stack of its own.

Alongside, the CPU used by every process of the stack during each scenario is read from /proc,
so the table says where the time went.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import platform
import random
import shlex
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from bench import load
from bench.figures import Figure, format_figures
from bench.latency import CITY_LAT, CITY_LON, bench_stack, measure_broker, say
from bench.load import ConsoleLog, Post, Target
from console.auth import token_hash
from devtools.city import generate_city
from devtools.seed import DEMO_API_KEYS, DEMO_RESPONDER_PASSWORD, DEMO_USERS
from infra.settings import Settings

OPERATOR: Final = next((u, pw) for u, _, role, pw in DEMO_USERS if role == "operator")
BENCH_ORG: Final = "压测志愿服务队"


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


FULL: Final = Size()
QUICK: Final = Size(
    steady_rate=20,
    steady_s=4,
    responders=4_000,
    consoles=2,
    dispatch_rate=2,
    dispatch_phones=3,
    fanout_consoles=4,
    fanout_phones=40,
    fanout_rate=5,
    fanout_s=3,
    steps=(20, 40),
    step_s=3,
    drain_s=30,
    hold_s=4,
    posters=1,
    nearest_sizes=(200, 1_000),
    nearest_queries=30,
    memory_responders=2_000,
    memory_incidents=20_000,
    broker_messages=50,
)
SCENARIOS: Final = ("fanout", "steady", "throughput", "nearest", "memory")
FETCH_WAIT_MS: Final = Settings().fetch_max_wait_ms


# --------------------------------------------------------------------------------------------
# The stack's processes, read from /proc


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
        elif "tansu" in text and broker_port in text:
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


# --------------------------------------------------------------------------------------------
# The population: 10,000 responders, their phones' sessions


@dataclass(frozen=True, slots=True)
class Population:
    responders: list[tuple[str, float, float]]  # (id, lon, lat): every responder that sends positions
    bench_ids: list[str]  # the ones this benchmark registered (free for its dispatches)
    login_s: list[float]  # real phone logins, timed


async def _register(target: Target, ids: list[str], where: dict[str, tuple[float, float]]) -> None:
    """Through the public registry (the roster reaches live state the normal way)."""
    headers = {"X-Api-Key": DEMO_API_KEYS["admin"]}
    sem = asyncio.Semaphore(32)
    async with aiohttp.ClientSession(target.http) as http:

        async def one(rid: str) -> None:
            body = {
                "name": f"压测{rid[-5:]}",
                "kind": "volunteer",
                "org": BENCH_ORG,
                "skills": [],
                "on_duty": True,
            }
            async with sem:
                for attempt in range(5):
                    async with http.put(f"/api/v1/responders/{rid}", json=body, headers=headers) as r:
                        if r.status in (200, 201):
                            return
                        if r.status != 503 or attempt == 4:
                            raise RuntimeError(f"registering {rid}: {r.status} {await r.text()}")
                    await asyncio.sleep(1)

        await asyncio.gather(*(one(rid) for rid in ids))
        # a first position for each, so they are on the map and in the nearest lookups
        fixes = [
            {
                "responder_id": rid,
                "lon": where[rid][0],
                "lat": where[rid][1],
                "at": datetime.now().astimezone().isoformat(),
            }
            for rid in ids
        ]
        for lo in range(0, len(fixes), 1000):
            async with http.post(
                "/api/v1/intake/positions",
                json={"positions": fixes[lo : lo + 1000]},
                headers={"X-Api-Key": DEMO_API_KEYS["positions"]},
            ) as r:
                if r.status not in (200, 202):
                    raise RuntimeError(f"first positions: {r.status} {await r.text()}")


async def populate(settings: Settings, target: Target, responders: int) -> Population:
    city = generate_city()
    demo = [(r.responder_id, r.lon, r.lat) for r in city.responders]
    extra = max(0, responders - len(demo))
    rng = random.Random(11)
    bench = [(f"BR-{i:05d}", rng.uniform(*CITY_LON), rng.uniform(*CITY_LAT)) for i in range(1, extra + 1)]
    say(f"registering {extra} more responders through the registry ({len(demo)} in the demo city)")
    t0 = time.monotonic()
    await _register(target, [b[0] for b in bench], {rid: (x, y) for rid, x, y in bench})
    say(f"registered in {time.monotonic() - t0:.1f}s")
    # Phone logins for the bench's responders share the demo responders' password hash (setup,
    # not a contract: one scrypt check costs ~50 ms by design, see console/passwords.py).
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            """INSERT INTO users (username, display_name, role, password_hash, responder_id)
               SELECT r.responder_id, r.name, 'responder',
                      (SELECT password_hash FROM users WHERE role = 'responder' LIMIT 1), r.responder_id
                 FROM responders r WHERE r.responder_id LIKE 'BR-%'
               ON CONFLICT (username) DO NOTHING"""
        )
    finally:
        await conn.close()
    logins: list[float] = []
    async with aiohttp.ClientSession(target.http) as http:
        for rid, _, _ in (bench or demo)[:5]:
            t = time.perf_counter()
            await load.login(http, rid, DEMO_RESPONDER_PASSWORD)
            logins.append(time.perf_counter() - t)
    all_ = (demo + bench)[:responders] if responders < len(demo) else demo + bench
    return Population(all_, [b[0] for b in bench] or [d[0] for d in demo], logins)


async def phone_sessions(settings: Settings, usernames: list[str]) -> list[str]:
    """Session tokens for many phones at once, written as a login writes them (a shift change of
    thousands of scrypt logins would take minutes of the console server's CPU; the real login is
    timed separately)."""
    tokens = [uuid.uuid4().hex + uuid.uuid4().hex for _ in usernames]
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.executemany(
            """INSERT INTO sessions (token_hash, username, idle_deadline, expires_at, origin)
               VALUES ($1, $2, now() + interval '12 hours', now() + interval '12 hours', 'bench')""",
            [(token_hash(t), u) for t, u in zip(tokens, usernames, strict=True)],
        )
    finally:
        await conn.close()
    return tokens


# --------------------------------------------------------------------------------------------
# Latencies from what the drivers saw


def report_latencies(posts: Sequence[Post], logs: Sequence[ConsoleLog]) -> list[float]:
    """Seconds from each report's POST to its incident's first delta, at every console."""
    out: list[float] = []
    for p in posts:
        if p.incident_id is None:
            continue
        for log in logs:
            t = log.incidents.get(p.incident_id)
            if t is not None:
                out.append((t - p.t0_ns) / 1e9)
    return out


def every_console_latencies(
    posts: Sequence[Post], logs: Sequence[ConsoleLog]
) -> tuple[list[float], list[float], int]:
    """Per report: until the *last* console had it, and the spread first → last console; and how
    many reports some console never got."""
    last: list[float] = []
    spread: list[float] = []
    missing = 0
    for p in posts:
        if p.incident_id is None:
            continue
        times = [log.incidents.get(p.incident_id) for log in logs]
        got = [t for t in times if t is not None]
        if len(got) < len(times):
            missing += 1
            continue
        last.append((max(got) - p.t0_ns) / 1e9)
        spread.append((max(got) - min(got)) / 1e9)
    return last, spread, missing


def missing_from(posts: Sequence[Post], logs: Sequence[ConsoleLog]) -> int:
    ids = {p.incident_id for p in posts if p.incident_id}
    return sum(len(ids - log.incidents.keys()) for log in logs)


async def wait_arrivals(posts_ids: set[str], settle_s: float, probe: ConsoleProbe) -> None:
    """Give the consoles up to `settle_s` for the last incidents (watched on a probe console)."""
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline and not posts_ids <= probe.seen:  # noqa: ASYNC110
        await asyncio.sleep(0.2)


class ConsoleProbe:
    """A console of the orchestrator's own, to know when the pipeline has drained."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._log = ConsoleLog()
        self._ws: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def seen(self) -> set[str]:
        return set(self._log.incidents)

    @property
    def log(self) -> ConsoleLog:
        return self._log

    async def __aenter__(self) -> ConsoleProbe:
        async with aiohttp.ClientSession(self.target.http) as http:
            token = await load.login(http, *OPERATOR)
        self._ws = await load.open_socket(self.target, token, "snapshot")
        self._task = asyncio.create_task(load.read_console(self._ws, self._log))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        with contextlib.suppress(Exception):
            await self._ws.close()


async def _stop_all(drivers: Sequence[load.Driver], timeout_s: float = 120.0) -> list[Any]:
    for d in drivers:
        d.stop()
    return await _join_all(drivers, timeout_s)


def _posters(
    target: Target, rate: float, duration_s: float, start_ns: int, run: str, parts: int
) -> list[load.Driver]:
    return [
        load.spawn_driver(
            f"reports-{k}",
            "bench.load:post_reports",
            target=target,
            rate=rate,
            duration_s=duration_s,
            start_ns=start_ns,
            run=run,
            part=k,
            parts=parts,
        )
        for k in range(parts)
    ]


async def _join_all(drivers: Sequence[load.Driver], timeout_s: float) -> list[Any]:
    """Off the event loop, so the orchestrator's own probe console keeps reading meanwhile."""
    return [await asyncio.to_thread(d.join, timeout_s) for d in drivers]


def _posts(results: Sequence[Any]) -> list[Post]:
    return [p for r in results for p in r]


def _rate_of(posts: Sequence[Post]) -> float:
    if len(posts) < 2:
        return float(len(posts))
    t = sorted(p.t0_ns for p in posts)
    return (len(t) - 1) / ((t[-1] - t[0]) / 1e9 or 1e-9)


# --------------------------------------------------------------------------------------------
# Scenarios


async def steady(
    settings: Settings, target: Target, size: Size, pop: Population, procs: list[Proc]
) -> list[Figure]:
    async with ConsoleProbe(target) as probe:
        return await _steady(settings, target, size, pop, procs, probe)


async def _steady(
    settings: Settings, target: Target, size: Size, pop: Population, procs: list[Proc], probe: ConsoleProbe
) -> list[Figure]:
    s = "steady"
    phones = pop.bench_ids[: size.dispatch_phones]
    tokens = await phone_sessions(settings, phones)
    consoles = await _split_consoles(settings, target, size.consoles)
    for d in consoles:
        await asyncio.to_thread(d.wait_ready, 120)
    start_ns = load.now_ns() + int(6e9)
    run = uuid.uuid4().hex[:6]
    dispatcher = load.spawn_driver(
        "dispatch",
        "bench.load:dispatch_to_phones",
        target=target,
        operator=OPERATOR,
        phones=list(zip(phones, tokens, strict=True)),
        rate=size.dispatch_rate,
        start_ns=start_ns,
        duration_s=size.steady_s,
    )
    positions = load.spawn_driver(
        "positions",
        "bench.load:post_positions",
        target=target,
        responders=pop.responders,
        period_s=size.position_period_s,
        duration_s=size.steady_s,
        start_ns=start_ns,
    )
    posters = _posters(target, size.steady_rate, size.steady_s, start_ns, run, 1)
    for d in [dispatcher, positions, *posters]:
        await asyncio.to_thread(d.wait_ready, 60)
    cpu = CpuWatch(procs)
    await load.sleep_until(start_ns)
    cpu.start()
    say(
        f"steady: {size.steady_rate:g} reports/s, {len(pop.responders)} responders every "
        f"{size.position_period_s:g} s, {size.consoles} consoles, {size.steady_s:g} s"
    )
    posts = _posts(await _join_all(posters, size.steady_s + 120))
    pos = (await _join_all([positions], size.steady_s + 120))[0]
    cpu.stop()
    disp = (await _join_all([dispatcher], 120))[0]
    await wait_arrivals({p.incident_id for p in posts if p.incident_id}, 15.0, probe)
    await asyncio.sleep(1.0)
    logs: list[ConsoleLog] = [log for r in await _stop_all(consoles) for log in r]

    accepted = [p for p in posts if p.status == 202]
    lat = report_latencies(accepted, logs)
    pos_lat: list[float] = []
    for rid, ms, t0 in pos["sent"]:
        for log in logs:
            t = log.positions.get((rid, ms))
            if t is not None:
                pos_lat.append((t - t0) / 1e9)
    pos_expected = len(pos["sent"]) * len(logs)
    offers = [(b - a) / 1e9 for a, b in disp["offers"]]
    missing = missing_from(accepted, logs)
    figs = [
        Figure.latency(
            s,
            "report → console (each console)",
            lat,
            goal="p50 ≤ 50, p99 ≤ 150 ms",
            p50_goal_ms=50,
            p99_goal_ms=150,
        ),
        Figure.latency(s, "intake HTTP answer", [(p.t1_ns - p.t0_ns) / 1e9 for p in accepted]),
        Figure.latency(
            s,
            "position → console (each console)",
            pos_lat,
            goal="p99 ≤ 200 ms",
            p99_goal_ms=200,
            note="" if pos_lat else "no positions frame reached a console",
        ),
        Figure.latency(
            s,
            "dispatch command → phone",
            offers,
            goal="p99 ≤ 50 ms",
            p99_goal_ms=50,
            note=f"{disp['sent']} dispatched, {len(offers)} offers seen"
            + (f", refused: {disp['refused'][:3]}" if disp["refused"] else ""),
        ),
        Figure.of_value(s, "reports sent", _rate_of(posts), "/s", n=len(posts)),
        Figure.of_value(s, "reports accepted (202)", len(accepted), "", n=len(posts)),
        Figure.of_value(s, "report×console never shown", missing, "", goal="0", met=missing == 0),
        Figure.of_value(
            s,
            "positions sent",
            pos["fixes"] / size.steady_s,
            "/s",
            n=pos["fixes"],
            note=f"{pos['failed_batches']} batches refused" if pos["failed_batches"] else "",
        ),
        Figure.of_value(
            s,
            "timed fixes shown",
            len(pos_lat) / pos_expected * 100 if pos_expected else 0,
            "%",
            n=pos_expected,
        ),
        *cpu.figures(s),
    ]
    return figs


async def console_sessions(settings: Settings, count: int) -> list[str]:
    """A session each for `count` consoles, each its own account (a command room's desks): one
    account holds at most 6 sockets and opens at most 10 sessions a minute (console/auth.py,
    console/live.py). Accounts and sessions are written as the registry and a login write them."""
    roles = ("operator", "commander", "viewer")
    names = [f"bench-console-{i:03d}" for i in range(count)]
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.executemany(
            """INSERT INTO users (username, display_name, role, password_hash)
               SELECT $1, $1, $2, password_hash FROM users WHERE username = 'duty'
               ON CONFLICT (username) DO NOTHING""",
            [(name, roles[i % len(roles)]) for i, name in enumerate(names)],
        )
    finally:
        await conn.close()
    return await phone_sessions(settings, names)


async def _split_consoles(
    settings: Settings, target: Target, count: int, per_process: int = 50
) -> list[load.Driver]:
    tokens = await console_sessions(settings, count)
    drivers = []
    for k in range(0, count, per_process):
        drivers.append(
            load.spawn_driver(
                f"consoles-{k}",
                "bench.load:watch_consoles",
                target=target,
                tokens=tokens[k : k + per_process],
            )
        )
    return drivers


def console_server(procs: Sequence[Proc]) -> Proc:
    return next(p for p in procs if p.name == "console server")


async def fanout(
    settings: Settings, target: Target, size: Size, pop: Population, procs: list[Proc]
) -> list[Figure]:
    async with ConsoleProbe(target) as probe:
        return await _fanout(settings, target, size, pop, procs, probe)


async def _fanout(
    settings: Settings, target: Target, size: Size, pop: Population, procs: list[Proc], probe: ConsoleProbe
) -> list[Figure]:
    s = "fanout"
    server = console_server(procs)
    where = {rid: (x, y) for rid, x, y in pop.responders}
    ids = [rid for rid, _, _ in pop.responders][: size.fanout_phones]
    tokens = await phone_sessions(settings, ids)
    rss0 = server.rss_mib()
    per = 2_500
    phone_drivers = [
        load.spawn_driver(
            f"phones-{k}",
            "bench.load:hold_phones",
            target=target,
            phones=[
                (rid, tok, *where[rid])
                for rid, tok in zip(ids[k : k + per], tokens[k : k + per], strict=True)
            ],
        )
        for k in range(0, len(ids), per)
    ]
    for d in phone_drivers:
        await asyncio.to_thread(d.wait_ready, 300)
    await asyncio.sleep(2)
    rss1 = server.rss_mib()
    consoles = await _split_consoles(settings, target, size.fanout_consoles)
    for d in consoles:
        await asyncio.to_thread(d.wait_ready, 300)
    await asyncio.sleep(2)
    rss2 = server.rss_mib()
    say(
        f"fanout: {len(ids)} phones, {size.fanout_consoles} consoles connected; "
        f"console server {rss0:.0f} → {rss1:.0f} → {rss2:.0f} MiB"
    )
    cpu = CpuWatch(procs)
    start_ns = load.now_ns() + int(2e9)
    posters = _posters(target, size.fanout_rate, size.fanout_s, start_ns, uuid.uuid4().hex[:6], 1)
    await asyncio.to_thread(posters[0].wait_ready, 60)
    await load.sleep_until(start_ns)
    cpu.start()
    posts = _posts(await _join_all(posters, size.fanout_s + 120))
    cpu.stop()
    await wait_arrivals({p.incident_id for p in posts if p.incident_id}, 15.0, probe)
    await asyncio.sleep(1.0)
    logs = [log for r in await _stop_all(consoles) for log in r]
    held = await _stop_all(phone_drivers)
    accepted = [p for p in posts if p.status == 202]
    last, spread, missing = every_console_latencies(accepted, logs)
    cut = sum(1 for log in logs if log.closed)
    phones_on = sum(h["connected"] for h in held)
    return [
        Figure.latency(
            s,
            f"report → all {size.fanout_consoles} consoles",
            last,
            goal="p99 ≤ 100 ms",
            p99_goal_ms=100,
            note=f"{missing} reports missed by some console; {cut} consoles cut off",
        ),
        Figure.latency(s, "first → last console", spread),
        Figure.of_value(
            s,
            "phones connected",
            phones_on,
            "",
            n=sum(h["positions_sent"] for h in held),
            note=f"{sum(h['errors'] for h in held)} error frames to phones",
        ),
        Figure.of_value(s, "memory per phone connection", (rss1 - rss0) * 1024 / max(phones_on, 1), "KiB"),
        Figure.of_value(
            s, "memory per console connection", (rss2 - rss1) * 1024 / max(size.fanout_consoles, 1), "KiB"
        ),
        Figure.of_value(s, "console server RSS, all connected", rss2, "MiB"),
        *cpu.figures(s),
    ]


@dataclass(frozen=True, slots=True)
class Step:
    rate: float
    sent_rate: float
    accepted: int
    refused: int
    behind: int  # accepted but not on the console 5 s after the step
    drained_s: float | None  # how long those took to arrive after that (None: not within drain_s)
    absorbed: bool

    def note(self) -> str:
        """Why a step was not absorbed, and how fast its backlog drained with no new reports
        coming: that rate is about what the pipeline keeps up with."""
        if self.absorbed:
            return ""
        said = f"{self.refused} refused, {self.behind} not on the console 5 s later"
        if not self.behind:
            return said
        if self.drained_s is None:
            return f"{said}; not all arrived within the drain time"
        drained = self.behind / max(self.drained_s, 0.1)
        return f"{said}; they arrived {self.drained_s:.0f} s after that (~{drained:.0f}/s drained)"


@dataclass(frozen=True, slots=True)
class Run:
    posts: list[Post]
    log: ConsoleLog
    behind: int  # accepted but not on the console `settle_s` after the last post
    drained_s: float | None  # how long the rest took to arrive after that (None: not within drain_s)


async def _run_rate(
    target: Target, rate: float, duration_s: float, parts: int, settle_s: float, drain_s: float = 0.0
) -> Run:
    """Reports at `rate` from `parts` poster processes, watched by a console of this process;
    waits up to `settle_s` after the last post for the last incidents, then (what is behind is
    counted) up to `drain_s` more for the rest, so that the next run starts on a drained stack:
    a run begun behind a backlog measures the backlog, not its own rate."""
    async with ConsoleProbe(target) as probe:
        start_ns = load.now_ns() + int(2e9)
        posters = _posters(target, rate, duration_s, start_ns, uuid.uuid4().hex[:6], parts)
        for d in posters:
            await asyncio.to_thread(d.wait_ready, 120)
        posts = _posts(await _join_all(posters, duration_s + 300))
        ids = {p.incident_id for p in posts if p.incident_id}
        await wait_arrivals(ids, settle_s, probe)
        behind = len(ids - probe.seen)
        drained_s: float | None = 0.0
        if behind:
            t0 = time.monotonic()
            await wait_arrivals(ids, drain_s, probe)
            drained_s = time.monotonic() - t0 if ids <= probe.seen else None
        return Run(posts, probe.log, behind, drained_s)


async def throughput(settings: Settings, target: Target, size: Size, procs: list[Proc]) -> list[Figure]:
    s = "throughput"
    steps: list[Step] = []
    best: Step | None = None
    for rate in size.steps:
        parts = size.posters if rate > 400 else 1
        run = await _run_rate(target, rate, size.step_s, parts, 5.0, size.drain_s)
        posts, behind = run.posts, run.behind
        accepted = [p for p in posts if p.status == 202]
        sent_rate = _rate_of(posts)
        step = Step(
            rate,
            sent_rate,
            len(accepted),
            len(posts) - len(accepted),
            behind,
            run.drained_s,
            sent_rate >= 0.95 * rate and len(accepted) == len(posts) and behind == 0,
        )
        steps.append(step)
        say(
            f"throughput step {rate:g}/s: sent {sent_rate:.0f}/s, {step.refused} refused, {behind} behind → "
            f"{'absorbed' if step.absorbed else 'NOT absorbed'}"
        )
        if not step.absorbed:
            break
        best = step
        await asyncio.sleep(3)
    figs = [
        Figure.of_value(
            s,
            f"step {st.rate:g}/s",
            st.sent_rate,
            "/s sent",
            n=st.accepted,
            note=st.note(),
        )
        for st in steps
    ]
    if best is None:
        figs.append(
            Figure.of_value(
                s,
                "held 60 s",
                0,
                "/s",
                goal="≥ 2,000/s (floor 1,000)",
                met=False,
                note="no step was absorbed",
            )
        )
        return figs
    await asyncio.sleep(5)
    cpu = CpuWatch(procs)
    cpu.start()
    parts = size.posters if best.rate > 400 else 1
    say(f"throughput: holding {best.rate:g}/s for {size.hold_s:g} s")
    held_run = await _run_rate(target, best.rate, size.hold_s, parts, 60.0)
    posts, log = held_run.posts, held_run.log
    cpu.stop()
    accepted = [p for p in posts if p.status == 202]
    lost = sum(1 for p in accepted if p.incident_id not in log.incidents)
    backlog = _backlog(accepted, log)
    lat = report_latencies(accepted, [log])
    held = _rate_of(accepted)
    ok = lost == 0 and len(accepted) == len(posts) and held >= 0.95 * best.rate
    figs += [
        Figure.of_value(
            s,
            f"held {size.hold_s:g} s",
            held,
            "/s",
            n=len(accepted),
            goal="≥ 2,000/s (floor 1,000)",
            met=ok and held >= 2000,
            note=f"floor 1,000/s {'met' if ok and held >= 1000 else 'NOT met'}; {lost} not on the console "
            f"60 s after the hold (accepted and kept: late, not lost), {len(posts) - len(accepted)} refused",
        ),
        Figure.of_value(
            s,
            "max backlog while held",
            max(backlog, default=0),
            "reports",
            note=f"backlog at the end of the hold: {backlog[-1] if backlog else 0}",
        ),
        Figure.latency(s, "report → console while held", lat),
        *cpu.figures(s),
    ]
    return figs


def _backlog(accepted: Sequence[Post], log: ConsoleLog) -> list[int]:
    """Accepted but not yet on the console, every second of the run."""
    if not accepted:
        return []
    t0 = min(p.t1_ns for p in accepted)
    t1 = max(p.t1_ns for p in accepted)
    out = []
    answered = sorted(p.t1_ns for p in accepted)
    shown = sorted(log.incidents[p.incident_id] for p in accepted if p.incident_id in log.incidents)
    t = t0
    while t <= t1:
        out.append(bisect.bisect_right(answered, t) - bisect.bisect_right(shown, t))
        t += 1_000_000_000
    return out


async def nearest(size: Size) -> list[Figure]:
    from bench import nearest as nb

    redis = aioredis.Redis.from_url(os.environ.get("BENCH_NEAREST_REDIS_URL", "redis://127.0.0.1:6379/12"))
    try:
        rows = await nb.measure(redis, sizes=list(size.nearest_sizes), queries=size.nearest_queries)
    finally:
        await redis.aclose()
    biggest = max(size.nearest_sizes)
    figs = []
    for r in rows:
        goal = r.size == biggest and r.method.startswith("GEOSEARCH")
        figs.append(
            Figure(
                "nearest",
                f"{r.method} at {r.size:,}",
                r.queries,
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                goal=f"p99 ≤ {nb.GOAL_P99_MS:g} ms" if goal else "",
                met=(r.p99_ms <= nb.GOAL_P99_MS) if goal else None,
            )
        )
    return figs


# --------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True, slots=True)
class Meta:
    date: str
    machine: str
    command: str


def meta(argv: Sequence[str]) -> Meta:
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count() or 1
    mem = ""
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    return Meta(
        date=datetime.now().astimezone().isoformat(timespec="seconds"),
        machine=f"nproc={nproc}{mem}, {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.platform()}",
        command=" ".join(["python -m bench.city", shlex.join(list(argv))]).strip(),
    )


@contextlib.contextmanager
def _stack(size: Size, workers: int, partitions: int, fetch_wait_ms: int) -> Iterator[Settings]:
    with bench_stack(workers, partitions, overrides={"fetch_max_wait_ms": fetch_wait_ms}) as settings:
        yield settings


def run(
    size: Size, only: Sequence[str], workers: int, partitions: int, fetch_wait_ms: int = FETCH_WAIT_MS
) -> tuple[float | None, list[Figure]]:
    figures: list[Figure] = []
    broker_p50: float | None = None
    # Fan-out first: steady load leaves thousands of open incidents, and every console connecting
    # after it would start with a snapshot of all of them. Throughput on a drained stack: one
    # that steady load overran is still working through that backlog, so it gets a new one.
    pending = [s for s in ("fanout", "steady", "throughput") if s in only]
    while pending:
        for attempt in (1, 2):
            try:
                p50, got, left = _on_a_stack(
                    size, pending, workers, partitions, fetch_wait_ms, measure=broker_p50 is None
                )
            except Exception as exc:  # a stack that did not come up (its warm-up timed out)
                say(f"the stack for {'+'.join(pending)} did not come up ({exc!r}), attempt {attempt}")
                if attempt == 2:
                    figures.append(
                        Figure.of_value(pending[0], "did not complete", 0, "", met=False, note=repr(exc))
                    )
                    left = []
                continue
            broker_p50 = broker_p50 if p50 is None else p50
            figures += got
            break
        pending = left
    if "nearest" in only:
        figures += _survive("nearest", lambda: asyncio.run(nearest(size)))
    if "memory" in only:
        from bench import memory

        figures += _survive(
            "memory", lambda: memory.measure_memory(size.memory_responders, size.memory_incidents)
        )
    return broker_p50, figures


async def unfiled_reports(settings: Settings) -> int:
    """Reports accepted and not yet in an incident: the stack's backlog."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM reports WHERE incident_id IS NULL"))
    finally:
        await conn.close()


async def sent_again(settings: Settings) -> tuple[int, int]:
    """How many times the intake published reports again (beyond the first), and of how many
    reports: re-sends add load, so an overloaded stack must not re-send what is merely late."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        row = await conn.fetchrow("SELECT coalesce(sum(greatest(attempts - 1, 0)), 0), count(*) FROM reports")
        assert row is not None
        return int(row[0]), int(row[1])
    finally:
        await conn.close()


def _on_a_stack(
    size: Size, scenarios: Sequence[str], workers: int, partitions: int, fetch_wait_ms: int, measure: bool
) -> tuple[float | None, list[Figure], list[str]]:
    """`scenarios` one after another on a stack of their own (the raw broker round trip first
    when `measure`). Throughput is left over (the third answer) when steady load left a backlog
    it would inherit."""
    figures: list[Figure] = []
    left: list[str] = []
    broker_p50: float | None = None
    with _stack(size, workers, partitions, fetch_wait_ms) as settings:
        target = Target(
            f"http://{settings.http_host}:{settings.http_port}",
            f"ws://{settings.http_host}:{settings.ws_port}",
            dict(DEMO_API_KEYS),
        )
        procs = stack_processes(settings)
        say("stack processes: " + ", ".join(f"{p.name} ({p.pid})" for p in procs))
        if measure:
            broker = asyncio.run(measure_broker(settings, size.broker_messages))
            fig = Figure.latency("broker", "raw produce→consume", broker)
            broker_p50 = fig.p50_ms
            figures.append(fig)
        if "fanout" in scenarios or "steady" in scenarios:
            pop = asyncio.run(populate(settings, target, size.responders))
            figures.append(Figure.latency("setup", "phone login (scrypt)", pop.login_s))
        if "fanout" in scenarios:
            figures += _survive("fanout", lambda: asyncio.run(fanout(settings, target, size, pop, procs)))
        if "steady" in scenarios:
            figures += _survive("steady", lambda: asyncio.run(steady(settings, target, size, pop, procs)))
        ran = list(scenarios)
        if "throughput" in scenarios and "steady" in scenarios:
            backlog = asyncio.run(unfiled_reports(settings))
            if backlog:
                say(f"steady load left {backlog} reports not yet filed: throughput gets a stack of its own")
                left, ran = ["throughput"], [s for s in scenarios if s != "throughput"]
        if "throughput" in ran:
            figures += _survive("throughput", lambda: asyncio.run(throughput(settings, target, size, procs)))
        after = "+".join(ran)
        again, reports = asyncio.run(sent_again(settings))
        figures.append(
            Figure.of_value(
                "stack",
                f"reports sent again after {after}",
                again,
                "sends",
                n=reports,
                note="by the intake's reconciler: lost ones only, not those late behind a backlog",
            )
        )
        figures += [
            Figure.of_value("stack", f"RSS {p.name} after {after}", p.rss_mib(), "MiB") for p in procs
        ]
    return broker_p50, figures, left


def _survive(scenario: str, call: Callable[[], list[Figure]]) -> list[Figure]:
    """A scenario that breaks (a driver that cannot finish against an overloaded stack) is a
    row of the table saying why, and the other scenarios still run."""
    try:
        return call()
    except Exception as exc:
        say(f"{scenario} failed: {exc!r}")
        return [
            Figure.of_value(
                scenario, "did not complete", 0, "", met=False, note=str(exc).splitlines()[0][:300]
            )
        ]


def format_report(
    m: Meta,
    broker_p50: float | None,
    figures: Sequence[Figure],
    workers: int,
    partitions: int,
    fetch_wait_ms: int = FETCH_WAIT_MS,
) -> str:
    met = [f for f in figures if f.met is True]
    missed = [f for f in figures if f.met is False]
    return "\n".join(
        [
            f"date:     {m.date}",
            f"machine:  {m.machine}",
            f"command:  {m.command}",
            f"stack:    Tansu (in memory), {workers} streams worker(s), {partitions} partitions per topic, "
            f"1 dispatcher, 1 console server, fetch_max_wait_ms={fetch_wait_ms}; "
            "PostgreSQL and Redis of this machine",
            f"baseline: raw broker produce→consume p50 = {broker_p50:.1f} ms"
            if broker_p50
            else "baseline: -",
            "",
            format_figures(figures, broker_p50),
            "",
            f"goals: {len(met)} met, {len(missed)} not met"
            + (": " + "; ".join(f"{f.scenario} / {f.name}" for f in missed) if missed else ""),
        ]
    )


def resized(size: Size, changes: Sequence[str]) -> Size:
    """`size` with FIELD=VALUE changes (a tuple field takes comma-separated numbers): to take a
    scenario apart, e.g. positions without reports (steady_rate=0)."""
    kinds = {f.name: f for f in fields(Size)}
    out: dict[str, Any] = {}
    for change in changes:
        name, sep, text = change.partition("=")
        if not sep or name not in kinds:
            raise ValueError(f"--set {change!r}: expected FIELD=VALUE with FIELD one of {', '.join(kinds)}")
        current = getattr(size, name)
        try:
            if isinstance(current, tuple):
                kind = type(current[0]) if current else float
                out[name] = tuple(kind(v) for v in text.split(",") if v)
            else:
                out[name] = type(current)(text)
        except ValueError as exc:
            raise ValueError(f"--set {change!r}: {exc}") from exc
    return replace(size, **out)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench.city", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the tiny version (what the tests run)")
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"scenarios (default all: {','.join(SCENARIOS)})"
    )
    parser.add_argument("--workers", type=int, default=2, help="streams workers (default 2)")
    parser.add_argument(
        "--partitions",
        type=int,
        default=2,
        help="partitions per topic (default 2: one per streams worker; on two cores every partition "
        "more costs the local broker's polling a tenth of a core, BENCHMARKS.md)",
    )
    parser.add_argument(
        "--fetch-wait",
        type=int,
        default=FETCH_WAIT_MS,
        metavar="MS",
        help=f"every consumer's fetch wait (default {FETCH_WAIT_MS}: Tansu answers a fetch when the wait "
        "runs out, not when data arrives, so it trades each hop's latency for the broker's CPU)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change one size, e.g. --set steady_rate=0 --set consoles=5 (fields: "
        + ", ".join(f.name for f in fields(Size))
        + ")",
    )
    args = parser.parse_args(argv)
    if args.fetch_wait < 0:
        parser.error(f"--fetch-wait {args.fetch_wait}: expected 0 or more milliseconds")
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(only) - set(SCENARIOS):
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    try:
        size = resized(QUICK if args.quick else FULL, args.set)
    except ValueError as exc:
        parser.error(str(exc))
    with contextlib.redirect_stdout(sys.stderr):
        broker_p50, figures = run(size, only, args.workers, args.partitions, args.fetch_wait)
    m = meta(argv)
    if args.json:
        print(
            json.dumps(
                {"meta": asdict(m), "broker_p50_ms": broker_p50, "figures": [f.as_json() for f in figures]},
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        print(format_report(m, broker_p50, figures, args.workers, args.partitions, args.fetch_wait))
    return 0


if __name__ == "__main__":
    sys.exit(main())
