"""Memory and idle CPU of every process at city scale (issue 6): `python -m bench.memory`.

    python -m bench.memory [--responders 100000] [--incidents 1000000] [--json]

(Long, some 750 lines, because it is one procedure at scale: load, empty Redis, wait for the
rebuild, settle, sample every process, report; each step depends on the state the last left.)

It starts the real centre with `bench.harness.bench_stack` (its own Tansu, database and Redis
database; the streams worker, dispatcher and console server run by `devtools.stack.Supervisor`).
Before the processes start, `bench.bulk` loads the scale into PostgreSQL with set-based SQL:
N more responders (registry, phone logins, last positions) and M stored incidents over the last
year (nearly all closed, a few hundred open, each with its report, timeline and task). Then
Redis is emptied, as after a restart: the dispatcher's live keeper must rebuild the live state
of every responder from PostgreSQL, the real recovery path, and the time it logs is reported.

Once the rebuild is done and the centre has settled, it measures every process (VmRSS from
/proc/<pid>/status, PSS and private memory from /proc/<pid>/smaps_rollup): the streams worker,
the dispatcher, the console server, Tansu, Redis (INFO memory, and this database's share as the
sum of MEMORY USAGE over its keys) and PostgreSQL (the database's size, and the backends serving
it). It does so idle, then after a modest load (an operator console connected, a few reports
through the intake, one batch of positions, reads of stored incidents), and samples each
process's CPU (utime + stime) over an idle window: a periodic loop that scans every responder
or every incident shows up there, as do PostgreSQL rows read by sequential scans meanwhile.

Each figure is a `bench.figures.Figure` (scenario "memory"): `measure_memory` returns them so
the combined command can print one table; this module's command prints them on their own.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx
import orjson
import redis.asyncio as aioredis

from bench import bulk
from bench.figures import Figure, format_figures
from bench.harness import Driver, bench_stack, say
from bench.reports import build_report
from contracts import topics
from devtools.seed import DEMO_API_KEYS, DEMO_USERS
from devtools.stack import Supervisor
from infra.settings import Settings

SCENARIO: Final = "memory"
MB: Final = 1024 * 1024
TICKS: Final = os.sysconf("SC_CLK_TCK")
SERVICE_MODULES: Final = {
    "streams": "streams.worker",
    "dispatcher": "dispatcher.main",
    "console": "console.main",
}
_REBUILT = re.compile(r"rebuilt from PostgreSQL in ([0-9.]+)s: (\{.*\})")


# --------------------------------------------------------------------------------------------
# Reading a process from /proc


@dataclass(frozen=True, slots=True)
class Memory:
    """One process's memory, bytes: resident, proportional (shared pages split among their
    users) and private (its own pages: what it would give back if it exited)."""

    rss: int
    pss: int
    private: int


def _kb_fields(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[name] = int(parts[0]) * 1024
    return out


def memory_of(pid: int) -> Memory | None:
    """None once the process is gone."""
    try:
        status = _kb_fields(Path(f"/proc/{pid}/status"))
        rollup = _kb_fields(Path(f"/proc/{pid}/smaps_rollup"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    private = rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
    return Memory(status.get("VmRSS", 0), rollup.get("Pss", 0), private)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process (all its threads) has used; None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is the state
    return (int(fields[11]) + int(fields[12])) / TICKS


def import_floor(module: str) -> int:
    """Resident bytes of a fresh interpreter that has only imported `module`: what a service
    costs before it holds any data (the libraries it loads)."""
    code = (
        f"import {module}, pathlib; "
        "print(next(l.split()[1] for l in pathlib.Path('/proc/self/status').read_text().splitlines() "
        "if l.startswith('VmRSS')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    return int(out.stdout.strip()) * 1024


# --------------------------------------------------------------------------------------------
# The processes of one stack


@dataclass(slots=True)
class Stack:
    """What `bench_stack` started, by pid, plus the shared servers' handles."""

    supervisor: Supervisor | None = None
    broker: subprocess.Popen[bytes] | None = None

    def on_start(self, supervisor: Supervisor, broker: subprocess.Popen[bytes]) -> None:
        self.supervisor, self.broker = supervisor, broker

    def pids(self) -> dict[str, int]:
        """Our own processes by name: streams-1.., dispatcher, console, tansu."""
        assert self.supervisor is not None and self.broker is not None, "the stack did not start"
        out = {name: proc.pid for name, proc in self.supervisor.procs}
        out["tansu"] = self.broker.pid
        return out


