"""The city benchmark's figures (`bench.figures`): the percentile every latency is reported by,
latency and value figures with their goals, and the one table they print as.
"""

from __future__ import annotations

import json
import random
import re
import statistics

import pytest

from bench.figures import Figure, format_figures, percentile

# --- percentile ---------------------------------------------------------------------------


def test_percentile_of_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_percentile_interpolates_linearly_between_ranks() -> None:
    assert percentile([7.0], 0) == percentile([7.0], 50) == percentile([7.0], 100) == 7.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 50) == pytest.approx(25.0)
    assert percentile([10.0, 20.0, 30.0, 40.0], 0) == 10.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 100) == 40.0
    hundred = [float(v) for v in range(1, 101)]
    assert percentile(hundred, 99) == pytest.approx(99.01)
    assert percentile(hundred, 50) == pytest.approx(50.5)


def test_percentile_agrees_with_the_standard_librarys_inclusive_quantiles() -> None:
    rng = random.Random(42)
    for size in (2, 3, 10, 101, 1000):
        ordered = sorted(rng.expovariate(1 / 20) for _ in range(size))
        cuts = statistics.quantiles(ordered, n=100, method="inclusive")
        for q in range(1, 100):
            assert percentile(ordered, q) == pytest.approx(cuts[q - 1], rel=1e-9, abs=1e-12), (size, q)


def test_percentile_grows_with_q_and_stays_within_the_samples() -> None:
    rng = random.Random(7)
    ordered = sorted(rng.uniform(0, 500) for _ in range(257))
    values = [percentile(ordered, q / 4) for q in range(401)]
    assert values == sorted(values)
    assert values[0] == ordered[0] and values[-1] == ordered[-1]


# --- Figure ---------------------------------------------------------------------------------


def test_a_latency_figure_is_in_milliseconds_from_samples_in_seconds() -> None:
    seconds = [0.001 * v for v in range(1, 101)]  # 1 .. 100 ms
    f = Figure.latency("steady", "report → console", list(reversed(seconds)))
    assert f.n == 100
    assert f.p50_ms == pytest.approx(50.5)
    assert f.p99_ms == pytest.approx(99.01)
    assert f.max_ms == pytest.approx(100.0)
    assert f.value is None and f.met is None  # no goal: informational


def test_a_latency_goal_is_met_only_when_every_bound_holds() -> None:
    samples = [0.010] * 98 + [0.200, 0.300]  # p50 10 ms, p99 201 ms
    p99 = Figure.latency("s", "x", samples).p99_ms
    assert p99 == pytest.approx(201.0)

    def met(p50_goal: float | None, p99_goal: float | None) -> bool | None:
        return Figure.latency("s", "x", samples, p50_goal_ms=p50_goal, p99_goal_ms=p99_goal).met

    assert met(None, None) is None
    assert met(10.0, None) is True  # on the bound counts as met
    assert met(9.9, None) is False
    assert met(None, 250.0) is True
    assert met(None, 150.0) is False
    assert met(10.0, 250.0) is True
    assert met(10.0, 150.0) is False
    assert met(5.0, 250.0) is False


def test_a_latency_with_no_samples_misses_its_goal_and_says_so() -> None:
    with_goal = Figure.latency("steady", "dispatch", [], goal="p99 ≤ 1 s", p99_goal_ms=1000)
    assert (with_goal.n, with_goal.p50_ms, with_goal.met, with_goal.note) == (0, None, False, "no samples")
    without = Figure.latency("steady", "dispatch", [])
    assert without.met is None and without.note == "no samples"
    assert Figure.latency("s", "x", [], note="phones never connected").note == "phones never connected"


def test_as_json_rounds_floats_and_keeps_everything_else() -> None:
    f = Figure.latency("steady", "x", [0.0123456, 0.0234567], goal="g", p99_goal_ms=100, note="n")
    got = f.as_json()
    assert json.loads(json.dumps(got)) == got
    assert got["p50_ms"] == round(f.p50_ms or 0, 3) and got["max_ms"] == 23.457
    assert (got["n"], got["met"], got["goal"], got["note"], got["value"]) == (2, True, "g", "n", None)
    value = Figure.of_value("memory", "RSS", 12.34567, "MiB", n=3).as_json()
    assert (value["value"], value["unit"], value["n"], value["p99_ms"]) == (12.346, "MiB", 3, None)


