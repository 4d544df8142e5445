"""The throughput scenario: report rates stepped up until one is not absorbed, the highest held
for 60 s with the backlog sampled every second; every accepted report must reach the console.
"""

from __future__ import annotations

import asyncio
import bisect
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from bench import load
from bench.drive import (
    ConsoleProbe,
    join_all,
    posts_of,
    rate_of,
    report_latencies,
    start_posters,
    wait_arrivals,
)
from bench.figures import Figure
from bench.harness import CpuWatch, Proc, Size, say
from bench.load import ConsoleLog, Post, Target
from infra.settings import Settings


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
        posters = start_posters(target, rate, duration_s, start_ns, uuid.uuid4().hex[:6], parts)
        for d in posters:
            await asyncio.to_thread(d.wait_ready, 120)
        posts = posts_of(await join_all(posters, duration_s + 300))
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
        sent_rate = rate_of(posts)
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
    held = rate_of(accepted)
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
