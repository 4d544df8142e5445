"""Token buckets on an injected clock: never more than the rate allows over any span, never a
refusal for a client that keeps to the rate, and a wait that is exactly long enough."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from console.ratelimit import KeyedLimiter, TokenBucket

rates = st.floats(0.1, 100)
bursts = st.integers(1, 50)
# (seconds since the previous attempt, attempts at that moment)
steps = st.lists(st.tuples(st.floats(0, 5), st.integers(1, 20)), min_size=1, max_size=60)


@given(rates, bursts, st.floats(0, 10_000), steps)
def test_a_bucket_never_allows_more_than_the_rate_and_the_burst_in_any_window(
    rate: float, burst: int, start: float, schedule: list[tuple[float, int]]
) -> None:
    bucket = TokenBucket(rate, float(burst))
    now, moments = start, []  # (time, events allowed at that time)
    for gap, attempts in schedule:
        now += gap
        moments.append((now, sum(bucket.take(now) for _ in range(attempts))))
    for i, (since, _) in enumerate(moments):  # every window [since, until]: saving up is capped
        allowed = 0
        for until, count in moments[i:]:
            allowed += count
            assert allowed <= rate * (until - since) + burst + 1e-6, (since, until, allowed)


@given(rates, bursts, st.lists(st.floats(1.001, 50), min_size=1, max_size=60))
def test_a_client_keeping_to_the_rate_is_never_refused(rate: float, burst: int, gaps: list[float]) -> None:
    bucket = TokenBucket(rate, float(burst))
    now = 100.0
    assert bucket.take(now)
    for gap in gaps:
        now += gap / rate  # each a little more than one token's worth apart
        assert bucket.take(now)


@given(rates, bursts, st.floats(0, 1000))
def test_the_wait_after_a_refusal_is_just_long_enough(rate: float, burst: int, now: float) -> None:
    bucket = TokenBucket(rate, float(burst))
    assert all(bucket.take(now) for _ in range(burst)) and not bucket.take(now)
    wait = bucket.wait_s()
    assert 0 < wait <= 1 / rate + 1e-9
    early = TokenBucket(rate, float(burst), tokens=bucket.tokens, stamp=bucket.stamp)
    assert not early.take(now + wait * 0.99)
    assert bucket.take(now + wait * (1 + 1e-9) + 1e-9)


def test_a_limiter_forgets_the_least_recently_used_key_not_the_oldest() -> None:
    limiter = KeyedLimiter(rate=1.0, burst=1, keys=2)
    assert limiter.take("a", 0.0) == 0 and limiter.take("b", 0.0) == 0
    assert limiter.take("a", 0.0) == 1.0  # "a" used again: now the most recent
    assert limiter.take("c", 0.0) == 0  # over two keys: "b" is forgotten, not "a"
    assert limiter.take("a", 0.5) == 0.5  # "a" still counted: half a token back, half to wait
    assert limiter.take("b", 0.5) == 0  # a fresh bucket for "b"


def test_a_limiter_never_answers_a_zero_wait_for_a_refusal() -> None:
    limiter = KeyedLimiter(rate=1e9, burst=1)
    assert limiter.take("x", 5.0) == 0
    wait = limiter.take("x", 5.0)
    assert wait >= 0.001  # 0 would read as "go ahead"
