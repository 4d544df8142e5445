"""The throughput scenario's steps: a step is absorbed or says why not, and how fast its backlog
drained. (The scenario itself runs, at its quick size, in tests/bench/test_city.py.)"""

from __future__ import annotations

from bench.throughput import Step


def test_a_step_not_absorbed_says_why_and_how_fast_its_backlog_drained() -> None:
    absorbed = Step(100, 100.0, 1500, 0, 0, 0.0, True)
    assert absorbed.note() == ""
    behind = Step(200, 199.0, 3000, 0, 1800, 20.0, False)
    assert behind.note() == (
        "0 refused, 1800 not on the console 5 s later; they arrived 20 s after that (~90/s drained)"
    )
    stuck = Step(200, 199.0, 3000, 0, 1800, None, False)
    assert stuck.note().endswith("not all arrived within the drain time")
    refused = Step(200, 150.0, 2000, 250, 0, 0.0, False)
    assert refused.note() == "250 refused, 0 not on the console 5 s later"
