"""A hostile contact for integration tests: a plain socket client that completes a real
Noise handshake with onionmsg's own `Link` (its own identity), then misbehaves.

It is synchronous (blocking sockets, a `Clock` nobody advances): the daemon under test
is a separate process, and the peer only needs to speak the protocol well enough to be
let in, then to send what an honest client never would.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

from twisted.internet.task import Clock

from onionmsg.crypto.identity import Identity, parse_onion_address
from onionmsg.crypto.ratchet import Ratchet, is_initiator
from onionmsg.delivery.envelopes import seal
from onionmsg.session.link import Link, LinkClosed, MessageReceived
from onionmsg.wire.cells import CELL_SIZE
from onionmsg.wire.messages import Envelope, Message, TextContent, decode

M = TypeVar("M", bound=Message)


def identity_that_opens_sessions_with(target_address: str) -> Identity:
    """A fresh identity whose key sorts before the target's: it opens the ratchet session,
    so it can send envelopes at once (the other side could only answer one)."""
    target = parse_onion_address(target_address)
    while True:
        identity = Identity.generate()
        if is_initiator(identity.public_key, target):
            return identity


@dataclass
class Handshake:
    """What an observer on the path would record of one handshake."""

    first: bytes
    second: bytes  # the daemon's
    third: bytes


class HostilePeer:
    """One link from ``identity`` to the daemon whose onion address is ``target``."""

    def __init__(self, identity: Identity, target: str, sock: socket.socket) -> None:
        self.identity = identity
        self.target_public_key = parse_onion_address(target)
        self.sock = sock
        self.link = Link.initiator(identity, self.target_public_key, Clock())
        self.received: list[Message] = []
        self.recorded: Handshake | None = None
        self.raw_received = bytearray()  # every byte the daemon sent
        self._started = False
        self._closed = False

    @classmethod
    def connect(cls, identity: Identity, target: str, host: str, port: int) -> HostilePeer:
        return cls(identity, target, socket.create_connection((host, port), timeout=10))

    # -- the honest part --------------------------------------------------------------

    def handshake(self, timeout: float = 10.0) -> Handshake:
        """Run the Noise XK handshake; returns the two cells this side sent."""
        self.link.connection_made()
        self._started = True
        first = self.link.handshake_bytes()
        self.sock.sendall(first)
        deadline = time.monotonic() + timeout
        while not self.link.established:
            if time.monotonic() > deadline:
                raise AssertionError("the daemon never completed the handshake")
            self._read(deadline - time.monotonic())
        third = self.link.handshake_bytes()
        self.sock.sendall(third)
        self.recorded = Handshake(first, bytes(self.raw_received[:CELL_SIZE]), third)
        return self.recorded

    def send(self, message: Message) -> None:
        self.link.send_message(message)
        self.sock.sendall(self.link.data_to_send())

    def cell(self, message: Message) -> bytes:
        """``message`` encrypted as it would be sent, without sending it (to replay)."""
        self.link.send_message(message)
        data = self.link.data_to_send()
        assert len(data) == CELL_SIZE, "one-cell messages only"
        return data

    def send_inner(self, inner: bytes) -> None:
        """Encrypt any cell plaintext, well-formed or not, and send it."""
        self.sock.sendall(self.link._core.encrypt(inner))  # the hostile part: raw cells

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    # -- what comes back --------------------------------------------------------------

    def wait_for(self, wanted: type[M], count: int = 1, timeout: float = 10.0) -> list[M]:
        """Read until ``count`` messages of type ``wanted`` arrived (since connecting)."""
        deadline = time.monotonic() + timeout
        while len(self.of_type(wanted)) < count:
            if self._closed or time.monotonic() > deadline:
                raise AssertionError(
                    f"got {len(self.of_type(wanted))} {wanted.__name__} of {count} "
                    f"({'link closed' if self._closed else 'timed out'})"
                )
            self._read(deadline - time.monotonic())
        return self.of_type(wanted)

    def of_type(self, wanted: type[M]) -> list[M]:
        return [m for m in self.received if isinstance(m, wanted)]

    def closed_by_daemon(self, timeout: float) -> bool:
        """True once the daemon closed the connection; False if it is still open after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self._closed and time.monotonic() < deadline:
            self._read(deadline - time.monotonic())
        return self._closed

    def drain(self, quiet: float = 1.0, timeout: float = 60.0) -> None:
        """Read until nothing more arrived for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        while not self._closed and time.monotonic() < deadline:
            before = len(self.raw_received)
            self._read(quiet)
            if len(self.raw_received) == before:
                return

    def close(self) -> None:
        self.sock.close()

    def _read(self, timeout: float) -> None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self._closed = True
            return
        self.raw_received += data
        if not self._started:
            return  # raw mode: the test speaks for itself (send_raw)
        self.link.receive_data(data)
        for event in self.link.events():
            if isinstance(event, MessageReceived):
                self.received.append(event.message)
            elif isinstance(event, LinkClosed):
                raise AssertionError(f"the daemon sent something our link refused: {event}")


class Sender:
    """The hostile contact's side of the ratchet: real envelopes, sealed in order."""

    def __init__(self, identity: Identity, target: str) -> None:
        self.identity = identity
        self.their_key = parse_onion_address(target)
        self.ratchet: Ratchet | None = None

    def envelope(self, text: str, message_id: bytes | None = None) -> Envelope:
        content = TextContent(int(time.time() * 1000), text)
        sealing = seal(
            self.identity, self.their_key, self.ratchet, message_id or os.urandom(16), content
        )
        assert sealing.envelope is not None, "the hostile peer must open the session"
        self.ratchet = sealing.ratchet
        envelope = decode(sealing.envelope)
        assert isinstance(envelope, Envelope)
        return envelope

    def envelopes(self, count: int, prefix: str) -> Iterator[Envelope]:
        for i in range(count):
            yield self.envelope(f"{prefix} {i}")
