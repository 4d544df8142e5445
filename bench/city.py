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
import contextlib
import json
import os
import platform
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
import redis.asyncio as aioredis

from bench.drive import populate
from bench.fanout import fanout
from bench.figures import Figure, format_figures
from bench.harness import Size, bench_stack, measure_broker, say, stack_processes
from bench.load import Target
from bench.steady import steady
from bench.throughput import throughput
from devtools.seed import DEMO_API_KEYS
from infra.settings import Settings

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


# --------------------------------------------------------------------------------------------
# The population: 10,000 responders, their phones' sessions


# --------------------------------------------------------------------------------------------
# Latencies from what the drivers saw


# --------------------------------------------------------------------------------------------
# Scenarios


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
