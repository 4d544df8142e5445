"""The steady scenario: reports, positions and dispatches at a steady rate with consoles watching
(bench.city's docstring says how much); every report on every console.
"""

from __future__ import annotations

import asyncio
import uuid

from bench import load
from bench.drive import (
    OPERATOR,
    ConsoleProbe,
    Population,
    join_all,
    missing_from,
    phone_sessions,
    posts_of,
    rate_of,
    report_latencies,
    split_consoles,
    start_posters,
    stop_all,
    wait_arrivals,
)
from bench.figures import Figure
from bench.harness import CpuWatch, Proc, Size, say
from bench.load import ConsoleLog, Target
from infra.settings import Settings


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
    consoles = await split_consoles(settings, target, size.consoles)
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
    posters = start_posters(target, size.steady_rate, size.steady_s, start_ns, run, 1)
    for d in [dispatcher, positions, *posters]:
        await asyncio.to_thread(d.wait_ready, 60)
    cpu = CpuWatch(procs)
    await load.sleep_until(start_ns)
    cpu.start()
    say(
        f"steady: {size.steady_rate:g} reports/s, {len(pop.responders)} responders every "
        f"{size.position_period_s:g} s, {size.consoles} consoles, {size.steady_s:g} s"
    )
    posts = posts_of(await join_all(posters, size.steady_s + 120))
    pos = (await join_all([positions], size.steady_s + 120))[0]
    cpu.stop()
    disp = (await join_all([dispatcher], 120))[0]
    await wait_arrivals({p.incident_id for p in posts if p.incident_id}, 15.0, probe)
    await asyncio.sleep(1.0)
    logs: list[ConsoleLog] = [log for r in await stop_all(consoles) for log in r]

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
        Figure.of_value(s, "reports sent", rate_of(posts), "/s", n=len(posts)),
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


