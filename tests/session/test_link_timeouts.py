"""An established link closes on a peer that stalls mid-cell, and only then (fake clock)."""

from __future__ import annotations

from twisted.internet.task import Clock

from onionmsg.crypto.identity import Identity
from onionmsg.session.link import PARTIAL_CELL_TIMEOUT, Link, LinkClosed, MessageReceived
from onionmsg.wire.cells import CELL_SIZE
from onionmsg.wire.messages import Ack, Hello

ALICE = Identity(bytes([1]) * 32)
BOB = Identity(bytes([2]) * 32)
DAY = 24 * 3600.0


def established() -> tuple[Link, Link, Clock]:
    clock = Clock()
    alice = Link.initiator(ALICE, BOB.public_key, clock)
    bob = Link.responder(BOB, clock)
    alice.connection_made()
    bob.connection_made()
    for _ in range(3):
        bob.receive_data(alice.data_to_send())
        alice.receive_data(bob.data_to_send())
    assert alice.established and bob.established
    alice.events(), bob.events()
    return alice, bob, clock


def one_cell(sender: Link) -> bytes:
    sender.send_message(Ack(b"\x07" * 16))
    cell = sender.data_to_send()
    assert len(cell) == CELL_SIZE
    return cell


def test_half_a_cell_then_silence_closes_the_link_after_the_timeout() -> None:
    alice, bob, clock = established()
    woken: list[bool] = []
    bob.set_wakeup(lambda: woken.append(bob.closed))
    bob.receive_data(one_cell(alice)[: CELL_SIZE // 2])
    clock.advance(PARTIAL_CELL_TIMEOUT - 0.001)
    held = not bob.closed and bob.events() == []
    clock.advance(0.001)
    assert held and bob.closed
    assert bob.events() == [LinkClosed("peer stalled mid-cell", True)]
    assert woken == [True]  # the edge is told, so it closes the socket


def test_trickling_bytes_does_not_keep_a_partial_cell_alive() -> None:
    alice, bob, clock = established()
    cell = one_cell(alice)
    bob.receive_data(cell[:1])
    for i in range(1, 10):
        clock.advance(PARTIAL_CELL_TIMEOUT / 10)
        bob.receive_data(cell[i : i + 1])
    assert not bob.closed
    clock.advance(PARTIAL_CELL_TIMEOUT / 10)
    assert bob.events() == [LinkClosed("peer stalled mid-cell", True)]


def test_each_completed_cell_starts_a_new_clock_for_the_next_partial_one() -> None:
    alice, bob, clock = established()
    first, second = one_cell(alice), one_cell(alice)
    bob.receive_data(first + second[:100])
    clock.advance(PARTIAL_CELL_TIMEOUT - 1)
    bob.receive_data(second[100:] + b"\x00")  # second completes; a new partial begins
    clock.advance(PARTIAL_CELL_TIMEOUT - 1)
    assert not bob.closed
    assert [type(e) for e in bob.events()] == [MessageReceived, MessageReceived]
    clock.advance(1)
    assert bob.events() == [LinkClosed("peer stalled mid-cell", True)]


def test_an_idle_link_without_a_partial_cell_is_never_closed() -> None:
    # Cover traffic off: a contact with nothing to say sends nothing, for days.
    alice, bob, clock = established()
    bob.receive_data(one_cell(alice))
    assert [type(e) for e in bob.events()] == [MessageReceived]
    clock.advance(7 * DAY)
    assert alice.established and bob.established
    assert alice.events() == [] and bob.events() == []
    alice.send_message(Hello())
    bob.receive_data(alice.data_to_send())
    assert bob.events() == [MessageReceived(Hello())]


def test_a_completed_cell_cancels_the_timer() -> None:
    alice, bob, clock = established()
    cell = one_cell(alice)
    bob.receive_data(cell[:10])
    clock.advance(PARTIAL_CELL_TIMEOUT / 2)
    bob.receive_data(cell[10:])
    clock.advance(DAY)
    assert bob.established
    assert not clock.getDelayedCalls()


def test_closing_the_link_cancels_the_timer() -> None:
    alice, bob, clock = established()
    bob.receive_data(one_cell(alice)[:10])
    bob.close("bye")
    assert not clock.getDelayedCalls()
    clock.advance(DAY)
    assert bob.events() == [LinkClosed("bye", False)]