async def postgres_backends(conn: asyncpg.Connection) -> dict[int, str]:
    """The backends connected to this database (pid -> type), the measuring one aside."""
    rows = await conn.fetch(
        """SELECT pid, backend_type FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid()"""
    )
    return {int(r["pid"]): str(r["backend_type"]) for r in rows}


async def redis_info(redis: aioredis.Redis) -> dict[str, Any]:
    info: dict[str, Any] = await redis.info("memory")
    info.update(await redis.info("server"))
    return info


async def redis_db_bytes(redis: aioredis.Redis, chunk: int = 1000) -> tuple[int, dict[str, int]]:
    """(keys, bytes by key prefix): MEMORY USAGE over every key of this database (all nested
    values counted: SAMPLES 0). Redis is shared by several databases; this is our part of it."""
    keys = 0
    by_prefix: dict[str, int] = {}
    batch: list[bytes] = []

    async def flush() -> None:
        pipe = redis.pipeline(transaction=False)
        for key in batch:
            pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
        for key, size in zip(batch, await pipe.execute(), strict=True):
            prefix = key.decode(errors="replace").split(":", 1)[0]
            by_prefix[prefix] = by_prefix.get(prefix, 0) + int(size or 0)
        batch.clear()

    async for key in redis.scan_iter(count=chunk):
        keys += 1
        batch.append(key)
        if len(batch) >= chunk:
            await flush()
    if batch:
        await flush()
    return keys, by_prefix


