"""What the consoles saw, read back as latencies (`bench.drive`): the pure helpers that turn the
poster processes' `Post`s and the consoles' `ConsoleLog`s into the benchmark's figures.
"""

from __future__ import annotations

import pytest

from bench.drive import every_console_latencies, missing_from, posts_of, rate_of, report_latencies
from bench.load import ConsoleLog, Post

S = 1_000_000_000  # nanoseconds in a second
MS = 1_000_000


def post(incident_id: str | None, t0_ns: int, status: int | None = None) -> Post:
    """A report posted at t0_ns, answered 10 ms later (202 when it got an incident id)."""
    return Post(
        incident_id, t0_ns, t0_ns + 10 * MS, status if status is not None else (202 if incident_id else 0)
    )


def console(**first_seen_ns: int) -> ConsoleLog:
    """A console's log: each incident's first delta at the given monotonic time."""
    return ConsoleLog(incidents={f"INC-{k}": v for k, v in first_seen_ns.items()})


POSTS = [
    post("INC-a", 1 * S),
    post("INC-b", 2 * S),
    post(None, 3 * S, status=503),  # refused: never counted
    post("INC-c", 4 * S),
]
LOGS = [
    console(a=1 * S + 40 * MS, b=2 * S + 70 * MS, c=4 * S + 20 * MS),
    console(a=1 * S + 90 * MS, c=4 * S + 500 * MS),  # never got b
]


def test_report_latencies_time_each_report_at_every_console_that_got_it() -> None:
    got = report_latencies(POSTS, LOGS)
    assert sorted(got) == pytest.approx(sorted([0.040, 0.070, 0.020, 0.090, 0.500]))
    assert report_latencies(POSTS, []) == []
    assert report_latencies([post(None, S)], LOGS) == []
    # an incident some other report created does not count for a post that has no id
    assert report_latencies([post("INC-zzz", S)], LOGS) == []


def test_every_console_latency_waits_for_the_last_console_and_counts_the_incomplete() -> None:
    last, spread, missing = every_console_latencies(POSTS, LOGS)
    # a reached both consoles after 40 and 90 ms; c after 20 and 500 ms; b only one of them
    assert last == pytest.approx([0.090, 0.500])
    assert spread == pytest.approx([0.050, 0.480])
    assert missing == 1
    one_console = every_console_latencies(POSTS, LOGS[:1])
    assert one_console[0] == pytest.approx([0.040, 0.070, 0.020])
    assert one_console[1] == [0.0, 0.0, 0.0] and one_console[2] == 0
    assert every_console_latencies([post("INC-zzz", S)], LOGS) == ([], [], 1)
    assert every_console_latencies(POSTS, []) == ([], [], 3)  # no console at all: every one missing


def test_missing_from_counts_each_incident_at_each_console_that_lacks_it() -> None:
    assert missing_from(POSTS, LOGS) == 1  # b at the second console
    assert missing_from(POSTS, [console(), console(a=1)]) == 3 + 2
    assert missing_from(POSTS, []) == 0
    # two reports merged into one incident: one incident to miss, not two
    merged = [post("INC-a", S), post("INC-a", 2 * S)]
    assert missing_from(merged, [console()]) == 1
    assert missing_from([post(None, S)], [console()]) == 0


def test_rate_of_is_reports_per_second_between_the_first_and_last_post() -> None:
    assert rate_of([]) == 0.0
    assert rate_of([post("INC-a", S)]) == 1.0
    # 11 posts over 2 s: 10 intervals / 2 s; the order they are listed in does not matter
    posts = [post(f"INC-{k}", 5 * S + k * 200 * MS) for k in range(11)]
    assert rate_of(posts) == pytest.approx(5.0)
    assert rate_of(list(reversed(posts))) == pytest.approx(5.0)
    # refused posts were still sent: they count toward the rate achieved
    assert rate_of([post(None, 0), post(None, S // 2), post("INC-x", S)]) == pytest.approx(2.0)


def test_rate_of_posts_sent_in_the_same_nanosecond_is_huge_not_an_error() -> None:
    assert rate_of([post("INC-a", S), post("INC-b", S)]) > 1e8


def test_posts_of_joins_the_poster_processes_results_in_order() -> None:
    first, second = [post("INC-a", S), post("INC-b", 2 * S)], [post(None, 3 * S)]
    assert posts_of([first, [], second]) == [*first, *second]
    assert posts_of([]) == []
