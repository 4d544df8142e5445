"""One table for every scenario of the city-scale benchmark (`python -m bench.city`).

Each scenario gives `Figure`s: a latency (p50, p99, max in milliseconds, shown beside the raw broker
produce→consume p50 of the same run) or a single value (a rate, a count, megabytes), each with the
goal it is held to, if any, and whether it was met. Keeping one shape lets the scenarios live in
their own modules and still print as one table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of sorted values, linearly interpolated between ranks."""
    if not ordered:
        raise ValueError("no samples")
    k = (len(ordered) - 1) * q / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass(frozen=True, slots=True)
class Figure:
    """One row: a latency (`p50_ms`..`max_ms` set) or a value (`value` and `unit` set)."""

    scenario: str
    name: str
    n: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    value: float | None = None
    unit: str = ""
    goal: str = ""  # e.g. "p99 ≤ 150 ms"; empty when the figure is informational
    met: bool | None = None  # None when there is no goal
    note: str = ""  # what the figure depends on, or why a goal was missed

    @classmethod
    def latency(
        cls,
        scenario: str,
        name: str,
        seconds: Sequence[float],
        *,
        goal: str = "",
        p50_goal_ms: float | None = None,
        p99_goal_ms: float | None = None,
        note: str = "",
    ) -> Figure:
        """Latency figure from samples in seconds; met when every given bound holds (and n > 0)."""
        if not seconds:
            met = None if p50_goal_ms is None and p99_goal_ms is None else False
            return cls(scenario, name, 0, goal=goal, met=met, note=note or "no samples")
        ms = sorted(s * 1000.0 for s in seconds)
        p50, p99 = percentile(ms, 50), percentile(ms, 99)
        met_: bool | None = None
        if p50_goal_ms is not None or p99_goal_ms is not None:
            met_ = (p50_goal_ms is None or p50 <= p50_goal_ms) and (p99_goal_ms is None or p99 <= p99_goal_ms)
        return cls(scenario, name, len(ms), p50, p99, ms[-1], goal=goal, met=met_, note=note)

    @classmethod
    def of_value(
        cls,
        scenario: str,
        name: str,
        value: float,
        unit: str,
        *,
        goal: str = "",
        met: bool | None = None,
        note: str = "",
        n: int = 0,
    ) -> Figure:
        return cls(scenario, name, n, value=value, unit=unit, goal=goal, met=met, note=note)

    def as_json(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _num(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    if abs(v) >= 10_000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def format_figures(figures: Sequence[Figure], broker_p50_ms: float | None) -> str:
    """The table: latencies with their ratio to the broker's p50, values with their unit."""
    name_w = max([len(f.name) for f in figures] + [10]) + 2
    scen_w = max([len(f.scenario) for f in figures] + [8]) + 2
    head = (
        f"{'scenario':<{scen_w}}{'figure':<{name_w}}{'n':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'p99÷brk':>9}  {'value':>12}  {'goal':<24}{'verdict':<8}"
    )
    lines = [head, "-" * len(head)]
    for f in figures:
        ratio = "-"
        if f.p99_ms is not None and broker_p50_ms:
            ratio = f"{f.p99_ms / broker_p50_ms:.1f}×"
        value = "" if f.value is None else f"{_num(f.value)} {f.unit}".strip()
        verdict = "" if f.met is None else ("MET" if f.met else "NOT MET")
        lines.append(
            f"{f.scenario:<{scen_w}}{f.name:<{name_w}}{(f.n or ''):>8}{_num(f.p50_ms):>9}{_num(f.p99_ms):>9}"
            f"{_num(f.max_ms):>9}{ratio:>9}  {value:>12}  {f.goal:<24}{verdict:<8}"
        )
    notes = [f for f in figures if f.note]
    if notes:
        lines.append("")
        lines.extend(f"- {f.scenario} / {f.name}: {f.note}" for f in notes)
    return "\n".join(lines)
