"""Nearest-responder lookups at city scale, beside a brute-force scan: `python -m bench.nearest`.

    python -m bench.nearest [--sizes 1000,10000,100000] [--queries 500] [--json]

For each size, the live state of a private Redis database (`--redis-url`, default db 12, emptied
before and after) is filled the way the pipeline fills it (`LiveState.apply_roster` and
`apply_position`, the same Lua scripts), with volunteers spread over the demo city's extent.
Then the same random incident locations are answered twice:

* *GEOSEARCH*: `LiveState.nearest` (what enrichment and recommendations call), one query at a
  time, as a consumer does;
* *brute-force scan*: the haversine distance to every available responder, in this process,
  over positions read once beforehand (the cheapest a scan can be: no I/O at all).

Every answer is checked against the scan (same responders in the same order), so the table
only shows fast lookups that are also right. The goal (issue 6) is p99 <= 1 ms at 100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from contracts.geo import haversine_m
from infra.livestate import LiveState, Nearby

KIND = "volunteer"
COUNT = 5
RADIUS_M = 20_000.0
GOAL_P99_MS = 1.0
# The demo city's extent (infra/city.py): responders and incidents fall inside it.
LON = (106.500, 106.575)
LAT = (29.600, 29.655)


@dataclass(frozen=True)
class Row:
    size: int
    method: str
    queries: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def row(size: int, method: str, seconds: Sequence[float]) -> Row:
    ms = [s * 1000 for s in seconds]
    return Row(size, method, len(ms), percentile(ms, 0.5), percentile(ms, 0.99), max(ms))


async def fill(live: LiveState, size: int, rng: random.Random, workers: int = 16) -> None:
    """`size` available volunteers at random places, through the pipeline's own scripts."""
    at_ms = int(time.time() * 1000)
    todo = iter(range(size))

    async def worker() -> None:
        for i in todo:
            rid = f"BV-{i:06d}"
            await live.apply_roster(
                rid,
                {"name": rid, "kind": KIND, "org": "基准", "skills": [], "on_duty": True, "grid_id": None},
            )
            await live.apply_position(rid, rng.uniform(*LON), rng.uniform(*LAT), at_ms, None)

    await asyncio.gather(*(worker() for _ in range(workers)))


def scan(positions: dict[str, tuple[float, float]], lon: float, lat: float) -> list[str]:
    near = sorted(
        (d, rid) for rid, (x, y) in positions.items() if (d := haversine_m(lon, lat, x, y)) <= RADIUS_M
    )
    return [rid for _, rid in near[:COUNT]]


async def measure(redis: Redis, sizes: Sequence[int], queries: int, seed: int = 2026) -> list[Row]:
    rows: list[Row] = []
    for size in sizes:
        await redis.flushdb()
        rng = random.Random(seed + size)
        live = LiveState(redis)
        await fill(live, size, rng)
        positions = await live.available_positions(KIND)
        assert len(positions) == size, (len(positions), size)
        places = [(rng.uniform(*LON), rng.uniform(*LAT)) for _ in range(queries)]
        geo, brute, wrong = [], [], 0
        for lon, lat in places:
            t0 = time.perf_counter()
            got = await live.nearest(KIND, lon, lat, RADIUS_M, COUNT)
            geo.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            want = scan(positions, lon, lat)
            brute.append(time.perf_counter() - t0)
            # Ties in distance may come back in either order; the set and distances must agree.
            if {n.responder_id for n in got} != set(want) and not _same_distances(
                got, want, positions, lon, lat
            ):
                wrong += 1
        if wrong:
            raise AssertionError(f"{wrong} of {queries} GEOSEARCH answers differ from the scan at {size}")
        rows += [row(size, "GEOSEARCH (Redis)", geo), row(size, "brute-force scan", brute)]
    await redis.flushdb()
    return rows


def _same_distances(
    got: Sequence[Nearby], want: list[str], positions: dict[str, tuple[float, float]], lon: float, lat: float
) -> bool:
    """Responders at equal distance may be listed in either order: compare the distances."""
    dist = [n.distance_m for n in got]
    ref = [haversine_m(lon, lat, *positions[r]) for r in want]
    return len(dist) == len(ref) and all(abs(a - b) <= 1 for a, b in zip(dist, ref, strict=True))


def format_table(rows: Sequence[Row], command: str) -> str:
    lines = [
        f"nearest responders — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{platform.python_implementation()} {platform.python_version()}",
        f"command: {command}",
        f"{'responders':>10}  {'method':<20}{'queries':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}",
    ]
    for r in rows:
        lines.append(
            f"{r.size:>10}  {r.method:<20}{r.queries:>8}{r.p50_ms:>9.3f}{r.p99_ms:>9.3f}{r.max_ms:>9.3f}"
        )
    biggest = max(r.size for r in rows)
    geo = next(r for r in rows if r.size == biggest and r.method.startswith("GEOSEARCH"))
    met = "met" if geo.p99_ms <= GOAL_P99_MS else "NOT met"
    lines.append(f"goal: GEOSEARCH p99 <= {GOAL_P99_MS} ms at {biggest}: {met} ({geo.p99_ms:.3f} ms)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.nearest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", default="1000,10000,100000", help="responder counts (comma-separated)")
    parser.add_argument("--queries", type=int, default=500, help="lookups per size (default 500)")
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/12", help="a database to empty and use"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    async def run() -> list[Row]:
        redis = Redis.from_url(args.redis_url)
        try:
            return await measure(redis, sizes, args.queries)
        finally:
            await redis.aclose()

    rows = asyncio.run(run())
    command = " ".join(["python -m bench.nearest", *(argv if argv is not None else sys.argv[1:])])
    if args.json:
        print(json.dumps({"command": command, "rows": [asdict(r) for r in rows]}))
    else:
        print(format_table(rows, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