async def seq_reads(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows read by sequential scans so far, per table of this database."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = await conn.fetch("SELECT relname, seq_tup_read FROM pg_stat_user_tables")
    return {str(r["relname"]): int(r["seq_tup_read"] or 0) for r in rows}


@dataclass(slots=True)
class Snapshot:
    """Memory of every process at one moment."""

    processes: dict[str, Memory] = field(default_factory=dict)
    backends: dict[int, Memory] = field(default_factory=dict)
    redis: dict[str, Any] = field(default_factory=dict)
    redis_keys: int = 0
    redis_db_bytes: dict[str, int] = field(default_factory=dict)  # by key prefix
    database_bytes: int = 0
    table_bytes: dict[str, int] = field(default_factory=dict)  # the largest tables, with indexes


async def snapshot(stack: Stack, conn: asyncpg.Connection, redis: aioredis.Redis) -> Snapshot:
    snap = Snapshot()
    for name, pid in stack.pids().items():
        mem = memory_of(pid)
        if mem is None:
            raise RuntimeError(f"{name} (pid {pid}) is gone")
        snap.processes[name] = mem
    snap.redis = await redis_info(redis)
    redis_mem = memory_of(int(snap.redis["process_id"]))
    if redis_mem is not None:
        snap.processes["redis-server"] = redis_mem
    for pid in await postgres_backends(conn):
        mem = memory_of(pid)
        if mem is not None:
            snap.backends[pid] = mem
    snap.redis_keys, snap.redis_db_bytes = await redis_db_bytes(redis)
    snap.database_bytes = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    rows = await conn.fetch(
        """SELECT relname, pg_total_relation_size(relid) AS bytes FROM pg_statio_user_tables
            ORDER BY bytes DESC LIMIT 4"""
    )
    snap.table_bytes = {str(r["relname"]): int(r["bytes"]) for r in rows}
    return snap


async def cpu_window(
    stack: Stack, conn: asyncpg.Connection, redis_pid: int, seconds: float
) -> tuple[dict[str, float], float, dict[str, int]]:
    """Percent of one core each process used over `seconds`; the backends of our database
    together; rows each table had read by sequential scans meanwhile."""
    pids = {**stack.pids(), "redis-server": redis_pid}
    backends = list(await postgres_backends(conn))
    reads0 = await seq_reads(conn)
    t0 = time.monotonic()
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    pg_before = {pid: cpu_seconds(pid) for pid in backends}
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    percent: dict[str, float] = {}
    for name, pid in pids.items():
        a, b = before[name], cpu_seconds(pid)
        if a is not None and b is not None:
            percent[name] = 100.0 * (b - a) / elapsed
    pg_used = 0.0
    for pid, a in pg_before.items():
        b = cpu_seconds(pid)
        if a is not None and b is not None:
            pg_used += b - a
    await asyncio.sleep(1.5)  # backends report their table statistics within a second or so
    reads1 = await seq_reads(conn)
    scanned = {t: reads1.get(t, 0) - n for t, n in reads0.items() if reads1.get(t, 0) - n > 0}
    return percent, 100.0 * pg_used / elapsed, scanned


# --------------------------------------------------------------------------------------------
# The scenario


@dataclass(slots=True)
class Loaded:
    """What `before_start` did, for the figures."""

    times: bulk.LoadTimes = field(default_factory=bulk.LoadTimes)
    before: dict[str, int] = field(default_factory=dict)  # rows per table before the load (the demo city)
    counts: dict[str, int] = field(default_factory=dict)  # and after it
    demo_positions: int = 0
    redis_used_after_flush: int = 0
    log_offset: int = 0  # where the dispatcher's log stood when its process was started
    loaded_at: float = 0.0  # time.monotonic() when Redis was emptied


def _before_start(
    loaded: Loaded, responders: int, incidents: int, open_incidents: int
) -> Callable[[Settings], None]:
    """bench_stack's hook: the scale loaded into PostgreSQL, then Redis emptied as after a
    restart, so the dispatcher's live keeper rebuilds it from PostgreSQL when it starts."""

    async def load(settings: Settings) -> None:
        conn = await asyncpg.connect(settings.database_url)
        redis = aioredis.Redis.from_url(settings.redis_url)
        try:
            loaded.before = await bulk.table_counts(conn)
            loaded.demo_positions = await bulk.copy_live_positions(conn, redis)
            say(f"loading {responders:,} responders")
            await bulk.load_responders(conn, responders, loaded.times)
            say(f"loading {incidents:,} incidents ({open_incidents} open)")
            await bulk.load_incidents(conn, incidents, open_incidents, loaded.times)
            say("vacuum analyze")
            await bulk.vacuum_analyze(conn, loaded.times)
            loaded.counts = await bulk.table_counts(conn)
            await bulk.forget_live_state(redis)
            loaded.redis_used_after_flush = int((await redis.info("memory"))["used_memory"])
        finally:
            await redis.aclose()
            await conn.close()
        log = Path(settings.state_dir) / "logs" / "dispatcher.log"
        loaded.log_offset = log.stat().st_size if log.exists() else 0
        loaded.loaded_at = time.monotonic()
        for step, seconds in loaded.times.steps.items():
            say(f"  {step:<28}{seconds:8.1f} s")

    def before_start(settings: Settings) -> None:
        asyncio.run(load(settings))

    return before_start


async def wait_rebuilt(settings: Settings, loaded: Loaded, within_s: float) -> tuple[float, dict[str, Any]]:
    """Until the live keeper has rebuilt Redis; (seconds it logged, its counts)."""
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        deadline = time.monotonic() + within_s
        while not await redis.exists(topics.LIVE_EPOCH_KEY):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the live keeper did not rebuild Redis within {within_s:.0f} s")
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()
    waited = time.monotonic() - loaded.loaded_at
    log = Path(settings.state_dir) / "logs" / "dispatcher.log"
    text = log.read_bytes()[loaded.log_offset :].decode("utf-8", "replace")
    found = _REBUILT.findall(text)
    if not found:
        say(f"no rebuild line in {log}; reporting the {waited:.1f} s since Redis was emptied")
        return waited, {}
    seconds, counts = found[-1]
    return float(seconds), dict(ast.literal_eval(counts))  # the log prints the dict's repr


@dataclass(slots=True)
class Load:
    """What the modest load did and checked."""

    reports: int = 0
    reached: int = 0
    positions: int = 0
    positions_copied: int = 0
    history_reads: int = 0
    history_ok: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    """What the load will touch, chosen before it starts (so these queries are not counted)."""

    moved: list[asyncpg.Record]  # responders whose position the batch moves
    history: list[asyncpg.Record]  # stored incidents (and a report of each) to read back


async def plan_load(conn: asyncpg.Connection, positions: int) -> Plan:
    moved = await conn.fetch(
        "SELECT responder_id, lon, lat FROM responder_positions ORDER BY responder_id DESC LIMIT $1",
        positions,
    )
    history = await conn.fetch(  # closed: the bulk load's (whatever ran since is still open)
        """SELECT i.incident_id, r.tracking_no
             FROM incidents i JOIN incident_reports r USING (incident_id)
            WHERE i.status = 'closed' LIMIT 5"""
    )
    return Plan(list(moved), list(history))


async def apply_load(settings: Settings, driver: Driver, reports: int, plan: Plan) -> Load:
    """Reports through the intake (waited for at the console), one position batch, and reads
    of stored incidents and of a report's public progress; then until the live keeper has
    copied the new positions to PostgreSQL."""
    out = Load()
    run = uuid.uuid4().hex[:8]
    rng = random.Random(run)
    sent = []
    for i in range(reports):
        sent.append(await driver.post(*build_report(i, f"MEM-{run}", rng)))
        await asyncio.sleep(0.1)
    ids = {s.incident_id for s in sent if s.incident_id is not None}
    out.reports = len(ids)
    await driver.wait_for(ids, 60)
    out.reached = len(ids & driver.arrivals.keys())

    now = datetime.now(UTC)
    fixes = [
        {
            "responder_id": r["responder_id"],
            "lon": round(r["lon"] + 0.0002, 6),
            "lat": round(r["lat"] + 0.0001, 6),
            "at": now.isoformat(),
            "accuracy_m": 8.0,
        }
        for r in plan.moved
    ]
    async with httpx.AsyncClient(
        base_url=f"http://{settings.http_host}:{settings.http_port}", timeout=30
    ) as http:
        if fixes:
            r = await http.post(
                "/api/v1/intake/positions",
                json={"positions": fixes},
                headers={"X-Api-Key": DEMO_API_KEYS["positions"]},
            )
            if r.status_code != 202:
                raise RuntimeError(f"the position batch answered {r.status_code}: {r.text[:300]}")
            out.positions = len(fixes)
        token = await _login(http)
        for h in plan.history:
            out.history_reads += 2
            a = await http.get(
                f"/api/v1/incidents/{h['incident_id']}", headers={"Authorization": f"Bearer {token}"}
            )
            b = await http.get(f"/api/v1/reports/{h['tracking_no']}")
            out.history_ok += int(a.status_code == 200 and len(a.json().get("timeline", [])) == 6)
            out.history_ok += int(b.status_code == 200 and b.json().get("status") == "closed")
    out.positions_copied = await _wait_copied(settings, [f["responder_id"] for f in fixes], now)
    return out


async def _wait_copied(settings: Settings, ids: list[str], at: datetime) -> int:
    """Until the live keeper has copied these fixes to PostgreSQL (or three of its periods
    went by); how many it copied. Looked up by key: the poll must not show as a scan."""
    at_ms = int(at.timestamp() * 1000)
    deadline = time.monotonic() + 3 * settings.live_snapshot_s + 10
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("SET enable_seqscan = off")  # by key, even for a thousand keys
        copied = 0
        while ids and time.monotonic() < deadline:
            copied = int(
                await conn.fetchval(
                    """SELECT count(*) FROM responder_positions
                        WHERE responder_id = ANY($1::text[]) AND at_ms = $2""",
                    ids,
                    at_ms,
                )
            )
            if copied == len(ids):
                break
            await asyncio.sleep(0.5)
        return copied
    finally:
        await conn.close()


async def _login(http: httpx.AsyncClient) -> str:
    password = next(pw for user, _, _, pw in DEMO_USERS if user == "duty")
    r = await http.post("/api/v1/auth/login", json={"username": "duty", "password": password})
    r.raise_for_status()
    return str(r.json()["token"])


@dataclass(slots=True)
class Measured:
    idle: Snapshot
    loaded: Snapshot
    load: Load
    cpu: dict[str, float]
    pg_cpu: float
    scanned: dict[str, int]  # rows read by sequential scans while idle, per table
    load_scanned: dict[str, int]  # and during the load
    live_responders: int
    busy: int


async def measure_running(
    settings: Settings, stack: Stack, *, reports: int, positions: int, settle_s: float, cpu_window_s: float
) -> Measured:
    conn = await asyncpg.connect(settings.database_url)
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        say(f"settling {settle_s:.0f} s")
        await asyncio.sleep(settle_s)
        idle = await snapshot(stack, conn, redis)
        keys = [k async for k in redis.scan_iter(match=f"{topics.RESPONDER_KEY}*", count=1000)]
        pipe = redis.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "status")
        busy = sum(1 for s in await pipe.execute() if s == b"busy")
        plan = await plan_load(conn, positions)
        say(f"load: a console, {reports} reports, {positions} positions, reads of stored incidents")
        await asyncio.sleep(1.5)  # our own queries' statistics reported before the baseline
        reads0 = await seq_reads(conn)
        async with Driver(settings) as driver:
            load = await apply_load(settings, driver, reports, plan)
            await asyncio.sleep(1.5)  # backends report their table statistics within a second or so
            reads1 = await seq_reads(conn)
            load_scanned = {t: reads1.get(t, 0) - n for t, n in reads0.items() if reads1.get(t, 0) > n}
            loaded = await snapshot(stack, conn, redis)
            say(f"idle CPU over {cpu_window_s:.0f} s (the console still connected)")
            cpu, pg_cpu, scanned = await cpu_window(stack, conn, int(idle.redis["process_id"]), cpu_window_s)
        return Measured(idle, loaded, load, cpu, pg_cpu, scanned, load_scanned, len(keys), busy)
    finally:
        await redis.aclose()
        await conn.close()


