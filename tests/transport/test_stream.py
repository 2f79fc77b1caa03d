"""The Twisted edge of a link (onionmsg/transport/stream.py)."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from onionmsg.crypto.identity import Identity
from onionmsg.session.link import HANDSHAKE_TIMEOUT, Link, LinkClosed, LinkEvent
from onionmsg.transport.stream import LinkProtocol


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
