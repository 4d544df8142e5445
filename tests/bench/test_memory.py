"""The memory scenario, run tiny on a real stack so it keeps working (and its loads land)."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime

import pytest

from bench.figures import Figure
from bench.memory import format_report, measure_memory

RESPONDERS = 2_000
INCIDENTS = 20_000


async def test_the_memory_scenario_measures_every_process_after_loading_the_scale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "BENCH_REDIS_URL", os.environ.get("TEST_BENCH_MEMORY_REDIS_URL", "redis://127.0.0.1:6379/10")
    )
    # In a thread: the scenario runs its own event loops (asyncio.run), as its command does.
    figures = await asyncio.to_thread(
        measure_memory,
        RESPONDERS,
        INCIDENTS,
        open_incidents=30,
        reports=3,
        positions=100,
        settle_s=1.0,
        cpu_window_s=2.0,
        overrides={"live_snapshot_s": 1.0},
        floors=False,
    )
    by_name: dict[str, Figure] = {f.name: f for f in figures}
    assert all(f.scenario == "memory" for f in figures)
    for process in ("streams-1", "dispatcher", "console", "tansu", "redis-server"):
        rss = by_name[f"RSS {process}"]
        assert rss.value is not None and rss.value > 0 and rss.unit == "MB", rss
        assert f"idle CPU {process}" in by_name
    backends = by_name["PSS postgres backends (our db)"]
    assert backends.n >= 3 and backends.value is not None and backends.value > 0  # one pool per service
    assert (by_name["postgres database size"].value or 0) > 0
    assert (by_name["redis our db (MEMORY USAGE)"].value or 0) > 0

    # The loads landed: counted in PostgreSQL after the load, and every responder rebuilt in Redis.
    assert by_name["stored incidents (PG)"].met, by_name["stored incidents (PG)"]
    assert by_name["registry responders (PG)"].met, by_name["registry responders (PG)"]
    rebuilt = by_name["live state rebuilt from PG"]
    assert rebuilt.met and rebuilt.n >= RESPONDERS and (rebuilt.value or 0) > 0, rebuilt
    for check in (
        "load: reports on the console",
        "load: positions copied to PG",
        "load: stored incidents read",
    ):
        assert by_name[check].met, by_name[check]

    table = format_report(
        figures, "python -m bench.memory --responders 2000 --incidents 20000", datetime.now(UTC)
    )
    assert "RSS dispatcher" in table and "live state rebuilt from PG" in table
