"""Token buckets: how often a client may do something, on a clock the caller supplies.

One rule for every limit that counts requests (a WebSocket's frames, the public progress page's
lookups by address), pure so that it is tested on an injected clock rather than by sleeping.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; each allowed event takes one."""

    rate: float
    burst: float
    tokens: float = field(default=-1.0)  # full when made
    stamp: float | None = None  # the clock's reading at the last event

    def take(self, now: float) -> bool:
        """True if an event now is within the rate (and count it); False if over."""
        if self.tokens < 0:
            self.tokens = self.burst
        elapsed = 0.0 if self.stamp is None else max(0.0, now - self.stamp)
        self.stamp = now
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until the next event would be allowed (0 when it would be now)."""
        return 0.0 if self.tokens >= 1.0 else (1.0 - max(self.tokens, 0.0)) / self.rate


class KeyedLimiter:
    """A bucket per key (a client address), the least recently used forgotten beyond `keys`,
    so a flood of addresses cannot grow memory without bound."""

    def __init__(self, rate: float, burst: float, keys: int = 100_000) -> None:
        self.rate, self.burst, self._max = rate, burst, keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """0 if `key` may go ahead now (counted), else the seconds it should wait."""
        bucket = self._buckets.pop(key, None) or TokenBucket(self.rate, self.burst)
        self._buckets[key] = bucket
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return 0.0 if bucket.take(now) else max(bucket.wait_s(), 0.001)


__all__ = ["KeyedLimiter", "TokenBucket"]
