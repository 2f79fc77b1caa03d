"""Write the seed corpus (fuzz/corpus/TARGET/) from the real encoders.

    python -m fuzz.make_corpus

Every seed is a valid input produced by onionmsg's own code: cells from `fragment`, a
handshake transcript between two real Links, envelopes sealed by a real ratchet session
(whose receiving state goes to fuzz/fixtures/bob_ratchet.json), control requests for
every method, real addresses and contact strings. Seeds are named by their SHA-1, as
libFuzzer names its own. Re-running replaces the corpus (ratchet keys are random, so the
envelope seeds and the fixture change together).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct

from fuzz.targets import (
    ALICE,
    ALICE_EPHEMERAL,
    BOB,
    BOB_EPHEMERAL,
    CORPUS,
    FIXTURES,
    envelope_to_bytes,
    established_pair,
)
from onionmsg.contacts.contact_string import make_contact_string
from onionmsg.crypto.identity import Identity
from onionmsg.crypto.noise import XKHandshake
from onionmsg.delivery.envelopes import open_envelope, seal
from onionmsg.session.link import PROLOGUE, Link
from onionmsg.transport.sam import i2p_b64encode
from onionmsg.wire import cells
from onionmsg.wire.messages import (
    Ack,
    ContactRequest,
    EndpointAuth,
    EndpointOffer,
    Envelope,
    Hello,
    Message,
    SessionRequest,
    SessionStart,
    TextContent,
    decode,
    encode,
)

LINK_MESSAGES: list[Message] = [
    Envelope(bytes(range(16)), bytes(range(32)), 0, 1, b"sealed bytes"),
    Envelope(b"\x07" * 16, b"\x01" * 32, 3, 2**32 - 1, b"x" * 3000),  # three cells
    Ack(b"\x02" * 16),
    Hello(),
    EndpointAuth(b"\x03" * 32),
    EndpointOffer(b"\x04" * 32),
    ContactRequest("hi, it's alice from the conference \u00e9\U0001f600"),
    ContactRequest(""),
    SessionRequest(),
]
CONTENT_MESSAGES: list[Message] = [
    TextContent(1_700_000_000_000, "hello"),
    TextContent(2**64 - 1, "\u00e9" * 100, 3600),
    SessionStart(),
]


CAROL = Identity(bytes([3]) * 32)
DAVE = Identity(bytes([4]) * 32)


def i2p_destination() -> str:
    # 384 bytes of keys, then a key certificate (type 5) of 4 bytes.
    return i2p_b64encode(bytes(range(256)) + bytes(128) + b"\x05\x00\x04\x00\x07\x00\x04")


def handshake_transcript() -> tuple[bytes, bytes]:
    """(initiator's bytes, responder's bytes) of a real handshake plus a few messages."""
    from twisted.internet.task import Clock

    clock = Clock()
    alice = Link.initiator(ALICE, BOB.public_key, clock, ephemeral_private=ALICE_EPHEMERAL)
    bob = Link.responder(BOB, clock, ephemeral_private=BOB_EPHEMERAL)
    alice.connection_made()
    bob.connection_made()
    sent, answered = bytearray(), bytearray()
    for message in LINK_MESSAGES[:4]:
        alice.send_message(message)
    for _ in range(3):
        out = alice.data_to_send()
        sent += out
        bob.receive_data(out)
        back = bob.data_to_send()
        answered += back
        alice.receive_data(back)
    assert bob.established and not bob.closed
    return bytes(sent), bytes(answered)


def noise_seeds() -> list[bytes]:
    initiator = XKHandshake.initiator(
        ALICE.x25519_private, BOB.x25519_public, PROLOGUE, ephemeral_private=ALICE_EPHEMERAL
    )
    responder = XKHandshake.responder(BOB.x25519_private, PROLOGUE, ephemeral_private=BOB_EPHEMERAL)
    one = initiator.write_message()
    responder.read_message(one)
    two = responder.write_message()
    initiator.read_message(two)
    three = initiator.write_message(ALICE.public_key)
    responder.read_message(three)

    def framed(*messages: bytes) -> bytes:
        return b"".join(struct.pack(">H", len(m)) + m for m in messages)

    return [b"\x00" + framed(one, three), b"\x01" + framed(two), b"\x00" + framed(one)]


def envelope_seeds() -> list[bytes]:
    """ALICE opens a session and sends; BOB's state after the first goes to the fixture."""
    first = seal(ALICE, BOB.public_key, None, b"\x01" * 16, SessionStart())
    assert first.ratchet is not None and first.envelope is not None
    alice_ratchet = first.ratchet
    initial = decode(first.envelope)
    assert isinstance(initial, Envelope)
    bob_ratchet, _ = open_envelope(BOB, ALICE.public_key, None, initial)
    FIXTURES.mkdir(exist_ok=True)
    (FIXTURES / "bob_ratchet.json").write_text(bob_ratchet.to_json())
    seeds = [envelope_to_bytes(False, initial), envelope_to_bytes(True, initial)]
    for number, content in enumerate(CONTENT_MESSAGES, start=2):
        later = seal(ALICE, BOB.public_key, alice_ratchet, bytes([number]) * 16, content)
        assert later.envelope is not None
        envelope = decode(later.envelope)
        assert isinstance(envelope, Envelope)
        seeds.append(envelope_to_bytes(True, envelope))
    return seeds


