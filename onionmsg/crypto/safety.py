"""Safety numbers: a short fingerprint of two identities that both users compare out of band.

The number is the same on both sides (the keys are sorted), 60 decimal digits shown as
12 groups of 5, derived as BLAKE2b-512("onionmsg safety number v1" || min(A, B) || max(A, B)):
each group is 5 bytes of the digest, as a big-endian integer, modulo 100000. An attacker
who wants to substitute a key must find a key pair whose number matches: ~2^199 work
for the 60 digits (10^60), far beyond a preimage search.
"""

from __future__ import annotations

import hashlib

_TAG = b"onionmsg safety number v1"
GROUPS = 12


def safety_number(public_key_a: bytes, public_key_b: bytes) -> str:
    if len(public_key_a) != 32 or len(public_key_b) != 32:
        raise ValueError("safety numbers are made from two 32-byte Ed25519 keys")
    low, high = sorted((public_key_a, public_key_b))
    digest = hashlib.blake2b(_TAG + low + high, digest_size=64).digest()
    groups = [int.from_bytes(digest[5 * i : 5 * i + 5], "big") % 100_000 for i in range(GROUPS)]
    return " ".join(f"{group:05d}" for group in groups)