def _mb(n: float) -> float:
    return n / MB


def figures_of(
    responders: int,
    incidents: int,
    loaded: Loaded,
    rebuild_s: float,
    rebuild_counts: dict[str, Any],
    m: Measured,
    floors: dict[str, int],
) -> list[Figure]:
    f: list[Figure] = []
    steps = loaded.times.steps
    resp_s = sum(v for k, v in steps.items() if k.startswith("responders"))
    inc_s = sum(v for k, v in steps.items() if k.startswith("incidents"))
    f.append(
        Figure.of_value(
            SCENARIO, "load responders (SQL)", resp_s, "s", n=responders, note="registry, logins, positions"
        )
    )
    detail = ", ".join(f"{k.split(': ')[1]} {v:.0f} s" for k, v in steps.items() if k.startswith("incidents"))
    f.append(Figure.of_value(SCENARIO, "load incidents (SQL)", inc_s, "s", n=incidents, note=detail))
    f.append(Figure.of_value(SCENARIO, "vacuum analyze", steps.get("vacuum analyze", 0.0), "s"))
    for table, wanted in (("responders", responders), ("incidents", incidents)):
        added = loaded.counts.get(table, 0) - loaded.before.get(table, 0)
        name = "registry responders (PG)" if table == "responders" else "stored incidents (PG)"
        f.append(
            Figure.of_value(
                SCENARIO,
                name,
                loaded.counts.get(table, 0),
                "rows",
                goal=f"+{wanted:,} loaded",
                met=added == wanted,
                note=", ".join(f"{t} {n:,}" for t, n in loaded.counts.items())
                if table == "incidents"
                else "",
            )
        )
    total = int(loaded.counts.get("responders", 0))
    rebuilt = int(rebuild_counts.get("responders", 0))
    f.append(
        Figure.of_value(
            SCENARIO,
            "live state rebuilt from PG",
            rebuild_s,
            "s",
            n=rebuilt,
            goal=f"all {total:,} responders",
            met=m.live_responders == total,
            note=f"dispatcher's live keeper: {rebuild_counts}; {m.live_responders:,} responder hashes "
            f"in Redis, {m.busy} busy (open incidents' active tasks)",
        )
    )
    for name, mem in m.loaded.processes.items():
        before = m.idle.processes.get(name)
        base = name.split("-")[0]
        floor = floors.get(base)
        note = f"PSS {_mb(mem.pss):.0f} MB, private {_mb(mem.private):.0f} MB"
        if before is not None:
            note += f"; idle before the load {_mb(before.rss):.0f} MB"
        if floor:
            note += f"; imports alone {_mb(floor):.0f} MB"
        if name == "redis-server":
            note += " (the whole server, shared with other databases)"
        f.append(Figure.of_value(SCENARIO, f"RSS {name}", _mb(mem.rss), "MB", note=note))
    backends = m.loaded.backends
    f.append(
        Figure.of_value(
            SCENARIO,
            "PSS postgres backends (our db)",
            _mb(sum(b.pss for b in backends.values())),
            "MB",
            n=len(backends),
            note=f"private {_mb(sum(b.private for b in backends.values())):.0f} MB; "
            f"RSS {_mb(sum(b.rss for b in backends.values())):.0f} MB counts shared_buffers once per backend",
        )
    )
    f.append(
        Figure.of_value(
            SCENARIO,
            "postgres database size",
            _mb(m.loaded.database_bytes),
            "MB",
            note=", ".join(f"{t} {_mb(b):,.0f}" for t, b in m.loaded.table_bytes.items())
            + f" MB (with indexes and TOAST); {_mb(m.idle.database_bytes):,.0f} MB before the load",
        )
    )
    info = m.loaded.redis
    f.append(
        Figure.of_value(
            SCENARIO,
            "redis our db (MEMORY USAGE)",
            _mb(sum(m.loaded.redis_db_bytes.values())),
            "MB",
            n=m.loaded.redis_keys,
            note=", ".join(
                f"{p}:* {_mb(b):.1f}"
                for p, b in sorted(m.loaded.redis_db_bytes.items(), key=lambda kv: -kv[1])[:3]
            )
            + f" MB; used_memory grew {_mb(int(info['used_memory']) - loaded.redis_used_after_flush):.0f} MB "
            f"since our db was emptied (other databases move it too)",
        )
    )
    f.append(
        Figure.of_value(
            SCENARIO,
            "redis used_memory (server)",
            _mb(int(info["used_memory"])),
            "MB",
            note=f"used_memory_rss {_mb(int(info['used_memory_rss'])):.0f} MB",
        )
    )
    for name, pct in m.cpu.items():
        shared = " (the whole server)" if name == "redis-server" else ""
        f.append(Figure.of_value(SCENARIO, f"idle CPU {name}", pct, "%", note=f"of one core{shared}"))
    f.append(
        Figure.of_value(
            SCENARIO,
            "idle CPU postgres backends",
            m.pg_cpu,
            "%",
            n=len(m.loaded.backends),
            note="of one core, our database's backends together",
        )
    )
    for name, scanned in (("idle", m.scanned), ("load", m.load_scanned)):
        f.append(
            Figure.of_value(
                SCENARIO,
                f"{name}: rows seq-scanned (PG)",
                sum(scanned.values()),
                "rows",
                note=", ".join(f"{t} {n:,}" for t, n in sorted(scanned.items(), key=lambda kv: -kv[1]))
                or "no sequential scans",
            )
        )
    ld = m.load
    for name, got, of, note in (
        ("load: reports on the console", ld.reached, ld.reports, ""),
        (
            "load: positions copied to PG",
            ld.positions_copied,
            ld.positions,
            "posted in one batch, applied by the streams worker, copied by the live keeper",
        ),
        (
            "load: stored incidents read",
            ld.history_ok,
            ld.history_reads,
            "GET /api/v1/incidents/{id} (6-step timeline) and /api/v1/reports/{no}",
        ),
    ):
        f.append(Figure.of_value(SCENARIO, name, got, "", n=of, goal="all", met=got == of, note=note))
    return f


