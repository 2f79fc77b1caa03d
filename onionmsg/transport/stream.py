"""The Twisted edge of a link: pumps bytes between a socket and a sans-IO Link."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.internet.interfaces import IDelayedCall, IPushProducer, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from onionmsg.session.link import Link, LinkEvent
from onionmsg.wire.cells import CELL_SIZE
from onionmsg.wire.messages import Message

log = Logger()
# Cells handled per reactor turn on one link. An accepted envelope costs a ratchet step
# and a durable commit (~6 ms here), and one socket read brings up to 64 KiB (65 cells):
# without this bound a flooding contact held the reactor (control API, UI, other links)
# for ~0.4 s per read (docs/performance.md). The rest waits for the next turn, with
# reading paused, so TCP backpressure slows the sender instead of our memory growing.
MAX_CELLS_PER_TURN = 4

EventHandler = Callable[["LinkProtocol", list[LinkEvent]], None]


class LinkProtocol(Protocol):
    """One connection carrying one Link; the node gets its events."""

    def __init__(self, link: Link, on_events: EventHandler) -> None:
        self.link = link
        # Which transport carries this link, when several run at once (transport/multi.py).
        self.transport_name = ""
        self._on_events = on_events
        self._inbox = bytearray()
        self._next_turn: IDelayedCall | None = None
        self._paused = False
        link.set_wakeup(self._pump)

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            # Each cell must leave when the scheduler says, as one segment: Nagle would
            # hold a cell back until tor's delayed ACK (up to 40 ms) and then merge two
            # cells into one write, visible in timing and size at the tor boundary.
            self.transport.setTcpNoDelay(True)
        self.link.connection_made()
        self._pump()

    def dataReceived(self, data: bytes) -> None:
        self._inbox += data
        if self._next_turn is None:
            self._read_some()

    def _read_some(self) -> None:
        self._next_turn = None
        budget = MAX_CELLS_PER_TURN * CELL_SIZE
        chunk = bytes(self._inbox[:budget])
        del self._inbox[:budget]
        try:
            self.link.receive_data(chunk)
        except Exception:  # a bug of ours must cost one link, never the daemon
            log.failure("internal error while reading from a peer; closing that link")
            self.link.close("internal error")
        self._pump()
        if self.link.closed or self.transport is None:
            self._inbox.clear()
        elif self._inbox:
            if not self._paused:
                self._paused = True
                cast(IPushProducer, self.transport).pauseProducing()
            self._next_turn = self.link.clock.callLater(0, self._read_some)
        elif self._paused:
            self._paused = False
            cast(IPushProducer, self.transport).resumeProducing()

    def connectionLost(self, reason: Failure | None = None) -> None:
        # Cells not read yet are dropped: their envelopes were not acknowledged, so the
        # contact sends them again.
        if self._next_turn is not None and self._next_turn.active():
            self._next_turn.cancel()
        self._next_turn = None
        self._inbox.clear()
        self.link.connection_lost(reason.getErrorMessage() if reason else "closed")
        self._dispatch()

    def send(self, message: Message) -> int:
        """Queue a message on the link; returns how many cells now wait for a slot."""
        before = self.link.queued_cells
        self.link.send_message(message)
        self._pump()
        return self.link.queued_cells - before

    def write_next_cell(self) -> bool:
        """Write the oldest queued real cell (the scheduler's slot); False if none."""
        return self._write_cell(self.link.next_cell())

    def write_drop_cell(self) -> bool:
        """Write an encrypted drop cell; False if the link is not keyed (or gone)."""
        return self._write_cell(self.link.drop_cell())

    def _write_cell(self, cell: bytes | None) -> bool:
        if cell is None or self.transport is None:
            return False
        self.transport.write(cell)
        return True

    def close(self, reason: str) -> None:
        self.link.close(reason)
        self._pump()

    def _pump(self) -> None:
        # Only handshake cells leave here; the node's cell scheduler decides when every
        # other cell leaves (write_next_cell / write_drop_cell).
        out = self.link.handshake_bytes()
        if out and self.transport is not None:
            self.transport.write(out)
        self._dispatch()
        if self.link.closed and self.transport is not None:
            self.transport.loseConnection()

    def _dispatch(self) -> None:
        events = self.link.events()
        if events:
            self._on_events(self, events)
