"""The login lanes' rules and the token buckets, pure: fed by hand and by hypothesis, on an injected clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from console.ratelimit import KeyedLimiter, TokenBucket
from console.throttle import Backoff, Count, Lane, LoginPolicy, lanes

POLICY = LoginPolicy()


def test_the_waits_after_the_free_failures_double_up_to_the_cap() -> None:
    b = Backoff(free=5, first_s=2.0, most_s=900)
    assert [b.delay(n) for n in range(12)] == [0, 0, 0, 0, 0, 2, 4, 8, 16, 32, 64, 128]
    assert b.delay(20) == 900 and b.delay(10**6) == 900  # capped, never a lock


@given(st.integers(0, 10), st.floats(0.1, 10), st.floats(10, 3600), st.integers(0, 200))
def test_a_wait_never_shrinks_with_more_failures_and_never_passes_the_cap(
    free: int, first: float, most: float, n: int
) -> None:
    b = Backoff(free, first, most)
    assert 0 <= b.delay(n) <= b.delay(n + 1) <= most
    assert (b.delay(n) == 0) == (n < free)


def test_a_known_device_counts_only_in_its_own_lane() -> None:
    assert lanes("duty", "10.0.0.1", "d1") == [Lane("device", "duty\nd1")]
    assert lanes("duty", "10.0.0.1", None) == [
        Lane("pair", "duty\n10.0.0.1"),
        Lane("user", "duty"),
        Lane("ip", "10.0.0.1"),
    ]
    assert lanes("duty", None, None) == [Lane("user", "duty")]  # no address known: the user's lane


def test_a_lane_waits_from_its_last_failure_and_forgets_after_a_quiet_hour() -> None:
    count = Count(failures=POLICY.pair.free + 2, last_failure_s=1000.0)
    assert count.wait_s(POLICY, "pair", 1000.0) == 8.0  # 2, 4, 8: the third wait
    assert count.wait_s(POLICY, "pair", 1005.0) == 3.0
    assert count.wait_s(POLICY, "pair", 1008.0) == 0.0
    assert count.current(POLICY, 1000.0 + POLICY.forget_s) == 0  # forgotten
    assert Count().wait_s(POLICY, "ip", 0.0) == 0.0


@given(st.integers(0, 100), st.floats(0, 10_000), st.floats(0, 10_000))
def test_the_wait_is_what_is_left_of_the_delay(failures: int, last: float, elapsed: float) -> None:
    count = Count(failures, last)
    delay = POLICY.user.delay(failures) if elapsed < POLICY.forget_s else 0.0
    expected = max(0.0, delay - elapsed) if failures else 0.0
    assert abs(count.wait_s(POLICY, "user", last + elapsed) - expected) < 1e-6


def test_a_token_bucket_on_an_injected_clock() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take(10.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s() == 0.5
    assert bucket.take(10.5) and not bucket.take(10.5)
    assert bucket.take(100.0) and bucket.take(100.0) and bucket.take(100.0) and not bucket.take(100.0)
    limiter = KeyedLimiter(rate=1.0, burst=1, keys=2)
    assert limiter.take("a", 0.0) == 0 and limiter.take("a", 0.0) == 1.0
    assert limiter.take("b", 0.0) == 0 and limiter.take("c", 0.0) == 0  # "a" forgotten: at most 2 kept
    assert limiter.take("a", 0.0) == 0
