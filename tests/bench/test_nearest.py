"""The nearest-responder benchmark, run tiny against the real Redis so it keeps working."""

from __future__ import annotations

import os

from redis.asyncio import Redis

from bench.nearest import format_table, measure


async def test_the_nearest_benchmark_measures_both_methods_and_checks_answers() -> None:
    redis = Redis.from_url(os.environ.get("TEST_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"))
    try:
        rows = await measure(redis, sizes=[50, 400], queries=30)
    finally:
        await redis.aclose()
    assert [(r.size, r.method) for r in rows] == [
        (50, "GEOSEARCH (Redis)"),
        (50, "brute-force scan"),
        (400, "GEOSEARCH (Redis)"),
        (400, "brute-force scan"),
    ]
    for r in rows:
        assert r.queries == 30 and 0 < r.p50_ms <= r.p99_ms <= r.max_ms
    table = format_table(rows, "python -m bench.nearest --sizes 50,400 --queries 30")
    assert "goal: GEOSEARCH p99 <= 1.0 ms at 400" in table and "brute-force scan" in table
