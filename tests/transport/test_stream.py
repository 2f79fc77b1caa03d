"""The Twisted edge of a link (onionmsg/transport/stream.py)."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from onionmsg.crypto.identity import Identity
from onionmsg.session.link import (
    HANDSHAKE_TIMEOUT,
    PARTIAL_CELL_TIMEOUT,
    Link,
    LinkClosed,
    LinkEstablished,
    LinkEvent,
    MessageReceived,
)
from onionmsg.transport.stream import MAX_CELLS_PER_TURN, LinkProtocol
from onionmsg.wire.messages import Hello


def test_a_peer_that_stalls_in_the_handshake_is_disconnected_on_time() -> None:
    clock = Clock()
    seen: list[LinkEvent] = []
    protocol = LinkProtocol(
        Link.responder(Identity(bytes(32)), clock), lambda _, events: seen.extend(events)
    )
    transport = StringTransport()
    protocol.makeConnection(transport)  # type: ignore[no-untyped-call]
    protocol.dataReceived(b"\x00" * 40)  # part of a handshake cell, then nothing
    clock.advance(HANDSHAKE_TIMEOUT - 1)
    held = not transport.disconnecting
    clock.advance(1)
    # Nothing arrives to wake the protocol: the link's own timer must close the socket.
    assert held and transport.disconnecting
    assert [type(e) for e in seen] == [LinkClosed]
    assert transport.value() == b""  # a responder says nothing before a valid first cell


def test_a_contact_that_stalls_mid_cell_after_the_handshake_is_disconnected() -> None:
    clock = Clock()
    alice, bob = Identity(bytes([1]) * 32), Identity(bytes([2]) * 32)
    initiator = Link.initiator(alice, bob.public_key, clock)
    initiator.connection_made()
    seen: list[LinkEvent] = []
    protocol = LinkProtocol(Link.responder(bob, clock), lambda _, events: seen.extend(events))
    transport = StringTransport()
    protocol.makeConnection(transport)  # type: ignore[no-untyped-call]
    for _ in range(2):
        protocol.dataReceived(initiator.data_to_send())
        initiator.receive_data(transport.value())
        transport.clear()
    assert protocol.link.established
    initiator.send_message(Hello())
    protocol.dataReceived(initiator.data_to_send()[:500])  # half a cell, then nothing
    clock.advance(PARTIAL_CELL_TIMEOUT - 1)
    held = not transport.disconnecting
    clock.advance(1)
    assert held and transport.disconnecting
    assert [type(e) for e in seen] == [LinkEstablished, LinkClosed]


def test_a_burst_of_cells_is_read_a_few_per_reactor_turn_with_reading_paused() -> None:
    clock = Clock()
    alice, bob = Identity(bytes([1]) * 32), Identity(bytes([2]) * 32)
    initiator = Link.initiator(alice, bob.public_key, clock)
    initiator.connection_made()
    seen: list[LinkEvent] = []
    protocol = LinkProtocol(Link.responder(bob, clock), lambda _, events: seen.extend(events))
    transport = StringTransport()
    protocol.makeConnection(transport)  # type: ignore[no-untyped-call]
    for _ in range(2):
        protocol.dataReceived(initiator.data_to_send())
        initiator.receive_data(transport.value())
        transport.clear()
    seen.clear()
    burst = 2 * MAX_CELLS_PER_TURN + 1
    for _ in range(burst):
        initiator.send_message(Hello())
    protocol.dataReceived(initiator.data_to_send())
    # One read handles a few cells; the rest waits for later turns, with reading paused.
    assert len(seen) == MAX_CELLS_PER_TURN
    assert transport.producerState == "paused"
    assert [call.getTime() for call in clock.getDelayedCalls()] == [0]
    clock.advance(0)  # (the fake clock also runs the calls these turns schedule)
    assert len(seen) == burst and all(isinstance(e, MessageReceived) for e in seen)
    assert transport.producerState == "producing"
    assert clock.getDelayedCalls() == []
