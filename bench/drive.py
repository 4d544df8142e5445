"""Driving a benchmark's stack through its public edges: responders registered and logged in,
consoles and phones connected, reports posted by driver processes (`bench.load`), and what the
consoles saw read back as latencies; the latency benchmark's own console driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import aiohttp
import asyncpg

from bench import load
from bench.harness import say
from bench.load import ConsoleLog, Post, Target
from bench.reports import (
    CITY_LAT,
    CITY_LON,
)
from console.auth import token_hash
from devtools.city import generate_city
from devtools.seed import DEMO_API_KEYS, DEMO_RESPONDER_PASSWORD, DEMO_USERS
from infra.settings import Settings

OPERATOR: Final = next((u, pw) for u, _, role, pw in DEMO_USERS if role == "operator")


BENCH_ORG: Final = "压测志愿服务队"


@dataclass(frozen=True, slots=True)
class Population:
    responders: list[tuple[str, float, float]]  # (id, lon, lat): every responder that sends positions
    bench_ids: list[str]  # the ones this benchmark registered (free for its dispatches)
    login_s: list[float]  # real phone logins, timed


async def register(target: Target, ids: list[str], where: dict[str, tuple[float, float]]) -> None:
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
    await register(target, [b[0] for b in bench], {rid: (x, y) for rid, x, y in bench})
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
        if not got or len(got) < len(times):  # no console at all counts as missing, not a crash
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


async def stop_all(drivers: Sequence[load.Driver], timeout_s: float = 120.0) -> list[Any]:
    for d in drivers:
        d.stop()
    return await join_all(drivers, timeout_s)


def start_posters(
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


async def join_all(drivers: Sequence[load.Driver], timeout_s: float) -> list[Any]:
    """Off the event loop, so the orchestrator's own probe console keeps reading meanwhile."""
    return [await asyncio.to_thread(d.join, timeout_s) for d in drivers]


def posts_of(results: Sequence[Any]) -> list[Post]:
    return [p for r in results for p in r]


def rate_of(posts: Sequence[Post]) -> float:
    if len(posts) < 2:
        return float(len(posts))
    t = sorted(p.t0_ns for p in posts)
    return (len(t) - 1) / ((t[-1] - t[0]) / 1e9 or 1e-9)


async def console_sessions(settings: Settings, count: int) -> list[str]:
    """A session each for `count` consoles, each its own account (a command room's desks): one
    account holds at most 6 sockets and opens at most 10 sessions a minute (console/auth.py,
    console/live/protocol.py). Accounts and sessions are written as the registry and a login write them."""
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


async def split_consoles(
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
