"""The latency benchmark's output (`bench.latency`), on hand-made results: its rows (`Stat`), the
verdict against the 100 ms p50 target, the table, the report around it and the JSON form; and
the command line refusing nonsense before it starts a stack.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from bench.latency import (
    ROW_BROKER,
    ROW_CONSOLE,
    ROW_HTTP,
    TARGET_P50_MS,
    Meta,
    Results,
    Stat,
    format_report,
    format_table,
    main,
    to_json,
)

META = Meta(
    date="2026-03-01T09:30:00+08:00",
    nproc=2,
    python="CPython 3.12.3",
    platform="Linux-6.8-x86_64",
    command="python -m bench.latency --reports 10 --rate 20",
    workers=1,
    partitions=4,
    fetch_max_wait_ms=10,
)
STAGES = ["POST sent → intake stamp", "intake stamp → enriched", "enriched → console"]


def results(
    console_s: list[float], *, broker_s: list[float] | None = None, failed: int = 0, missing: int = 0
) -> Results:
    return Results(
        broker=Stat.of(ROW_BROKER, [0.002, 0.004] if broker_s is None else broker_s),
        http_202=Stat.of(ROW_HTTP, [0.010, 0.012, 0.011]),
        console=Stat.of(ROW_CONSOLE, console_s),
        stages=[
            Stat.of(STAGES[0], [0.004, 0.006]),
            Stat.of(STAGES[1], [0.020]),
            Stat.of(STAGES[2], []),
        ],
        reports=10,
        rate=20.0,
        sent_rate=19.456,
        accepted=10 - failed,
        failed=failed,
        missing=missing,
    )


def test_a_stat_is_milliseconds_from_seconds_and_empty_without_samples() -> None:
    s = Stat.of("x", [0.003, 0.001, 0.002])
    assert (s.name, s.n) == ("x", 3) and s.max_ms == pytest.approx(3.0)
    assert s.p50_ms == pytest.approx(2.0) and s.p99_ms == pytest.approx(2.98)
    assert Stat.of("none", []) == Stat("none", 0, None, None, None)


def test_the_ratio_is_console_p50_over_broker_p50() -> None:
    r = results([0.050, 0.060])  # console p50 55 ms; broker p50 3 ms
    assert r.rows == [r.broker, r.http_202, r.console]
    assert r.ratio == pytest.approx(55.0 / 3.0)
    assert results([]).ratio is None
    assert results([0.05], broker_s=[]).ratio is None
    assert results([0.05], broker_s=[0.0]).ratio is None  # a zero broker p50 gives no ratio


def test_the_target_needs_a_fast_p50_and_nothing_failed_or_lost() -> None:
    assert results([0.050, 0.060]).target_met
    assert results([TARGET_P50_MS / 1000]).target_met  # on the bound
    assert not results([0.101]).target_met
    assert not results([]).target_met  # nothing reached the console
    assert not results([0.050], failed=1).target_met
    assert not results([0.050], missing=1).target_met


def test_the_table_sets_every_row_beside_the_broker() -> None:
    table = format_table(results([0.050, 0.060]))
    lines = table.splitlines()
    assert lines[0].split() == ["n", "p50", "ms", "p99", "ms", "max", "ms", "p50", "÷", "broker", "p50"]
    assert re.fullmatch(r"raw broker produce→consume\s+2\s+3\.0\s+4\.0\s+4\.0\s+1\.0×", lines[2])
    assert re.fullmatch(r"intake HTTP 202\s+3\s+11\.0\s+12\.0\s+12\.0\s+3\.7×", lines[3])
    assert re.fullmatch(r"intake → console\s+2\s+55\.0\s+59\.9\s+60\.0\s+18\.3×", lines[4])
    assert "intake → console p50 / raw broker p50 = 18.3×" in lines
    # the stages follow, a stage with no samples shown as dashes
    stage = lines.index("where intake → console goes (wall-clock stamps carried by the delta):")
    assert re.fullmatch(r"POST sent → intake stamp\s+2\s+5\.0\s+6\.0\s+6\.0\s+1\.7×", lines[stage + 1])
    assert re.fullmatch(r"enriched → console\s+0\s+-\s+-\s+-\s+-", lines[stage + 3])
    # the rows line up: every row is as wide as the header
    assert {len(line) for line in lines[2:5] + lines[stage + 1 :]} == {len(lines[0])}


def test_without_a_broker_figure_the_table_has_no_ratios() -> None:
    table = format_table(results([0.05], broker_s=[]))
    assert "×" not in table
    assert "intake → console p50 / raw broker p50 = -" in table
    assert re.search(r"raw broker produce→consume\s+0\s+-\s+-\s+-\s+-", table)


def test_the_report_says_where_it_ran_what_it_did_and_the_verdict() -> None:
    met = format_report(META, results([0.050, 0.060]))
    lines = met.splitlines()
    assert lines[0] == "date:     2026-03-01T09:30:00+08:00"
    assert lines[1] == "machine:  nproc=2, CPython 3.12.3, Linux-6.8-x86_64"
    assert lines[2] == "command:  python -m bench.latency --reports 10 --rate 20"
    assert lines[3] == "stack:    Tansu (in memory), 1 streams worker(s), 4 partitions, fetch_max_wait_ms=10"
    assert lines[4] == (
        "load:     10 reports at 20/s (achieved 19.5/s), 10 accepted, 0 failed, 0 never reached the console"
    )
    assert format_table(results([0.050, 0.060])) in met
    assert lines[-1] == "target:   intake → console p50 ≤ 100 ms: MET (p50 55.0 ms)"
    lost = format_report(META, results([0.050], failed=2, missing=1)).splitlines()
    assert "8 accepted, 2 failed, 1 never reached the console" in lost[4]
    assert lost[-1] == "target:   intake → console p50 ≤ 100 ms: NOT MET (p50 50.0 ms)"
    nothing = format_report(META, results([])).splitlines()
    assert nothing[-1] == "target:   intake → console p50 ≤ 100 ms: NOT MET (p50 - ms)"


def test_the_json_form_holds_every_figure_rounded() -> None:
    r = results([0.050, 0.060], missing=1)
    got = to_json(META, r)
    assert json.loads(json.dumps(got, ensure_ascii=False)) == got
    assert {
        k: got[k] for k in ("date", "nproc", "command", "workers", "partitions", "fetch_max_wait_ms")
    } == {
        "date": META.date,
        "nproc": 2,
        "command": META.command,
        "workers": 1,
        "partitions": 4,
        "fetch_max_wait_ms": 10,
    }
    assert (got["reports"], got["rate"], got["sent_rate"]) == (10, 20.0, 19.46)
    assert (got["accepted"], got["failed"], got["missing"]) == (10, 0, 1)
    assert [row["name"] for row in got["rows"]] == [ROW_BROKER, ROW_HTTP, ROW_CONSOLE]
    assert got["rows"][0] == {"name": ROW_BROKER, "n": 2, "p50_ms": 3.0, "p99_ms": 3.98, "max_ms": 4.0}
    assert [row["name"] for row in got["stages"]] == STAGES
    assert got["stages"][2] == {"name": STAGES[2], "n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    assert got["ratio_console_p50_to_broker_p50"] == 18.33
    assert got["target"] == {"p50_ms": TARGET_P50_MS, "met": False}  # one report lost
    assert to_json(META, results([]))["ratio_console_p50_to_broker_p50"] is None


def test_meta_now_describes_this_machine_and_the_command() -> None:
    meta = Meta.now(["--reports", "5", "--rate", "2 5"], workers=2, partitions=3, fetch_max_wait_ms=7)
    assert meta.command == "python -m bench.latency --reports 5 --rate '2 5'"
    assert meta.nproc == len(os.sched_getaffinity(0))
    assert (meta.workers, meta.partitions, meta.fetch_max_wait_ms) == (2, 3, 7)
    assert meta.python.split()[0] in ("CPython", "PyPy") and meta.date[:2] == "20"
    assert Meta.now([], 1, 4, 10).command == "python -m bench.latency"


@pytest.mark.parametrize(
    "argv",
    [["--reports", "0"], ["--rate", "0"], ["--rate", "-1"], ["--workers", "0"], ["--broker-messages", "0"]],
)
def test_the_command_refuses_nonsense_before_starting_a_stack(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "must be at least 1, --rate above 0" in capsys.readouterr().err
