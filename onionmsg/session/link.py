"""One peer link as a sans-IO state machine: connecting -> handshaking -> established -> closed.

The link consumes bytes (`receive_data`) and the time (an injected IReactorTime), and
produces bytes to write (`data_to_send`) and events (`events`). It never touches a
socket. The handshake is Noise XK (onionmsg.crypto.noise) over X25519 keys converted
from the two Ed25519 identity keys:

* the initiator knows the responder's identity from its onion address, and the
  handshake only completes if the responder holds that key (``es``, ``ee``);
* the initiator sends its Ed25519 public key as the payload of message 3, and the
  responder checks that it converts to the static key the initiator proved (``se``).

No signature is made, so a transcript proves nothing to a third party (deniability).
After the handshake every cell is ChaCha20-Poly1305 with an implicit counter nonce,
so a replayed, reordered, dropped or altered cell fails to decrypt and closes the link.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from automat import TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from onionmsg.crypto.identity import (
    Identity,
    ed25519_public_to_x25519,
    onion_address_from_public_key,
)
from onionmsg.crypto.noise import CipherState, XKHandshake
from onionmsg.errors import ProtocolError
from onionmsg.wire import cells
from onionmsg.wire.messages import Message, decode, encode

PROLOGUE = b"onionmsg link v1"
# Handshake cells leave at once (outside the cover schedule), so three of them take 1.5
# round trips: seconds even over Tor. Ricochet closes unknown connections after 15 s too.
HANDSHAKE_TIMEOUT = 15.0
# An established link whose peer sent part of a cell and then nothing for this long is
# closed: a cell's two Tor relay cells travel back to back, so a half cell that old means
# a dead circuit or a peer holding the link open on purpose. An idle link with no partial
# cell is never closed (with cover traffic off, a quiet contact is normal).
PARTIAL_CELL_TIMEOUT = 30.0
# Re-key each direction every this many cells (Noise Rekey): old cells stay unreadable
# with a key stolen later, even on a link that lives for weeks.
REKEY_INTERVAL = 10_000


class Role(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


@dataclass(frozen=True)
class LinkEstablished:
    remote_address: str


@dataclass(frozen=True)
class MessageReceived:
    message: Message


@dataclass(frozen=True)
class LinkClosed:
    reason: str
    error: bool


LinkEvent = LinkEstablished | MessageReceived | LinkClosed


class LinkInputs(Protocol):
    """Inputs of the link state machine (what can happen to a link)."""

    def connection_made(self) -> None: ...
    def cell_received(self, cell: bytes) -> None: ...
    def handshake_completed(self) -> None: ...
    def send_message(self, message: Message) -> None: ...
    def close(self, reason: str) -> None: ...
    def connection_lost(self, reason: str) -> None: ...
    def protocol_error(self, reason: str) -> None: ...
    def handshake_timed_out(self) -> None: ...
    def stalled_mid_cell(self) -> None: ...


@dataclass
class LinkCore:
    """Everything the link knows; the state machine decides what may change it."""

    role: Role
    identity: Identity
    clock: IReactorTime
    handshake: XKHandshake
    remote_public_key: bytes | None
    events: list[LinkEvent] = field(default_factory=list)
    outgoing: bytearray = field(default_factory=bytearray)
    pending_cells: deque[bytes] = field(default_factory=deque)
    sender: CipherState | None = None
    receiver: CipherState | None = None
    reassembler: cells.Reassembler = field(default_factory=cells.Reassembler)
    timeout: IDelayedCall | None = None
    partial_cell_timer: IDelayedCall | None = None
    cells_sent: int = 0
    cells_received: int = 0
    # Mirrors the machine's "closed" state for queries; only emit_closed sets it.
    closed: bool = False
    # Called after the link changed on its own (a timer, not an input from the edge), so
    # that the edge collects the events and closes the socket.
    wakeup: Callable[[], None] | None = None

    def time_out(self, inputs: LinkInputs) -> None:
        inputs.handshake_timed_out()
        if self.wakeup is not None:
            self.wakeup()

    def cancel_timeout(self) -> None:
        if self.timeout is not None and self.timeout.active():
            self.timeout.cancel()
        self.timeout = None

    def watch_partial_cell(self, inputs: LinkInputs, pending: int, new_cell: bool) -> None:
        """Time the partial cell at the end of the input: from its first byte, so a peer
        cannot keep it alive by trickling bytes; a completed cell starts a new clock."""
        if pending == 0 or new_cell:
            self.cancel_partial_cell_timer()
        if pending and self.partial_cell_timer is None:
            self.partial_cell_timer = self.clock.callLater(
                PARTIAL_CELL_TIMEOUT, self.stalled, inputs
            )

    def stalled(self, inputs: LinkInputs) -> None:
        self.partial_cell_timer = None
        inputs.stalled_mid_cell()
        if self.wakeup is not None:
            self.wakeup()

    def cancel_partial_cell_timer(self) -> None:
        if self.partial_cell_timer is not None and self.partial_cell_timer.active():
            self.partial_cell_timer.cancel()
        self.partial_cell_timer = None

    def emit_closed(self, reason: str, error: bool) -> None:
        self.closed = True
        self.cancel_timeout()
        self.cancel_partial_cell_timer()
        self.pending_cells.clear()
        self.events.append(LinkClosed(reason, error))

    def queue(self, message: Message) -> None:
        self.pending_cells.extend(cells.fragment(encode(message)))

    def encrypt(self, inner: bytes) -> bytes:
        assert self.sender is not None
        cell = self.sender.encrypt_with_ad(b"", inner)
        self.cells_sent += 1
        if self.cells_sent % REKEY_INTERVAL == 0:
            self.sender.rekey()
        return cell

    def decrypt(self, cell: bytes) -> bytes:
        assert self.receiver is not None
        inner = self.receiver.decrypt_with_ad(b"", cell)
        self.cells_received += 1
        if self.cells_received % REKEY_INTERVAL == 0:
            self.receiver.rekey()
        return inner


def _build() -> type:
    builder = TypeMachineBuilder(LinkInputs, LinkCore)
    connecting = builder.state("connecting")
    handshaking = builder.state("handshaking")
    established = builder.state("established")
    closed = builder.state("closed")

    @connecting.upon(LinkInputs.connection_made).to(handshaking)
    def start_handshake(inputs: LinkInputs, core: LinkCore) -> None:
        core.timeout = core.clock.callLater(HANDSHAKE_TIMEOUT, core.time_out, inputs)
        if core.role is Role.INITIATOR:
            core.outgoing += cells.pack_handshake_cell(core.handshake.write_message())

    @handshaking.upon(LinkInputs.cell_received).loop()
    def handshake_cell(inputs: LinkInputs, core: LinkCore, cell: bytes) -> None:
        try:
            payload = core.handshake.read_message(cells.unpack_handshake_cell(cell))
            if core.role is Role.RESPONDER and not core.handshake.complete:
                core.outgoing += cells.pack_handshake_cell(core.handshake.write_message())
            elif core.role is Role.INITIATOR:
                reply = core.handshake.write_message(core.identity.public_key)
                core.outgoing += cells.pack_handshake_cell(reply)
            else:
                core.remote_public_key = _verified_identity(core.handshake, payload)
        except ProtocolError as error:
            inputs.protocol_error(f"handshake failed: {error}")
            return
        if core.handshake.complete:
            inputs.handshake_completed()

    @handshaking.upon(LinkInputs.handshake_completed).to(established)
    def keys_ready(inputs: LinkInputs, core: LinkCore) -> None:
        core.cancel_timeout()
        core.sender, core.receiver = core.handshake.split()
        assert core.remote_public_key is not None
        core.events.append(LinkEstablished(onion_address_from_public_key(core.remote_public_key)))

    @established.upon(LinkInputs.cell_received).loop()
    def link_cell(inputs: LinkInputs, core: LinkCore, cell: bytes) -> None:
        try:
            encoded = core.reassembler.feed(core.decrypt(cell))
            if encoded is not None:
                core.events.append(MessageReceived(decode(encoded)))
        except ProtocolError as error:
            inputs.protocol_error(str(error))

    for state in (connecting, handshaking, established):
        state.upon(LinkInputs.send_message).loop()(_queue_message)

    @closed.upon(LinkInputs.send_message).loop()
    def drop_message(inputs: LinkInputs, core: LinkCore, message: Message) -> None:
        # Delivery state lives in the outbox: a message sent on a closed link is
        # simply sent again on the next one.
        return None

    for state in (connecting, handshaking, established):
        state.upon(LinkInputs.close).to(closed)(_closed_locally)
        state.upon(LinkInputs.connection_lost).to(closed)(_connection_lost)
        state.upon(LinkInputs.protocol_error).to(closed)(_protocol_error)
    handshaking.upon(LinkInputs.handshake_timed_out).to(closed)(_timed_out)
    established.upon(LinkInputs.stalled_mid_cell).to(closed)(_stalled)

    closed.upon(LinkInputs.cell_received).loop().returns(None)
    closed.upon(LinkInputs.close).loop().returns(None)
    closed.upon(LinkInputs.connection_lost).loop().returns(None)
    closed.upon(LinkInputs.protocol_error).loop().returns(None)
    closed.upon(LinkInputs.handshake_timed_out).loop().returns(None)
    closed.upon(LinkInputs.handshake_completed).loop().returns(None)
    closed.upon(LinkInputs.stalled_mid_cell).loop().returns(None)
    return builder.build()  # type: ignore[return-value]


def _verified_identity(handshake: XKHandshake, payload: bytes) -> bytes:
    """The initiator's Ed25519 key, if it matches the static key it proved in the handshake."""
    if len(payload) != 32:
        raise ProtocolError("identity payload must be a 32-byte Ed25519 key")
    try:
        proven = ed25519_public_to_x25519(payload)
    except Exception:
        raise ProtocolError("identity payload is not an Ed25519 key") from None
    if proven != handshake.remote_static_public:
        raise ProtocolError("the peer does not hold the identity key it claims")
    return payload