def measure_memory(
    responders: int = 100_000,
    incidents: int = 1_000_000,
    *,
    open_incidents: int = 300,
    reports: int = 30,
    positions: int = 1000,
    settle_s: float = 15.0,
    cpu_window_s: float = 20.0,
    overrides: dict[str, Any] | None = None,
    floors: bool = True,
) -> list[Figure]:
    """Start a stack at this scale, measure every process (see the module's docstring). The
    stack's stores are bench_stack's (BENCH_DATABASE_URL, BENCH_REDIS_URL)."""
    if responders < 0 or incidents < 0 or not 0 <= open_incidents <= incidents:
        raise ValueError("responders and incidents must not be negative, open_incidents within incidents")
    state_dir = Path(Settings().state_dir) / "bench" / f"memory-{os.getpid()}"
    settings_overrides: dict[str, Any] = {"state_dir": str(state_dir), **(overrides or {})}
    loaded = Loaded()
    stack = Stack()
    import_floors = {name: import_floor(module) for name, module in SERVICE_MODULES.items()} if floors else {}
    with bench_stack(
        before_start=_before_start(loaded, responders, incidents, open_incidents),
        on_start=stack.on_start,
        overrides=settings_overrides,
    ) as settings:
        rebuild_s, rebuild_counts = asyncio.run(wait_rebuilt(settings, loaded, 900))
        say(f"live state rebuilt in {rebuild_s:.1f} s: {rebuild_counts}")
        measured = asyncio.run(
            measure_running(
                settings,
                stack,
                reports=reports,
                positions=positions,
                settle_s=settle_s,
                cpu_window_s=cpu_window_s,
            )
        )
    shutil.rmtree(state_dir, ignore_errors=True)
    return figures_of(responders, incidents, loaded, rebuild_s, rebuild_counts, measured, import_floors)


