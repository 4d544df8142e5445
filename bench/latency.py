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
import json
import os
import platform
import random
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Final

from bench.figures import percentile
from bench.harness import Arrival, Driver, Sent, bench_stack, measure_broker, say
from bench.reports import build_report
from infra.settings import Settings

TARGET_P50_MS: Final = 100.0


ROW_BROKER: Final = "raw broker produce→consume"
ROW_HTTP: Final = "intake HTTP 202"
ROW_CONSOLE: Final = "intake → console"


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


# --------------------------------------------------------------------------------------------
# The driver: one HTTP client and one operator console


# --------------------------------------------------------------------------------------------
# The measurements


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
