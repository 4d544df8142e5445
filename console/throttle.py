"""How failed logins slow guessing down without shutting out the people entitled to log in.

Anchors: NIST SP 800-63B 5.2.2 (rate-limit failed attempts on an account; prefer delays that grow
to hard lockouts, which let an attacker deny the real user), and OWASP's Authentication Cheat Sheet
with its device-cookie pattern (a browser or phone that has logged in as a user before carries a
token that puts its attempts in a lane of their own).

An attempt is counted in lanes, and each lane imposes a growing delay after a few free failures:
the next attempt in that lane is answered "wait N seconds" (429, Retry-After) without checking
the password, and the wait doubles with each further failure, up to a cap. There is no lock
that a third party can hold for ever: a wait ends, and one success clears the lane it was made in.

- A **known device** (it presents the device token a successful login gave it) is counted only
  in its own lane, (user, device). Guessing from anywhere else, or from the same address behind
  the same NAT, cannot slow the duty operator's console or a responder's phone down.
- Without a device token, an attempt counts in three lanes: (user, address), the user from any
  address (a distributed guess at one account), and the address for any user (one client
  spraying many accounts). The address lane is generous: a command room or a fleet of phones
  shares one address.

Pure: the caller stores the counts and says what time it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Scope = Literal["device", "pair", "user", "ip"]
SCOPES: Final[tuple[Scope, ...]] = ("device", "pair", "user", "ip")


@dataclass(frozen=True, slots=True)
class Backoff:
    """`free` failures cost nothing; the next waits `first_s`, doubling per failure up to `most_s`."""

    free: int
    first_s: float
    most_s: float

    def delay(self, failures: int) -> float:
        """Seconds the lane must wait after its `failures`-th consecutive failure."""
        if failures < self.free:
            return 0.0
        return float(min(self.most_s, self.first_s * 2.0 ** min(failures - self.free, 40)))


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    device: Backoff = Backoff(free=5, first_s=2.0, most_s=15 * 60)
    pair: Backoff = Backoff(free=5, first_s=2.0, most_s=15 * 60)
    user: Backoff = Backoff(free=10, first_s=2.0, most_s=5 * 60)
    ip: Backoff = Backoff(free=30, first_s=1.0, most_s=60)
    forget_s: float = 3600.0  # a lane with no failure for this long starts afresh

    def backoff(self, scope: Scope) -> Backoff:
        return {"device": self.device, "pair": self.pair, "user": self.user, "ip": self.ip}[scope]


@dataclass(frozen=True, slots=True)
class Lane:
    scope: Scope
    subject: str


def lanes(username: str, address: str | None, device: str | None) -> list[Lane]:
    """The lanes an attempt counts in. `device`: the digest of a device token the caller showed
    that belongs to this user (None when there is none, or it is not this user's)."""
    if device is not None:
        return [Lane("device", f"{username}\n{device}")]
    out = [Lane("user", username)]
    if address:
        out = [Lane("pair", f"{username}\n{address}"), *out, Lane("ip", address)]
    return out


@dataclass(slots=True)
class Count:
    """What is stored for a lane: consecutive failures, and when the last one was."""

    failures: int = 0
    last_failure_s: float | None = None  # seconds on the caller's clock

    def current(self, policy: LoginPolicy, now_s: float) -> int:
        """The failures that still count (none once the lane has been quiet for `forget_s`)."""
        if self.last_failure_s is None or now_s - self.last_failure_s >= policy.forget_s:
            return 0
        return self.failures

    def wait_s(self, policy: LoginPolicy, scope: Scope, now_s: float) -> float:
        """Seconds before this lane takes another attempt (0: now)."""
        failures = self.current(policy, now_s)
        if not failures or self.last_failure_s is None:
            return 0.0
        ready = self.last_failure_s + policy.backoff(scope).delay(failures)
        return max(0.0, ready - now_s)


__all__ = ["SCOPES", "Backoff", "Count", "Lane", "LoginPolicy", "Scope", "lanes"]