# --------------------------------------------------------------------------------------------
# Command line


def format_report(figures: Sequence[Figure], command: str, started: datetime) -> str:
    return "\n".join(
        [
            f"memory at scale — {started:%Y-%m-%d %H:%M} UTC, nproc={os.cpu_count()}, "
            f"{platform.python_implementation()} {platform.python_version()}",
            f"command: {command}",
            "",
            format_figures(figures, None),
        ]
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--responders", type=int, default=100_000, help="responders added (default 100k)")
    parser.add_argument("--incidents", type=int, default=1_000_000, help="stored incidents (default 1M)")
    parser.add_argument("--open", type=int, default=300, help="of which still open (default 300)")
    parser.add_argument("--reports", type=int, default=30, help="reports posted as the load (default 30)")
    parser.add_argument("--positions", type=int, default=1000, help="positions in the batch (default 1,000)")
    parser.add_argument("--cpu-window", type=float, default=20.0, help="seconds of idle CPU sampling")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # devtools.stack reports on stdout
            figures = measure_memory(
                args.responders,
                args.incidents,
                open_incidents=args.open,
                reports=args.reports,
                positions=args.positions,
                cpu_window_s=args.cpu_window,
            )
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    command = " ".join(["python -m bench.memory", *argv])
    if args.json:
        print(orjson.dumps({"command": command, "figures": [x.as_json() for x in figures]}).decode())
    else:
        print(format_report(figures, command, started))
    return 0 if all(x.met is not False for x in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
