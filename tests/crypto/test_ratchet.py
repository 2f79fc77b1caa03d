"""The Double Ratchet: forward secrecy, post-compromise security, reordering, replay, DoS caps."""

from __future__ import annotations

import time

import pytest

from onionmsg.crypto.identity import Identity
from onionmsg.crypto.ratchet import MAX_SKIP, Ratchet, Sealed, is_initiator
from onionmsg.errors import ProtocolError

AD = b"associated"


def identities() -> tuple[Identity, Identity]:
    """(initiator, responder): the initiator's key sorts first."""
    a, b = Identity(bytes([1]) * 32), Identity(bytes([2]) * 32)
    return (a, b) if is_initiator(a.public_key, b.public_key) else (b, a)


def session() -> tuple[Ratchet, Ratchet]:
    alice, bob = identities()
    alice_ratchet, first = Ratchet.start(alice, bob.public_key, b"hello", AD)
    bob_ratchet, plaintext = Ratchet.accept(bob, alice.public_key, first, AD)
    assert plaintext == b"hello"
    return alice_ratchet, bob_ratchet


def test_conversation_both_ways() -> None:
    alice, bob = session()
    for i in range(5):
        assert bob.decrypt(alice.encrypt(f"a{i}".encode(), AD), AD) == f"a{i}".encode()
        assert alice.decrypt(bob.encrypt(f"b{i}".encode(), AD), AD) == f"b{i}".encode()


def test_only_the_initiator_opens_and_the_roles_agree() -> None:
    alice, bob = identities()
    assert is_initiator(alice.public_key, bob.public_key)
    assert not is_initiator(bob.public_key, alice.public_key)
    with pytest.raises(ValueError):
        Ratchet.start(bob, alice.public_key, b"x", AD)


def test_survives_serialisation() -> None:
    alice, bob = session()
    sealed = alice.encrypt(b"kept", AD)
    bob = Ratchet.from_json(bob.to_json())
    assert bob.decrypt(sealed, AD) == b"kept"
    alice = Ratchet.from_json(alice.to_json())
    assert alice.decrypt(bob.encrypt(b"back", AD), AD) == b"back"


def test_stolen_state_does_not_decrypt_past_messages() -> None:
    alice, bob = session()
    past = [alice.encrypt(f"past {i}".encode(), AD) for i in range(3)]
    for sealed in past:
        bob.decrypt(sealed, AD)
    stolen = Ratchet.from_json(bob.to_json())
    for sealed in past:
        with pytest.raises(ProtocolError):
            stolen.decrypt(sealed, AD)


def test_after_a_round_trip_each_way_a_stolen_state_reads_nothing_new() -> None:
    alice, bob = session()
    bob.decrypt(alice.encrypt(b"before the theft", AD), AD)
    # The attacker copies Bob's whole state, then reads every message sent to Bob that it
    # intercepts, exactly as Bob would.
    stolen = Ratchet.from_json(bob.to_json())

    def to_bob(text: bytes) -> bytes:
        sealed = alice.encrypt(text, AD)
        try:
            seen = stolen.decrypt(sealed, AD)
        except ProtocolError:
            seen = b""
        assert bob.decrypt(sealed, AD) == text
        return seen

    assert to_bob(b"right after the theft") == b"right after the theft"  # no healing yet
    # One round trip each way: Bob -> Alice -> Bob, and Alice -> Bob -> Alice.
    alice.decrypt(bob.encrypt(b"pong", AD), AD)
    to_bob(b"ping")
    alice.decrypt(bob.encrypt(b"pong 2", AD), AD)  # Bob's fresh key, unknown to the thief
    assert to_bob(b"secret after healing") == b""
    assert to_bob(b"and the next one") == b""


def test_reordering_within_the_window() -> None:
    alice, bob = session()
    sealed = [alice.encrypt(f"m{i}".encode(), AD) for i in range(20)]
    order = [5, 0, 19, 1, 2, 18, 3, 4, *range(6, 18)]
    assert sorted(order) == list(range(20))
    for i in order:
        assert bob.decrypt(sealed[i], AD) == f"m{i}".encode()


def test_replay_is_rejected_without_state_change() -> None:
    alice, bob = session()
    sealed = alice.encrypt(b"once", AD)
    assert bob.decrypt(sealed, AD) == b"once"
    before = bob.to_json()
    with pytest.raises(ProtocolError):
        bob.decrypt(sealed, AD)
    assert bob.to_json() == before


def test_tampering_and_wrong_associated_data_are_rejected() -> None:
    alice, bob = session()
    sealed = alice.encrypt(b"intact", AD)
    flipped = Sealed(
        sealed.ratchet_public,
        sealed.previous_chain_length,
        sealed.chain_length,
        bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:],
    )
    with pytest.raises(ProtocolError):
        bob.decrypt(flipped, AD)
    with pytest.raises(ProtocolError):
        bob.decrypt(sealed, b"other")
    assert bob.decrypt(sealed, AD) == b"intact"


def test_a_counter_jump_of_a_million_is_refused_quickly() -> None:
    alice, bob = session()
    sealed = alice.encrypt(b"x", AD)
    forged = Sealed(sealed.ratchet_public, 0, 10**6, sealed.ciphertext)
    start = time.perf_counter()
    with pytest.raises(ProtocolError):
        bob.decrypt(forged, AD)
    assert time.perf_counter() - start < 0.05
    assert bob.decrypt(sealed, AD) == b"x"  # nothing changed


def test_skipped_keys_are_capped() -> None:
    alice, bob = session()
    for _ in range(MAX_SKIP + 1):
        alice.encrypt(b"lost", AD)
    with pytest.raises(ProtocolError):
        bob.decrypt(alice.encrypt(b"too far", AD), AD)
    within = [alice.encrypt(b"w", AD) for _ in range(3)]
    # MAX_SKIP is the most a single message may skip.
    assert len(within) == 3


def test_a_stranger_cannot_open_a_session() -> None:
    alice, bob = identities()
    mallory = next(
        m
        for m in (Identity(bytes([n]) * 32) for n in range(3, 60))
        if is_initiator(m.public_key, bob.public_key)
    )
    _, first = Ratchet.start(mallory, bob.public_key, b"hi", AD)
    with pytest.raises(ProtocolError):
        Ratchet.accept(bob, alice.public_key, first, AD)  # bob expects alice's secret
