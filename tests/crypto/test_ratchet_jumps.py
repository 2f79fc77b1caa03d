"""Forged ratchet headers that claim huge counter jumps are refused without deriving the
skipped keys (counted, not timed: docs/performance.md reports the time)."""

from __future__ import annotations

import os
from typing import Any

import pytest

import onionmsg.crypto.ratchet as ratchet_module
from onionmsg.crypto.identity import Identity
from onionmsg.crypto.ratchet import MAX_SKIP, Ratchet, Sealed, is_initiator
from onionmsg.errors import ProtocolError

AD = b"associated"


def session() -> tuple[Ratchet, Ratchet]:
    """(initiator, responder) with an open session."""
    a, b = Identity(bytes([1]) * 32), Identity(bytes([2]) * 32)
    alice, bob = (a, b) if is_initiator(a.public_key, b.public_key) else (b, a)
    alice_ratchet, first = Ratchet.start(alice, bob.public_key, b"hello", AD)
    bob_ratchet, _ = Ratchet.accept(bob, alice.public_key, first, AD)
    return alice_ratchet, bob_ratchet


class CountingKDF(ratchet_module._MessageChainKDF):
    """The message-chain KDF, counting its calls (one per message key derived)."""

    calls = 0

    @classmethod
    async def derive(cls, key: bytes, data: bytes, length: int) -> bytes:
        CountingKDF.calls += 1
        derived: bytes = await super().derive(key, data, length)
        return derived


def forgeries(honest: Sealed) -> dict[str, Sealed]:
    return {
        "same chain, a million ahead": Sealed(honest.ratchet_public, 0, 10**6, honest.ciphertext),
        "new key, previous chain a million long": Sealed(
            os.urandom(32), 10**6, 0, honest.ciphertext
        ),
        "new key, a million into the new chain": Sealed(
            os.urandom(32), 0, 10**6, honest.ciphertext
        ),
        "largest counters": Sealed(honest.ratchet_public, 2**32 - 1, 2**32 - 1, honest.ciphertext),
    }


@pytest.mark.parametrize("name", list(forgeries(Sealed(bytes(32), 0, 0, b"")).keys()))
def test_a_counter_jump_derives_no_more_than_max_skip_keys_and_changes_nothing(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = session()
    bob.decrypt(alice.encrypt(b"first", AD), AD)
    alice.decrypt(bob.encrypt(b"reply", AD), AD)  # both sides have ratcheted once
    honest = alice.encrypt(b"next", AD)
    state = bob.to_json()
    parameters: dict[str, Any] = {**ratchet_module._PARAMETERS, "message_chain_kdf": CountingKDF}
    monkeypatch.setattr(ratchet_module, "_PARAMETERS", parameters)
    counted = Ratchet.from_json(state)
    CountingKDF.calls = 0
    with pytest.raises(ProtocolError):
        counted.decrypt(forgeries(honest)[name], AD)
    assert CountingKDF.calls <= MAX_SKIP, f"{CountingKDF.calls} message keys derived"
    assert counted.to_json() == state
    assert counted.decrypt(honest, AD) == b"next"
    assert CountingKDF.calls >= 1  # the counter does count derivations
