"""The city-scale benchmark, run tiny on the real stack so it keeps working.

It starts its own stack (Tansu, a database, a Redis database), drives it from driver processes
and must come back with every figure measured: reports, positions and dispatches timed at the
consoles and phones, fan-out across several consoles, throughput steps absorbed.
"""

from __future__ import annotations

import os

import pytest

from bench.city import QUICK, format_report, main, meta, resized, run
from bench.figures import Figure


@pytest.fixture
def bench_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_REDIS_URL", os.environ.get("TEST_CITY_REDIS_URL", "redis://127.0.0.1:6379/7"))


def by_name(figures: list[Figure]) -> dict[tuple[str, str], Figure]:
    return {(f.scenario, f.name): f for f in figures}


def test_the_city_benchmark_measures_every_scenario_through_the_public_contracts(bench_redis: None) -> None:
    broker_p50, figures = run(QUICK, ["steady", "fanout", "throughput"], workers=1, partitions=2)
    got = by_name(figures)
    assert broker_p50 is not None and broker_p50 > 0

    # steady: every report reached both consoles, positions and an offer were timed
    report = got[("steady", "report → console (each console)")]
    assert report.n == QUICK.consoles * QUICK.steady_rate * QUICK.steady_s
    assert got[("steady", "report×console never shown")].value == 0
    assert got[("steady", "position → console (each console)")].n > 0
    assert got[("steady", "timed fixes shown")].value == 100.0
    assert got[("steady", "dispatch command → phone")].n >= 1
    assert any(f.name.startswith("CPU streams worker") for f in figures if f.scenario == "steady")

    # fan-out: every report reached every console; memory per connection is reported
    fan = got[("fanout", f"report → all {QUICK.fanout_consoles} consoles")]
    assert fan.n == QUICK.fanout_rate * QUICK.fanout_s
    assert got[("fanout", "phones connected")].value == QUICK.fanout_phones
    assert ("fanout", "memory per phone connection") in got

    # throughput: tiny steps are absorbed, the hold loses nothing
    for rate in QUICK.steps:
        step = got[("throughput", f"step {rate:g}/s")]
        assert step.note == "" and step.n == rate * QUICK.step_s
    held = got[("throughput", f"held {QUICK.hold_s:g} s")]
    assert (
        held.n == max(QUICK.steps) * QUICK.hold_s
        and "0 not on the console" in held.note
        and "0 refused" in held.note
    )

    # nothing was lost, so the intake's reconciler sent nothing again
    again = [f for f in figures if f.name.startswith("reports sent again after")]
    assert len(again) == 1 and again[0].n > 0 and again[0].value == 0, again

    table = format_report(meta(["--quick"]), broker_p50, figures, 1, 2)
    assert "raw produce→consume" in table and "p99÷brk" in table and "goals:" in table


def test_a_scenario_can_be_taken_apart_by_changing_its_sizes() -> None:
    size = resized(QUICK, ["steady_rate=5", "steps=10,20,40", "consoles=3"])
    assert (size.steady_rate, size.steps, size.consoles) == (5.0, (10.0, 20.0, 40.0), 3)
    assert size.responders == QUICK.responders  # the rest unchanged
    for bad in ("steady_rate", "nonsense=1", "consoles=many", "steps=1,x"):
        with pytest.raises(ValueError, match="--set"):
            resized(QUICK, [bad])


def test_a_negative_fetch_wait_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--fetch-wait", "-5"])
    assert exit_.value.code == 2
    assert "--fetch-wait -5: expected 0 or more milliseconds" in capsys.readouterr().err
