"""The link handshake and encrypted cells, driven in memory with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from onionmsg.crypto.identity import Identity
from onionmsg.session.link import (
    HANDSHAKE_TIMEOUT,
    Link,
    LinkClosed,
    LinkEstablished,
    MessageReceived,
)
from onionmsg.wire.cells import CELL_SIZE
from onionmsg.wire.messages import Ack, Envelope


def carrying(message_id: bytes, number: int, text: str) -> Envelope:
    """A link message carrying ``text`` (the link does not look inside envelopes)."""
    return Envelope(message_id, bytes(32), 0, number, text.encode())


ALICE = Identity(bytes([1]) * 32)
BOB = Identity(bytes([2]) * 32)
MALLORY = Identity(bytes([3]) * 32)


def pair(
    initiator_identity: Identity = ALICE,
    expected_responder: Identity = BOB,
    responder_identity: Identity = BOB,
) -> tuple[Link, Link, Clock]:
    clock = Clock()
    a = Link.initiator(initiator_identity, expected_responder.public_key, clock)
    b = Link.responder(responder_identity, clock)
    a.connection_made()
    b.connection_made()
    return a, b, clock


def pump(a: Link, b: Link) -> None:
    """Move bytes both ways until both are quiet."""
    for _ in range(20):
        ab, ba = a.data_to_send(), b.data_to_send()
        if not ab and not ba:
            return
        assert len(ab) % CELL_SIZE == 0 and len(ba) % CELL_SIZE == 0
        if ab:
            b.receive_data(ab)
        if ba:
            a.receive_data(ba)
    raise AssertionError("links never went quiet")


def test_handshake_establishes_and_authenticates_both_sides() -> None:
    a, b, clock = pair()
    pump(a, b)
    assert a.events() == [LinkEstablished(BOB.onion_address)]
    assert b.events() == [LinkEstablished(ALICE.onion_address)]
    assert a.established and b.established
    assert a.handshake_hash == b.handshake_hash
    assert not clock.getDelayedCalls()  # the handshake timeout was cancelled


def test_messages_flow_both_ways_including_multi_cell_ones() -> None:
    a, b, _ = pair()
    pump(a, b)
    a.events(), b.events()
    long_text = "x" * 5000
    a.send_message(carrying(b"\x01" * 16, 1, "hello"))
    a.send_message(carrying(b"\x02" * 16, 2, long_text))
    b.send_message(Ack(b"\x01" * 16))
    pump(a, b)
    assert b.events() == [
        MessageReceived(carrying(b"\x01" * 16, 1, "hello")),
        MessageReceived(carrying(b"\x02" * 16, 2, long_text)),
    ]
    assert a.events() == [MessageReceived(Ack(b"\x01" * 16))]


def test_messages_queued_before_the_handshake_leave_after_it() -> None:
    a, b, _ = pair()
    a.send_message(carrying(b"\x01" * 16, 1, "early"))
    pump(a, b)
    assert MessageReceived(carrying(b"\x01" * 16, 1, "early")) in b.events()


def test_wrong_responder_key_fails_for_the_initiator() -> None:
    # Alice dials what she thinks is Bob, but Mallory answers.
    a, m, clock = pair(expected_responder=BOB, responder_identity=MALLORY)
    pump(a, m)
    # Message 1 is encrypted to Bob's key (es): Mallory cannot even read it.
    (event,) = m.events()
    assert isinstance(event, LinkClosed) and event.error
    assert not a.established and not m.established
    clock.advance(HANDSHAKE_TIMEOUT + 1)
    assert a.events() == [LinkClosed("handshake timed out", True)]


def test_initiator_cannot_claim_another_identity() -> None:
    # Mallory runs the handshake with her own static key but claims Alice's Ed25519 key.
    clock = Clock()
    m = Link.initiator(ALICE_CLAIM, BOB.public_key, clock)
    b = Link.responder(BOB, clock)
    m.connection_made()
    b.connection_made()
    pump(m, b)
    (event,) = b.events()
    assert isinstance(event, LinkClosed) and "does not hold" in event.reason
    assert not b.established


class _Claim(Identity):
    """Mallory's keys, but Alice's public key in the identity payload."""

    @property
    def public_key(self) -> bytes:
        return ALICE.public_key


ALICE_CLAIM = _Claim(MALLORY.seed)


def test_handshake_times_out() -> None:
    a, _b, clock = pair()
    a.data_to_send()
    clock.advance(HANDSHAKE_TIMEOUT + 1)
    (event,) = a.events()
    assert event == LinkClosed("handshake timed out", True)
    assert a.closed


def _established() -> tuple[Link, Link]:
    a, b, _ = pair()
    pump(a, b)
    a.events(), b.events()
    return a, b


def test_tampered_cell_closes_the_link() -> None:
    a, b = _established()
    a.send_message(carrying(b"\x01" * 16, 1, "hi"))
    cell = bytearray(a.data_to_send())
    cell[100] ^= 1
    b.receive_data(bytes(cell))
    (event,) = b.events()
    assert isinstance(event, LinkClosed) and event.error
    assert b.closed


def test_replayed_cell_closes_the_link() -> None:
    a, b = _established()
    a.send_message(carrying(b"\x01" * 16, 1, "hi"))
    cell = a.data_to_send()
    b.receive_data(cell)
    assert len(b.events()) == 1
    b.receive_data(cell)
    (event,) = b.events()
    assert isinstance(event, LinkClosed) and event.error


def test_reordered_cells_close_the_link() -> None:
    a, b = _established()
    a.send_message(carrying(b"\x01" * 16, 1, "one"))
    first = a.data_to_send()
    a.send_message(carrying(b"\x02" * 16, 2, "two"))
    second = a.data_to_send()
    b.receive_data(second + first)
    (event,) = b.events()
    assert isinstance(event, LinkClosed) and event.error


def test_drop_cells_are_silent_and_look_like_real_ones() -> None:
    a, b = _established()
    drop = a.drop_cell()
    assert drop is not None and len(drop) == CELL_SIZE
    b.receive_data(drop)
    assert b.events() == []
    assert b.established


@settings(max_examples=200)
@given(st.binary(min_size=0, max_size=3 * CELL_SIZE))
def test_garbage_before_the_handshake_closes_only_this_link(garbage: bytes) -> None:
    clock = Clock()
    b = Link.responder(BOB, clock)
    b.connection_made()
    b.receive_data(garbage)
    events = b.events()
    if len(garbage) < CELL_SIZE:
        assert events == []  # waits for a whole cell (and the timeout)
    else:
        assert len(events) == 1 and isinstance(events[0], LinkClosed) and events[0].error
        assert b.data_to_send() == b"" or len(b.data_to_send()) % CELL_SIZE == 0


@settings(max_examples=100)
@given(st.binary(min_size=CELL_SIZE, max_size=2 * CELL_SIZE))
def test_garbage_after_the_handshake_closes_the_link(garbage: bytes) -> None:
    _a, b = _established()
    b.receive_data(garbage)
    (event,) = b.events()
    assert isinstance(event, LinkClosed) and event.error


def test_truncated_handshake_waits_then_times_out() -> None:
    a, _b, clock = pair()
    first = a.data_to_send()
    for cut in (1, CELL_SIZE // 2, CELL_SIZE - 1):
        fresh = Link.responder(BOB, clock)
        fresh.connection_made()
        fresh.receive_data(first[:cut])
        assert fresh.events() == [] and fresh.pending_input == cut
    clock.advance(HANDSHAKE_TIMEOUT + 1)


def test_replayed_handshake_does_not_establish() -> None:
    # An observer records Alice's first and third handshake cells and replays them.
    a, b, clock = pair()
    m1 = a.data_to_send()
    b.receive_data(m1)
    m2 = b.data_to_send()
    a.receive_data(m2)
    m3 = a.data_to_send()
    b.receive_data(m3)
    assert b.established
    replay = Link.responder(BOB, clock)
    replay.connection_made()
    replay.receive_data(m1)
    assert replay.data_to_send() != m2  # a fresh ephemeral key
    replay.receive_data(m3[:CELL_SIZE])
    (event,) = replay.events()
    assert isinstance(event, LinkClosed) and event.error
    assert not replay.established


def test_close_and_connection_lost_emit_one_event() -> None:
    a, _b = _established()
    a.close("bye")
    a.connection_lost("gone")
    assert a.events() == [LinkClosed("bye", False)]
    a.send_message(Ack(b"\x00" * 16))  # ignored after close
    assert a.data_to_send() == b""


@pytest.mark.parametrize("cut", [0, 1, 500, CELL_SIZE - 1])
def test_cells_split_anywhere_reassemble(cut: int) -> None:
    a, b = _established()
    a.send_message(carrying(b"\x05" * 16, 5, "split"))
    data = a.data_to_send()
    b.receive_data(data[:cut])
    b.receive_data(data[cut:])
    assert b.events() == [MessageReceived(carrying(b"\x05" * 16, 5, "split"))]
