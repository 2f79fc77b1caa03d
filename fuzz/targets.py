"""Fuzz targets: one function per parser a peer (or a local client) can feed bytes to.

Each target takes arbitrary bytes and asserts the parser's contract: it either accepts
the input (and then the result satisfies the invariants checked here), or raises the
protocol's own error (ProtocolError, AddressError, ContactStringError, SAMError, ...).
Any other exception, or a broken invariant, is a finding. The targets are plain
functions, so atheris (fuzz/run.py), pytest (tests/test_fuzz_smoke.py) and a debugger
can all call them.
"""

from __future__ import annotations

import contextlib
import json
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from onionmsg.contacts.contact_string import ContactStringError, parse_contact_string
from onionmsg.control.api import ControlProtocol
from onionmsg.crypto.identity import (
    Identity,
    normalize_onion_address,
    onion_address_from_public_key,
    parse_onion_address,
)
from onionmsg.crypto.noise import XKHandshake
from onionmsg.crypto.ratchet import Ratchet
from onionmsg.delivery.envelopes import open_envelope
from onionmsg.errors import AddressError, ProtocolError
from onionmsg.node import Node
from onionmsg.session.link import PROLOGUE, Link, LinkClosed, LinkEstablished, MessageReceived
from onionmsg.store.db import Contact, Store
from onionmsg.transport.sam import SAMConnection, SAMError, parse_destination, parse_reply
from onionmsg.wire import cells
from onionmsg.wire.messages import Envelope, Message, decode, decode_content, encode

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = Path(__file__).parent / "corpus"

# Fixed test identities: ALICE sorts first, so she is the ratchet initiator towards BOB.
ALICE = Identity(bytes([5]) * 32)
BOB = Identity(bytes([2]) * 32)
assert ALICE.public_key < BOB.public_key
# Fixed ephemerals make a handshake transcript reproducible, so a recorded one (in the
# corpus) completes again against a fresh responder and the fuzzer starts past it.
ALICE_EPHEMERAL = bytes([11]) * 32
BOB_EPHEMERAL = bytes([12]) * 32


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    max_len: int  # libFuzzer's -max_len: the longest input worth trying
    doc: str


TARGETS: dict[str, Target] = {}


def target(max_len: int) -> Callable[[Callable[[bytes], None]], Callable[[bytes], None]]:
    def register(function: Callable[[bytes], None]) -> Callable[[bytes], None]:
        name = function.__name__.removeprefix("fuzz_")
        doc = (function.__doc__ or "").strip().splitlines()[0]
        TARGETS[name] = Target(name, function, max_len, doc)
        return function

    return register


def _text(data: bytes) -> str:
    # surrogateescape: every byte string is some str, lone surrogates included (JSON
    # and the UI can hand those to a parser too).
    return data.decode("utf-8", "surrogateescape")


# -- cells ---------------------------------------------------------------------------------


@target(max_len=4 * cells.CELL_SIZE)
def fuzz_cells(data: bytes) -> None:
    """Cell framing and reassembly: CellBuffer, Reassembler, handshake cells."""
    # CellBuffer: any chunking yields the stream's whole cells, in order, and no more.
    buffer = cells.CellBuffer()
    step = 1 + (data[0] if data else 0) * 8
    whole = [c for i in range(0, len(data), step) for c in buffer.feed(data[i : i + step])]
    assert b"".join(whole) == data[: len(whole) * cells.CELL_SIZE]
    assert buffer.pending == len(data) % cells.CELL_SIZE

    # Handshake cell: only ProtocolError, and what it accepts it packs back identically.
    first = data[: cells.CELL_SIZE].ljust(cells.CELL_SIZE, b"\x00")
    try:
        noise_message = cells.unpack_handshake_cell(first)
    except ProtocolError:
        pass
    else:
        assert cells.pack_handshake_cell(noise_message) == first

    # Reassembler over the input cut into cell plaintexts (the last one zero-padded).
    reassembler = cells.Reassembler()
    since_begin: list[bytes] = []
    for offset in range(0, len(data), cells.INNER_SIZE):
        inner = data[offset : offset + cells.INNER_SIZE].ljust(cells.INNER_SIZE, b"\x00")
        try:
            message = reassembler.feed(inner)
        except ProtocolError:
            return  # the link closes: nothing after this cell is read
        if inner[0] != cells.CellKind.PADDING:
            since_begin.append(inner)
        if message is not None:
            # One layout per message: the cells that carried it are exactly the ones
            # we would have cut it into.
            assert 0 < len(message) <= reassembler._max
            assert cells.fragment(message) == since_begin
            since_begin = []
            with contextlib.suppress(ProtocolError):
                decode(message)


# -- message schema ------------------------------------------------------------------------


@target(max_len=4096)
def fuzz_messages(data: bytes) -> None:
    """Message schema decoder: decode() and decode_content(); canonical round trip."""
    for decoder in (decode, decode_content):
        try:
            message = decoder(data)
        except ProtocolError:
            continue
        assert isinstance(message, Message)
        assert encode(message) == data  # decode -> encode is byte-identical