# --- the table ------------------------------------------------------------------------------


def row(table: str, name: str) -> str:
    [line] = [line for line in table.splitlines() if f" {name} " in line]
    return line


def test_the_table_shows_latencies_beside_the_broker_and_values_with_their_units() -> None:
    figures = [
        Figure.latency("steady", "report→console", [0.010, 0.020, 0.030], goal="p99≤150ms", p99_goal_ms=150),
        Figure.latency("steady", "slow→phone", [1.0, 2.0], goal="p99≤500ms", p99_goal_ms=500),
        Figure.of_value("memory", "RSS-console", 123_456.7, "MiB"),
        Figure.of_value("fanout", "per-phone", 42.25, "KiB", goal="≤64KiB", met=True, n=40),
        Figure.of_value("throughput", "absorbed", 0.0, "", note="nothing absorbed"),
    ]
    table = format_figures(figures, broker_p50_ms=2.0)
    lines = table.splitlines()
    assert lines[0].split() == "scenario figure n p50 ms p99 ms max ms p99÷brk value goal verdict".split()
    assert set(lines[1]) == {"-"} and len(lines[1]) == len(lines[0])

    # p99 over the broker's p50: 29.8 ms / 2 ms
    fast = row(table, "report→console")
    assert re.search(r"^steady\s+report→console\s+3\s+20\.0\s+29\.8\s+30\.0\s+14\.9×\s+p99≤150ms\s+MET", fast)
    slow = row(table, "slow→phone")
    assert re.search(r"\s2\s+1500\.0\s+1990\.0\s+2000\.0\s+995\.0×\s+p99≤500ms\s+NOT MET", slow)
    # values: a unit, thousands separated from 10,000 up, no latency columns, no n when 0
    rss = row(table, "RSS-console")
    assert re.search(r"^memory\s+RSS-console\s+-\s+-\s+-\s+-\s+123,457 MiB\s*$", rss)
    assert re.search(r"per-phone\s+40\s+-\s+-\s+-\s+-\s+42\.2 KiB\s+≤64KiB\s+MET", row(table, "per-phone"))
    assert re.search(r"absorbed\s+-\s+-\s+-\s+-\s+0\.0\s*$", row(table, "absorbed"))

    # the notes follow the table
    assert lines[-2:] == ["", "- throughput / absorbed: nothing absorbed"]

    # every row's columns line up under the header's
    end = lines[0].index("p99÷brk") + len("p99÷brk")
    for line in lines[2:7]:
        assert line[end - 1] != " " and line[end] == " ", line


def test_without_a_broker_figure_there_is_no_ratio() -> None:
    figures = [Figure.latency("steady", "report→console", [0.01, 0.02])]
    for broker in (None, 0.0):
        line = row(format_figures(figures, broker), "report→console")
        assert "×" not in line
        assert re.search(r"15\.0\s+19\.9\s+20\.0\s+-(\s|$)", line), line


def test_long_names_widen_their_columns_and_no_notes_means_no_notes_section() -> None:
    long_name = "report → every one of the hundred consoles"
    figures = [
        Figure.latency("a-long-scenario-name", long_name, [0.01]),
        Figure.latency("x", "y", [0.01]),
    ]
    lines = format_figures(figures, 1.0).splitlines()
    assert len(lines) == 4  # header, rule, two rows: no notes
    assert lines[2].startswith(f"a-long-scenario-name  {long_name}  ")
    head_end = lines[0].index("p50 ms") + len("p50 ms")
    assert all(line[head_end - len("10.0") : head_end] == "10.0" for line in lines[2:])
    empty = format_figures([], None).splitlines()
    assert len(empty) == 2 and "scenario" in empty[0]
