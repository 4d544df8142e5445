"""The fan-out scenario: thousands of phones and a hundred consoles connected; a report's incident
must reach every console, and the console server's memory per connection is read.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from bench import load
from bench.drive import (
    ConsoleProbe,
    Population,
    every_console_latencies,
    join_all,
    phone_sessions,
    posts_of,
    split_consoles,
    start_posters,
    stop_all,
    wait_arrivals,
)
from bench.figures import Figure
from bench.harness import CpuWatch, Proc, Size, say
from bench.load import Target
from infra.settings import Settings


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
    consoles = await split_consoles(settings, target, size.fanout_consoles)
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
    posters = start_posters(target, size.fanout_rate, size.fanout_s, start_ns, uuid.uuid4().hex[:6], 1)
    await asyncio.to_thread(posters[0].wait_ready, 60)
    await load.sleep_until(start_ns)
    cpu.start()
    posts = posts_of(await join_all(posters, size.fanout_s + 120))
    cpu.stop()
    await wait_arrivals({p.incident_id for p in posts if p.incident_id}, 15.0, probe)
    await asyncio.sleep(1.0)
    logs = [log for r in await stop_all(consoles) for log in r]
    held = await stop_all(phone_drivers)
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