# -- handshake and link ----------------------------------------------------------------------


def responder_fed(data: bytes) -> tuple[Link, list[Any]]:
    """A fresh responder (BOB, fixed ephemeral) fed ``data`` in chunks; its events."""
    link = Link.responder(BOB, Clock(), ephemeral_private=BOB_EPHEMERAL)
    link.connection_made()
    events: list[Any] = []
    # The first byte picks the chunking, so split cells and many cells per write both occur.
    step = 1 + (data[0] if data else 0) * 16
    for offset in range(1, len(data), step):
        link.receive_data(data[offset : offset + step])  # must never raise
        events += link.events()
        link.data_to_send()
    return link, events


def _check_link_events(link: Link, events: list[Any]) -> None:
    established = [i for i, e in enumerate(events) if isinstance(e, LinkEstablished)]
    closed = [i for i, e in enumerate(events) if isinstance(e, LinkClosed)]
    received = [i for i, e in enumerate(events) if isinstance(e, MessageReceived)]
    assert len(established) <= 1 and len(closed) <= 1
    assert link.closed == bool(closed)
    if closed:
        assert closed[0] == len(events) - 1  # closed is terminal: nothing after it
        assert events[-1].error  # only the peer's bytes can have closed it here
    if received:
        assert established and established[0] < received[0]
    if established:
        assert events[established[0]].remote_address == link.remote_address
        assert link.remote_public_key is not None
    assert link.pending_input < cells.CELL_SIZE


@target(max_len=8 * cells.CELL_SIZE)
def fuzz_handshake(data: bytes) -> None:
    """Link handshake: Link.responder fed arbitrary bytes (seeds: real transcripts)."""
    link, events = responder_fed(data)
    _check_link_events(link, events)


def established_pair() -> tuple[Link, Link]:
    """ALICE (initiator) and BOB (responder) after a real in-memory handshake."""
    clock = Clock()
    alice = Link.initiator(ALICE, BOB.public_key, clock, ephemeral_private=ALICE_EPHEMERAL)
    bob = Link.responder(BOB, clock, ephemeral_private=BOB_EPHEMERAL)
    alice.connection_made()
    bob.connection_made()
    for _ in range(3):
        bob.receive_data(alice.data_to_send())
        alice.receive_data(bob.data_to_send())
    assert alice.established and bob.established
    alice.events(), bob.events()
    return alice, bob


@target(max_len=8 * cells.INNER_SIZE)
def fuzz_link(data: bytes) -> None:
    """Established link: arbitrary cell plaintexts, correctly encrypted by the peer."""
    alice, bob = established_pair()
    sender = alice._core.sender
    assert sender is not None
    events: list[Any] = []
    for offset in range(0, len(data), cells.INNER_SIZE):
        inner = data[offset : offset + cells.INNER_SIZE].ljust(cells.INNER_SIZE, b"\x00")
        bob.receive_data(sender.encrypt_with_ad(b"", inner))
        events += bob.events()
    _check_link_events(bob, [LinkEstablished(ALICE.onion_address), *events])


@target(max_len=1024)
def fuzz_noise(data: bytes) -> None:
    """Noise XK: responder reads messages 1 and 3, initiator reads message 2."""
    initiator = bool(data and data[0] & 1)
    if initiator:
        handshake = XKHandshake.initiator(
            ALICE.x25519_private, BOB.x25519_public, PROLOGUE, ephemeral_private=ALICE_EPHEMERAL
        )
        handshake.write_message()
    else:
        handshake = XKHandshake.responder(
            BOB.x25519_private, PROLOGUE, ephemeral_private=BOB_EPHEMERAL
        )
    # The rest is a sequence of u16-length-prefixed handshake messages.
    rest, failed = data[1:], False
    while len(rest) >= 2:
        (length,) = struct.unpack_from(">H", rest)
        message, rest = rest[2 : 2 + length], rest[2 + length :]
        try:
            handshake.read_message(message)
        except ProtocolError:
            failed = True
            continue  # a failed handshake must keep failing with ProtocolError
        assert not failed
        if not handshake.complete:
            handshake.write_message(ALICE.public_key if initiator else b"")
    if handshake.complete and not initiator:
        assert handshake.remote_static_public is not None


# -- ratchet envelopes -------------------------------------------------------------------------

_ENVELOPE_HEAD = struct.Struct(">16s32sII")


def envelope_from_bytes(data: bytes) -> tuple[bool, Envelope]:
    """(with a session?, the envelope): the layout of fuzz/corpus/envelope/ seeds."""
    head = data[1 : 1 + _ENVELOPE_HEAD.size].ljust(_ENVELOPE_HEAD.size, b"\x00")
    message_id, ratchet_public, previous, number = _ENVELOPE_HEAD.unpack(head)
    ciphertext = data[1 + _ENVELOPE_HEAD.size :]
    with_session = bool(data and data[0] & 1)
    return with_session, Envelope(message_id, ratchet_public, previous, number, ciphertext)


