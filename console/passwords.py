"""Console passwords: scrypt with a per-password salt, stored as one self-describing string.

The cost parameters travel with each hash ("scrypt$n$r$p$salt$hash"), so they can be raised
later without invalidating stored passwords: `needs_rehash` says when a login should store a
fresh hash. N=2^14, r=8, p=1 costs 16 MiB and ~50 ms per check: the scrypt paper's interactive
login setting, a deliberate balance on a 2-core console server that also hashes for unknown
usernames (see console/auth.py) and serves hundreds of phones logging in after a shift change.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import secrets
from typing import Final

SCHEME: Final = "scrypt"
N: Final = 2**14
R: Final = 8
P: Final = 1
DKLEN: Final = 32
_MAX_N: Final = 2**20  # refuse absurd stored costs instead of exhausting memory


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # OpenSSL's default memory cap (32 MiB) is too small for larger n; allow what the cost needs.
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=dklen,
        maxmem=128 * r * (n + p + 2) + 1024**2,
    )


def hash_password(password: str) -> str:
    """A fresh salted hash, e.g. "scrypt$16384$8$1$<salt b64>$<hash b64>"."""
    salt = os.urandom(16)
    digest = _scrypt(password, salt, N, R, P, DKLEN)
    return f"{SCHEME}${N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches `stored`; a malformed stored value never matches."""
    try:
        scheme, n_s, r_s, p_s, salt_b64, hash_b64 = stored.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(hash_b64, validate=True)
    except ValueError:
        return False
    if scheme != SCHEME or not (1 < n <= _MAX_N and 0 < r <= 32 and 0 < p <= 16 and expected):
        return False
    try:
        actual = _scrypt(password, salt, n, r, p, len(expected))
    except ValueError:  # e.g. n not a power of two
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(stored: str) -> bool:
    """True when `stored` was made with other cost parameters than today's (or is unreadable)."""
    parts = stored.split("$")
    return len(parts) != 6 or parts[:4] != [SCHEME, str(N), str(R), str(P)]


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def dummy_verify(password: str) -> bool:
    """Spend the same work as a real check, for unknown usernames: timing tells nothing. Always False."""
    verify_password(password, _dummy_hash())
    return False
