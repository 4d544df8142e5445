"""Console passwords: scrypt hashes that carry their own cost, never match when malformed, and say
when a login should store a fresh one."""

from __future__ import annotations

import base64
import hashlib

import pytest

from console.passwords import N, P, R, dummy_verify, hash_password, needs_rehash, verify_password

PASSWORD = "西城-night-shift-2026"


def handmade(password: str, n: int, r: int = 8, p: int = 1, salt: bytes = b"0123456789abcdef") -> str:
    """A hash in the stored format, made with other cost parameters than today's."""
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def test_a_hash_checks_its_own_password_only_and_is_salted() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first.startswith(f"scrypt${N}${R}${P}$") and len(first.split("$")) == 6
    assert first != second  # a fresh salt each time: equal passwords do not show
    assert PASSWORD not in first
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)
    assert not verify_password(PASSWORD + " ", first)
    assert not verify_password(PASSWORD.upper(), first)
    assert not verify_password("", first)


def test_an_older_cost_still_verifies_and_asks_for_a_rehash() -> None:
    old = handmade(PASSWORD, n=2**10)
    assert verify_password(PASSWORD, old) and not verify_password("other", old)
    assert needs_rehash(old)
    assert needs_rehash(handmade(PASSWORD, n=N, r=4))
    assert not needs_rehash(hash_password(PASSWORD))
    assert needs_rehash("") and needs_rehash("plain-text-password")


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "not-a-hash",
        "scrypt$16384$8$1$c2FsdA==",  # a part missing
        "scrypt$16384$8$1$c2FsdA==$aGFzaA==$extra",
        "bcrypt$16384$8$1$c2FsdA==$aGFzaA==",  # another scheme
        "scrypt$sixteen$8$1$c2FsdA==$aGFzaA==",
        "scrypt$16384$8$1$not base64!$aGFzaA==",
        "scrypt$16384$8$1$c2FsdA==$",  # no digest: would match anything of length 0
        "scrypt$1$8$1$c2FsdA==$aGFzaA==",  # n too small
        "scrypt$1000$8$1$c2FsdA==$aGFzaA==",  # n not a power of two
        f"scrypt${2**21}$8$1$c2FsdA==$aGFzaA==",  # an absurd memory cost
        "scrypt$16384$64$1$c2FsdA==$aGFzaA==",  # r beyond the cap
        "scrypt$16384$8$0$c2FsdA==$aGFzaA==",
    ],
)
def test_a_malformed_stored_value_never_matches_and_never_raises(stored: str) -> None:
    assert verify_password(PASSWORD, stored) is False
    assert verify_password("", stored) is False


def test_a_tampered_hash_does_not_match() -> None:
    stored = hash_password(PASSWORD)
    assert not verify_password(PASSWORD, "bcrypt" + stored.removeprefix("scrypt"))  # another scheme
    head, digest = stored.rsplit("$", 1)
    raw = bytearray(base64.b64decode(digest))
    raw[0] ^= 1
    assert not verify_password(PASSWORD, f"{head}${base64.b64encode(bytes(raw)).decode()}")


def test_the_dummy_check_for_unknown_usernames_never_succeeds() -> None:
    assert dummy_verify(PASSWORD) is False and dummy_verify("") is False