def envelope_to_bytes(with_session: bool, envelope: Envelope) -> bytes:
    head = _ENVELOPE_HEAD.pack(
        envelope.message_id,
        envelope.ratchet_public,
        envelope.previous_chain_length,
        envelope.chain_length,
    )
    return bytes([with_session]) + head + envelope.ciphertext


_bob_session: str | None = None


def bob_session() -> str:
    """BOB's ratchet session with ALICE, as fuzz/make_corpus.py recorded it."""
    global _bob_session
    if _bob_session is None:
        _bob_session = (FIXTURES / "bob_ratchet.json").read_text()
    return _bob_session


@target(max_len=2048)
def fuzz_envelope(data: bytes) -> None:
    """Ratchet envelope opener: open_envelope with random headers and ciphertexts."""
    with_session, envelope = envelope_from_bytes(data)
    ratchet = Ratchet.from_json(bob_session()) if with_session else None
    before = ratchet.to_json() if ratchet is not None else None
    try:
        new, content = open_envelope(BOB, ALICE.public_key, ratchet, envelope)
    except ProtocolError:
        # On failure the session is unchanged (the caller keeps using it).
        assert (ratchet.to_json() if ratchet is not None else None) == before
        return
    assert isinstance(content, Message)
    assert isinstance(new, Ratchet)


# -- control API -----------------------------------------------------------------------------


class _NoTransport:
    """A transport that listens nowhere and reaches nobody (the control target needs none)."""

    name = "none"

    async def listen(self, factory: IProtocolFactory) -> str:
        return "nowhere"

    def client_endpoint(self, contact: Contact) -> IStreamClientEndpoint | None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {}

    def add_status_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        return None


_control: tuple[ControlProtocol, StringTransport] | None = None


def control_protocol() -> tuple[ControlProtocol, StringTransport]:
    """One real Node (a throwaway store, no network) behind a ControlProtocol."""
    global _control
    if _control is None:
        home = Path(tempfile.mkdtemp(prefix="onionmsg-fuzz-", dir=_fast_tmp()))
        store = Store.create(home / "store.db", bytes(32), ALICE)
        node = Node(store, _NoTransport(), Clock(), wall_clock_ms=lambda: 1_700_000_000_000)
        Deferred.fromCoroutine(node.start())
        node.add_contact(BOB.onion_address, "bob", None)
        protocol = ControlProtocol(node)
        transport = StringTransport()
        protocol.makeConnection(transport)  # type: ignore[no-untyped-call]
        _control = protocol, transport
    return _control


def _fast_tmp() -> str | None:
    shm = Path("/dev/shm")  # noqa: S108 - a private mkdtemp inside it; fsync is free there
    return str(shm) if shm.is_dir() else None


@target(max_len=2048)
def fuzz_control(data: bytes) -> None:
    """Control API: one request line to a real node; never an "internal error" reply."""
    protocol, transport = control_protocol()
    transport.clear()
    protocol.lineReceived(data)
    documents = [json.loads(line) for line in transport.value().splitlines()]
    # After a "subscribe", events may come along; exactly one reply answers the request.
    replies = [d for d in documents if "event" not in d]
    assert len(replies) == 1, documents
    (reply,) = replies
    assert set(reply) in ({"id", "result"}, {"id", "error"}), reply
    assert "internal error" not in str(reply.get("error", "")), (data, reply)


# -- addresses and SAM -------------------------------------------------------------------------


@target(max_len=4096)
def fuzz_address(data: bytes) -> None:
    """Address parsing: onion addresses, onionmsg: contact strings, I2P destinations."""
    text = _text(data)
    try:
        public_key = parse_onion_address(text)
    except AddressError:
        pass
    else:
        canonical = normalize_onion_address(text)
        assert canonical == onion_address_from_public_key(public_key)
        assert parse_onion_address(canonical) == public_key
    try:
        card = parse_contact_string(text)
    except ContactStringError:
        pass
    else:
        assert normalize_onion_address(card.address) == card.address
        if card.i2p_destination is not None:
            parse_destination(card.i2p_destination)
    with contextlib.suppress(SAMError):
        parse_destination(text)


@target(max_len=4096)
def fuzz_sam(data: bytes) -> None:
    """SAM bridge replies: parse_reply and a SAMConnection fed the router's bytes."""
    try:
        reply = parse_reply(_text(data.split(b"\n", 1)[0]))
    except SAMError:
        pass
    else:
        assert len(reply.topic.split(" ")) >= 2
    connection = SAMConnection()
    connection.request("SESSION CREATE", STYLE="STREAM", ID="fuzz", DESTINATION="TRANSIENT")
    connection.request("STREAM ACCEPT", ID="fuzz")
    step = 1 + (data[0] if data else 0)
    for offset in range(0, len(data), step):
        try:
            connection.receive_data(data[offset : offset + step])
        except SAMError:
            # The connection is dead: it must refuse anything more with SAMError too.
            try:
                connection.receive_data(b"x")
            except SAMError:
                return
            raise AssertionError("data accepted after a SAM error") from None
