"""The link state machine under Hypothesis: two Links joined by two in-memory byte pipes
that the test may chunk, tamper with, duplicate, reorder or drop cells on.

Invariants: a link is established only after a complete handshake (and both sides then
agree on it); closed is terminal; every message arrives at most once and in the order
it was sent (what arrives is a prefix of what was sent); and a link that has read a
tampered, replayed, reordered or out-of-place cell is closed with an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from twisted.internet.task import Clock

from onionmsg.crypto.identity import Identity
from onionmsg.session.link import (
    HANDSHAKE_TIMEOUT,
    Link,
    LinkClosed,
    LinkEstablished,
    LinkEvent,
    MessageReceived,
)
from onionmsg.wire.cells import CELL_SIZE
from onionmsg.wire.messages import Envelope, Message

ALICE = Identity(bytes([1]) * 32)
BOB = Identity(bytes([2]) * 32)
SIDES = st.sampled_from(["alice", "bob"])


@dataclass
class Pipe:
    """Bytes one side wrote that the other has not read yet; ``written`` and ``read`` are
    the whole streams as the writer sent them and as the reader got them."""

    in_flight: bytearray = field(default_factory=bytearray)
    written: bytearray = field(default_factory=bytearray)
    read: bytearray = field(default_factory=bytearray)

    def first_boundary(self) -> int:
        """Offset in ``in_flight`` of the first whole cell (the reader may hold part of one)."""
        return -len(self.read) % CELL_SIZE

    def whole_cells(self) -> int:
        start = self.first_boundary()
        return max(0, (len(self.in_flight) - start) // CELL_SIZE)

    def read_a_bad_cell(self) -> bool:
        """Has the reader got a whole cell that differs from the one written there?"""
        whole = len(self.read) - len(self.read) % CELL_SIZE
        return self.read[:whole] != self.written[:whole]


class LinkMachine(RuleBasedStateMachine):
    @initialize()
    def connect(self) -> None:
        self.clock = Clock()
        self.links = {
            "alice": Link.initiator(ALICE, BOB.public_key, self.clock),
            "bob": Link.responder(BOB, self.clock),
        }
        self.pipes = {"alice": Pipe(), "bob": Pipe()}  # keyed by the writer
        self.sent: dict[str, list[Message]] = {"alice": [], "bob": []}  # by the sender
        self.received: dict[str, list[Message]] = {"alice": [], "bob": []}  # by the receiver
        self.events: dict[str, list[LinkEvent]] = {"alice": [], "bob": []}
        self.closed_locally: set[str] = set()
        self.counter = 0
        for link in self.links.values():
            link.connection_made()
        self.collect()

    @staticmethod
    def other(side: str) -> str:
        return "bob" if side == "alice" else "alice"

    def collect(self) -> None:
        """Move what each link wants to write into its pipe, and record its events."""
        for side, link in self.links.items():
            out = link.data_to_send()
            self.pipes[side].in_flight += out
            self.pipes[side].written += out
            new = link.events()
            if self.events[side] and isinstance(self.events[side][-1], LinkClosed):
                assert new == [], "an event after LinkClosed"
            self.events[side] += new
            self.received[side] += [e.message for e in new if isinstance(e, MessageReceived)]

    # -- rules -----------------------------------------------------------------------------

    @rule(side=SIDES, size=st.integers(0, 2500))
    def send(self, side: str, size: int) -> None:
        self.counter += 1
        message = Envelope(self.counter.to_bytes(16, "big"), bytes(32), 0, 0, bytes(size))
        link = self.links[side]
        if not link.closed:  # a message sent on a closed link is dropped (the outbox resends)
            self.sent[side].append(message)
        link.send_message(message)
        self.collect()

    @rule(writer=SIDES, size=st.integers(1, 3 * CELL_SIZE) | st.just(10**6))
    def deliver(self, writer: str, size: int) -> None:
        pipe = self.pipes[writer]
        chunk = bytes(pipe.in_flight[:size])
        del pipe.in_flight[:size]
        pipe.read += chunk
        self.links[self.other(writer)].receive_data(chunk)
        self.collect()

    @rule()
    def deliver_everything(self) -> None:
        """Both ways until quiet (the handshake needs three trips)."""
        for _ in range(4):
            for writer in ("alice", "bob"):
                self.deliver(writer, len(self.pipes[writer].in_flight))

    @rule(writer=SIDES, data=st.data())
    def tamper(self, writer: str, data: st.DataObject) -> None:
        pipe = self.pipes[writer]
        if not pipe.in_flight:
            return
        offset = data.draw(st.integers(0, len(pipe.in_flight) - 1))
        pipe.in_flight[offset] ^= data.draw(st.integers(1, 255))

    @rule(writer=SIDES)
    def duplicate_a_cell(self, writer: str) -> None:
        pipe = self.pipes[writer]
        if not pipe.whole_cells():
            return
        start = pipe.first_boundary()
        cell = pipe.in_flight[start : start + CELL_SIZE]
        pipe.in_flight[start + CELL_SIZE : start + CELL_SIZE] = cell

    @rule(writer=SIDES)
    def reorder_two_cells(self, writer: str) -> None:
        pipe = self.pipes[writer]
        if pipe.whole_cells() < 2:
            return
        start = pipe.first_boundary()
        first = pipe.in_flight[start : start + CELL_SIZE]
        second = pipe.in_flight[start + CELL_SIZE : start + 2 * CELL_SIZE]
        pipe.in_flight[start : start + 2 * CELL_SIZE] = second + first

    @rule(writer=SIDES)
    def drop_a_cell(self, writer: str) -> None:
        pipe = self.pipes[writer]
        if not pipe.whole_cells():
            return
        start = pipe.first_boundary()
        del pipe.in_flight[start : start + CELL_SIZE]

    @rule(side=SIDES)
    def close(self, side: str) -> None:
        if not self.links[side].closed:
            self.closed_locally.add(side)
        self.links[side].close("user")
        self.links[self.other(side)].connection_lost("peer closed")
        self.collect()

    @precondition(lambda self: self.clock.seconds() < 2 * HANDSHAKE_TIMEOUT)
    @rule(seconds=st.sampled_from([1.0, 10.0, HANDSHAKE_TIMEOUT]))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.collect()

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def established_only_after_a_complete_handshake(self) -> None:
        for side, link in self.links.items():
            established = [e for e in self.events[side] if isinstance(e, LinkEstablished)]
            assert len(established) <= 1
            if link.established:
                assert link._core.handshake.complete and established
            if established:
                assert established[0].remote_address == self.other_identity(side).onion_address
                first_message = next(
                    (i for i, e in enumerate(self.events[side]) if isinstance(e, MessageReceived)),
                    None,
                )
                index = self.events[side].index(established[0])
                assert first_message is None or index < first_message
        if all(link._core.handshake.complete for link in self.links.values()):
            assert self.links["alice"].handshake_hash == self.links["bob"].handshake_hash

    def other_identity(self, side: str) -> Identity:
        return BOB if side == "alice" else ALICE

    @invariant()
    def closed_is_terminal(self) -> None:
        for side, link in self.links.items():
            closes = [e for e in self.events[side] if isinstance(e, LinkClosed)]
            assert len(closes) <= 1
            assert link.closed == bool(closes)
            if link.closed:
                assert not link.established
                assert link.next_cell() is None and link.drop_cell() is None

    @invariant()
    def messages_arrive_once_and_in_order(self) -> None:
        for sender, receiver in (("alice", "bob"), ("bob", "alice")):
            got = self.received[receiver]
            assert got == self.sent[sender][: len(got)]

    @invariant()
    def a_bad_cell_closes_the_link_with_an_error(self) -> None:
        for writer, pipe in self.pipes.items():
            reader = self.other(writer)
            if pipe.read_a_bad_cell():
                assert self.links[reader].closed
                if reader not in self.closed_locally and writer not in self.closed_locally:
                    (close,) = [e for e in self.events[reader] if isinstance(e, LinkClosed)]
                    assert close.error or close.reason.startswith("connection lost")

    @invariant()
    def an_unfinished_handshake_times_out(self) -> None:
        if self.clock.seconds() >= HANDSHAKE_TIMEOUT:
            for link in self.links.values():
                assert link.closed or link._core.handshake.complete


TestLinkMachine = LinkMachine.TestCase
TestLinkMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