def control_seeds() -> list[bytes]:
    requests: list[tuple[str, dict[str, object]]] = [
        ("status", {}),
        ("contacts.list", {}),
        ("contacts.add", {"address": BOB.onion_address, "name": "bob2"}),  # already one
        ("contacts.add", {"address": DAVE.onion_address, "name": "dave", "message": "hi"}),
        ("contacts.add", {"address": CAROL.onion_address, "tcp": "127.0.0.1:9"}),
        ("contacts.block", {"contact": "bob"}),
        ("contacts.unblock", {"contact": "bob"}),
        ("contacts.rename", {"contact": "bob", "name": "bob"}),
        ("contacts.remove", {"contact": "nobody"}),
        ("contacts.expire", {"contact": "bob", "seconds": 3600}),
        ("contacts.verify", {"contact": "bob", "confirm": True}),
        ("requests.list", {}),
        ("requests.accept", {"id": 1, "name": "carol"}),
        ("requests.reject", {"id": 2}),
        ("requests.block", {"id": 3}),
        ("settings.block_unknown", {"on": True}),
        ("settings.invisible", {"on": False}),
        ("cover.set", {"profile": "off"}),
        ("cover.set", {"payload_rate": 0.5, "loop_rate": 0.1}),
        ("send", {"contact": "bob", "text": "hello \u00e9"}),
        ("messages", {"contact": "bob", "after": 0}),
        ("messages.search", {"query": "hel", "limit": 10}),
        ("subscribe", {}),
    ]
    return [
        json.dumps({"id": n, "method": method, "params": params}).encode()
        for n, (method, params) in enumerate(requests, start=1)
    ]


def address_seeds() -> list[bytes]:
    destination = i2p_destination()
    return [
        ALICE.onion_address.encode(),
        (BOB.onion_address + ".onion").encode(),
        BOB.onion_address.upper().encode(),
        make_contact_string(ALICE).encode(),
        make_contact_string(BOB, destination).encode(),
        destination.encode(),
    ]


def sam_seeds() -> list[bytes]:
    destination = i2p_destination()
    return [
        b"HELLO REPLY RESULT=OK VERSION=3.1\n"
        + f"SESSION STATUS RESULT=OK DESTINATION={destination}\n".encode()
        + b"STREAM STATUS RESULT=OK\n"
        + f"{destination} FROM_PORT=0 TO_PORT=0\n".encode()
        + b"stream bytes",
        b"HELLO REPLY RESULT=OK VERSION=3.1\n"
        b'SESSION STATUS RESULT=DUPLICATED_ID MESSAGE="in use"\n',
        b"HELLO REPLY RESULT=NOVERSION\n",
    ]


def main() -> None:
    sent, _ = handshake_transcript()
    plaintexts = [b"".join(cells.fragment(encode(m))) for m in LINK_MESSAGES]
    first_cell = sent[: cells.CELL_SIZE]
    _, _ = established_pair()  # the fixed ephemerals still give a working pair
    seeds: dict[str, list[bytes]] = {
        "cells": [*plaintexts, cells.padding_inner() + plaintexts[0], first_cell],
        "messages": [encode(m) for m in LINK_MESSAGES + CONTENT_MESSAGES],
        # The first byte picks the chunk size (see responder_fed).
        "handshake": [b"\x00" + sent, b"\x3f" + sent, b"\x05" + first_cell],
        "link": [*plaintexts, cells.padding_inner() + plaintexts[1]],
        "noise": noise_seeds(),
        "envelope": envelope_seeds(),
        "control": control_seeds(),
        "address": address_seeds(),
        "sam": sam_seeds(),
    }
    for name, inputs in seeds.items():
        directory = CORPUS / name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        for data in inputs:
            (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)  # noqa: S324 - a name
        print(f"{name}: {len(inputs)} seeds")


if __name__ == "__main__":
    main()