def _queue_message(inputs: LinkInputs, core: LinkCore, message: Message) -> None:
    core.queue(message)


def _closed_locally(inputs: LinkInputs, core: LinkCore, reason: str) -> None:
    core.emit_closed(reason, error=False)


def _connection_lost(inputs: LinkInputs, core: LinkCore, reason: str) -> None:
    core.emit_closed(f"connection lost: {reason}", error=False)


def _protocol_error(inputs: LinkInputs, core: LinkCore, reason: str) -> None:
    core.emit_closed(reason, error=True)


def _timed_out(inputs: LinkInputs, core: LinkCore) -> None:
    core.emit_closed("handshake timed out", error=True)


def _stalled(inputs: LinkInputs, core: LinkCore) -> None:
    core.emit_closed("peer stalled mid-cell", error=True)


_LinkMachine = _build()


class Link:
    """A link to one peer; the transport edge feeds it bytes and writes what it returns."""

    def __init__(self, core: LinkCore) -> None:
        self._core = core
        self._machine: LinkInputs = _LinkMachine(core)
        self._buffer = cells.CellBuffer()

    @classmethod
    def initiator(
        cls,
        identity: Identity,
        remote_public_key: bytes,
        clock: IReactorTime,
        *,
        ephemeral_private: bytes | None = None,
    ) -> Link:
        handshake = XKHandshake.initiator(
            identity.x25519_private,
            ed25519_public_to_x25519(remote_public_key),
            PROLOGUE,
            ephemeral_private=ephemeral_private,
        )
        return cls(LinkCore(Role.INITIATOR, identity, clock, handshake, remote_public_key))

    @classmethod
    def responder(
        cls,
        identity: Identity,
        clock: IReactorTime,
        *,
        ephemeral_private: bytes | None = None,
    ) -> Link:
        handshake = XKHandshake.responder(
            identity.x25519_private, PROLOGUE, ephemeral_private=ephemeral_private
        )
        return cls(LinkCore(Role.RESPONDER, identity, clock, handshake, None))

    # -- inputs from the transport edge ------------------------------------------------

    def set_wakeup(self, callback: Callable[[], None]) -> None:
        """``callback`` runs when the link changes by itself (its handshake timed out, or
        its peer stalled mid-cell): the edge then reads ``events()`` and closes the socket
        if ``closed``."""
        self._core.wakeup = callback

    def connection_made(self) -> None:
        self._machine.connection_made()

    def receive_data(self, data: bytes) -> None:
        if self.closed:
            return  # a closed link reads nothing more, so it holds on to nothing either
        new_cell = False
        for cell in self._buffer.feed(data):
            new_cell = True
            self._machine.cell_received(cell)
            if self._core.closed:
                self._buffer = cells.CellBuffer()  # drop the rest of the chunk
                return
        if self.established:
            # A half cell during the handshake is the handshake timeout's business.
            self._core.watch_partial_cell(self._machine, self._buffer.pending, new_cell)

    def connection_lost(self, reason: str = "closed by peer") -> None:
        self._machine.connection_lost(reason)

    # -- inputs from the node --------------------------------------------------------------

    def send_message(self, message: Message) -> None:
        self._machine.send_message(message)

    def close(self, reason: str = "closed") -> None:
        self._machine.close(reason)

    # -- outputs ---------------------------------------------------------------------------

    def events(self) -> list[LinkEvent]:
        """Events since the last call, oldest first."""
        events, self._core.events = self._core.events, []
        return events

    @property
    def established(self) -> bool:
        return self._core.sender is not None and not self.closed

    @property
    def closed(self) -> bool:
        return self._core.closed

    @property
    def padding_received(self) -> int:
        """Drop cells received so far (loop cover traffic counts its returns with this)."""
        return self._core.reassembler.padding_cells

    @property
    def queued_cells(self) -> int:
        """Real cells waiting to leave (the mix layer reads this)."""
        return len(self._core.pending_cells)

    def next_cell(self) -> bytes | None:
        """Encrypt and return the next real cell, or None if none is queued or not keyed."""
        if not self.established or not self._core.pending_cells:
            return None
        return self._core.encrypt(self._core.pending_cells.popleft())

    def drop_cell(self) -> bytes | None:
        """An encrypted padding cell, indistinguishable from a real one on the wire."""
        if not self.established:
            return None
        return self._core.encrypt(cells.padding_inner())

    def handshake_bytes(self) -> bytes:
        """Handshake cells to write now (they leave outside any cover-traffic schedule)."""
        out = bytes(self._core.outgoing)
        self._core.outgoing.clear()
        return out

    def data_to_send(self) -> bytes:
        """Handshake bytes plus every queued cell, encrypted (send-immediately mode)."""
        chunks = [self.handshake_bytes()]
        while (cell := self.next_cell()) is not None:
            chunks.append(cell)
        return b"".join(chunks)

    @property
    def remote_public_key(self) -> bytes | None:
        return self._core.remote_public_key

    @property
    def remote_address(self) -> str | None:
        key = self._core.remote_public_key
        return onion_address_from_public_key(key) if key is not None else None

    @property
    def clock(self) -> IReactorTime:
        return self._core.clock

    @property
    def role(self) -> Role:
        return self._core.role

    @property
    def handshake_hash(self) -> bytes:
        return self._core.handshake.handshake_hash

    @property
    def pending_input(self) -> int:
        return self._buffer.pending
