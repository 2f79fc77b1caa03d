"""Regression tests for what the fuzzers found (docs/architecture.md, "Fuzzing")."""

from __future__ import annotations

import json

import pytest
from twisted.internet.task import Clock

from fuzz.targets import control_protocol
from onionmsg.contacts.contact_string import ContactStringError, parse_contact_string
from onionmsg.crypto.identity import Identity, parse_onion_address
from onionmsg.errors import AddressError
from onionmsg.session.link import Link, LinkClosed
from onionmsg.wire.cells import CELL_SIZE

ALICE = Identity(bytes([5]) * 32)


@pytest.mark.parametrize("padding", ["=", "====", "A" * 7 + "=" * 1])
def test_base32_padding_in_an_address_is_an_address_error(padding: str) -> None:
    # Found by fuzz_address: 56 characters ending in "=" decoded to fewer than 35 bytes and
    # parse_onion_address raised IndexError (an "internal error" on the control API, an
    # uncaught exception in the UI's add-contact dialog).
    text = ALICE.onion_address[: 56 - len(padding)] + padding
    with pytest.raises(AddressError, match="only use the letters"):
        parse_onion_address(text)
    with pytest.raises(AddressError):
        parse_onion_address(text.upper() + ".onion")
    with pytest.raises(ContactStringError, match="address is wrong"):
        parse_contact_string(f"onionmsg:{text}?v=1&sig=AAAA")


def test_a_closed_link_does_not_buffer_what_it_no_longer_reads() -> None:
    # Found by fuzz_handshake: after a protocol error closed the link, the rest of the
    # chunk and every later chunk kept piling up in its cell buffer.
    link = Link.responder(ALICE, Clock())
    link.connection_made()
    link.receive_data(b"\xff" * CELL_SIZE * 3 + b"\x00" * 10)  # the first cell is invalid
    assert link.closed
    assert [type(e) for e in link.events()] == [LinkClosed]
    assert link.pending_input == 0
    link.receive_data(b"\x00" * CELL_SIZE * 5)
    assert link.pending_input == 0
    assert link.events() == []


@pytest.mark.parametrize(
    "request_line",
    [
        b'{"id": 1, "method": "messages", "params": {"after": 2055555555555555555555555}}',
        b'{"id": 1, "method": "requests.accept", "params": {"id": 9223372036854775808}}',
    ],
)
def test_integers_past_64_bits_are_a_request_error(request_line: bytes) -> None:
    # Found by fuzz_control: an "after" beyond SQLite's 64-bit integers reached the store,
    # which raised OverflowError: the client got "internal error" instead of a reason.
    protocol, transport = control_protocol()
    transport.clear()
    protocol.lineReceived(request_line)
    (reply,) = [json.loads(line) for line in transport.value().splitlines()]
    assert reply["id"] == 1
    assert "must be an integer" in reply["error"]
