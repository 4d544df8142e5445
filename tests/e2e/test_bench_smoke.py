"""The latency benchmark's measuring core, run small against the e2e stack."""

from __future__ import annotations

import json

import pytest

from bench.latency import ROW_BROKER, ROW_CONSOLE, ROW_HTTP, Meta, format_report, measure, to_json
from infra.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.random_places]


async def test_the_benchmark_measures_every_row(stack: Settings) -> None:
    results = await measure(stack, reports=9, rate=30, broker_messages=20)

    assert (results.accepted, results.failed, results.missing) == (9, 0, 0)
    assert [r.name for r in results.rows] == [ROW_BROKER, ROW_HTTP, ROW_CONSOLE]
    assert [r.n for r in results.rows] == [20, 9, 9]
    for row in [*results.rows, *results.stages]:
        assert row.n > 0, row
        assert row.p50_ms is not None and row.p99_ms is not None and row.max_ms is not None, row
        assert 0 < row.p50_ms <= row.p99_ms <= row.max_ms, row
    assert results.console.p50_ms is not None and results.broker.p50_ms is not None
    assert results.console.p50_ms > results.broker.p50_ms
    assert results.ratio is not None and results.ratio > 1

    meta = Meta.now(
        ["--reports", "9"],
        workers=1,
        partitions=stack.topic_partitions,
        fetch_max_wait_ms=stack.fetch_max_wait_ms,
    )
    table = format_report(meta, results)
    for name in (ROW_BROKER, ROW_HTTP, ROW_CONSOLE, "nproc=", "command:", "target:"):
        assert name in table, table
    figures = json.loads(json.dumps(to_json(meta, results)))
    assert [r["name"] for r in figures["rows"]] == [ROW_BROKER, ROW_HTTP, ROW_CONSOLE]
    assert isinstance(figures["target"]["met"], bool)
