"""Lengths and fragment counts past the cap close the link before anything is allocated
for them (measured with tracemalloc, in process; integration/test_hostile.py does the
same against a daemon and watches its RSS)."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from twisted.internet.task import Clock

from onionmsg.crypto.identity import Identity
from onionmsg.session.link import Link, LinkClosed
from onionmsg.wire.cells import INNER_SIZE, MAX_BODY, CellKind
from onionmsg.wire.messages import MAX_MESSAGE_SIZE

ALICE = Identity(bytes([1]) * 32)
BOB = Identity(bytes([2]) * 32)


def inner(kind: CellKind, body: bytes) -> bytes:
    header = struct.pack(">BH", kind, len(body))
    return header + body + bytes(INNER_SIZE - len(header) - len(body))


def begin(total: int) -> bytes:
    return inner(CellKind.BEGIN, struct.pack(">I", total) + b"\x00" * (MAX_BODY - 4))


ABUSES = {
    "claims 4 GiB": [begin(2**32 - 1)],
    "claims the cap + 1": [begin(MAX_MESSAGE_SIZE + 1)],
    "more fragments than claimed": [begin(MAX_MESSAGE_SIZE)]
    + [inner(CellKind.CONTINUE, b"\x00" * MAX_BODY)] * (MAX_MESSAGE_SIZE // MAX_BODY + 1),
    "a fragment without a message": [inner(CellKind.CONTINUE, b"\x00" * MAX_BODY)],
}


@pytest.mark.parametrize("abuse", list(ABUSES))
def test_past_the_cap_closes_the_link_having_held_at_most_the_cap(abuse: str) -> None:
    clock = Clock()
    mallory = Link.initiator(ALICE, BOB.public_key, clock)
    bob = Link.responder(BOB, clock)
    mallory.connection_made()
    bob.connection_made()
    for _ in range(3):
        bob.receive_data(mallory.data_to_send())
        mallory.receive_data(bob.data_to_send())
    bob.events()
    cells = b"".join(mallory._core.encrypt(raw) for raw in ABUSES[abuse])
    tracemalloc.start()
    try:
        bob.receive_data(cells)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [type(e) for e in bob.events()] == [LinkClosed] and bob.closed
    # The input itself (up to 67 cells) and the largest legal message are all it held.
    assert peak < len(cells) + MAX_MESSAGE_SIZE + 64 * 1024, peak
