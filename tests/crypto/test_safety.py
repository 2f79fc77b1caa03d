"""Safety numbers are symmetric, stable, and differ for any other key."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from onionmsg.crypto.identity import Identity
from onionmsg.crypto.safety import safety_number

keys = st.binary(min_size=32, max_size=32)


@given(keys, keys)
def test_both_sides_see_the_same_number(a: bytes, b: bytes) -> None:
    number = safety_number(a, b)
    assert number == safety_number(b, a)
    groups = number.split(" ")
    assert len(groups) == 12 and all(len(g) == 5 and g.isdigit() for g in groups)


@given(keys, keys, keys)
def test_another_key_gives_another_number(a: bytes, b: bytes, c: bytes) -> None:
    if c not in (a, b):
        assert safety_number(a, b) != safety_number(a, c)


def test_matches_the_documented_derivation() -> None:
    # docs/protocol.md: BLAKE2b-512(tag || min || max); group i = digest[5i:5i+5] mod 100000.
    alice, bob = Identity(bytes([1]) * 32), Identity(bytes([2]) * 32)
    low, high = sorted((alice.public_key, bob.public_key))
    digest = hashlib.blake2b(b"onionmsg safety number v1" + low + high).digest()
    expected = " ".join(
        str(int(digest[i : i + 5].hex(), 16) % 100_000).zfill(5) for i in range(0, 60, 5)
    )
    assert safety_number(alice.public_key, bob.public_key) == expected
