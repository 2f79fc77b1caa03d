"""Cells: fixed size, framing at every split point, fragmentation with a hard cap."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmsg.errors import ProtocolError
from onionmsg.wire import cells
from onionmsg.wire.cells import (
    CELL_SIZE,
    INNER_SIZE,
    MAX_BODY,
    CellBuffer,
    CellKind,
    Reassembler,
    fragment,
)
from onionmsg.wire.messages import MAX_MESSAGE_SIZE


def test_cell_size_fills_whole_tor_relay_cells() -> None:
    assert CELL_SIZE % 498 == 0
    assert INNER_SIZE == CELL_SIZE - 16


@given(st.binary(min_size=1, max_size=MAX_MESSAGE_SIZE))
def test_fragment_and_reassemble(message: bytes) -> None:
    inners = fragment(message)
    assert all(len(inner) == INNER_SIZE for inner in inners)
    assert len(inners) == cells.cells_needed(len(message))
    reassembler = Reassembler()
    results = [reassembler.feed(inner) for inner in inners]
    assert results[-1] == message
    assert all(r is None for r in results[:-1])
    assert not reassembler.in_progress


@pytest.mark.parametrize("size", [1, MAX_BODY - 4, MAX_BODY - 3, MAX_BODY, 2 * MAX_BODY, 5000])
def test_boundaries(size: int) -> None:
    message = bytes(range(256)) * (size // 256) + bytes(size % 256)
    reassembler = Reassembler()
    out = [reassembler.feed(i) for i in fragment(message)]
    assert out[-1] == message


def test_framing_at_every_split_point() -> None:
    stream = b"".join(bytes([i]) * CELL_SIZE for i in range(3))
    for split in range(len(stream) + 1):
        buffer = CellBuffer()
        got = list(buffer.feed(stream[:split])) + list(buffer.feed(stream[split:]))
        assert got == [bytes([i]) * CELL_SIZE for i in range(3)]
        assert buffer.pending == 0


def test_byte_at_a_time() -> None:
    buffer = CellBuffer()
    got = [c for b in bytes(2 * CELL_SIZE) for c in buffer.feed(bytes([b]))]
    assert got == [bytes(CELL_SIZE)] * 2


def test_padding_cell_is_silent() -> None:
    assert Reassembler().feed(cells.padding_inner()) is None


def _inner(kind: int, body: bytes, length: int | None = None) -> bytes:
    header = struct.pack(">BH", kind, len(body) if length is None else length)
    raw = header + body
    return raw + bytes(INNER_SIZE - len(raw))


def test_total_over_cap_is_rejected_before_buffering() -> None:
    reassembler = Reassembler()
    begin = _inner(CellKind.BEGIN, struct.pack(">I", MAX_MESSAGE_SIZE + 1) + b"x")
    with pytest.raises(ProtocolError, match="cap"):
        reassembler.feed(begin)
    begin = _inner(CellKind.BEGIN, struct.pack(">I", 2**32 - 1) + b"x")
    with pytest.raises(ProtocolError, match="cap"):
        Reassembler().feed(begin)


@pytest.mark.parametrize(
    "inner",
    [
        _inner(7, b""),  # unknown kind
        _inner(CellKind.PADDING, b"x"),  # padding with a body
        _inner(CellKind.CONTINUE, b"x"),  # continue with nothing begun
        _inner(CellKind.BEGIN, b"\x00\x00"),  # too short for the total
        _inner(CellKind.BEGIN, struct.pack(">I", 0) + b"x"),  # empty message
        _inner(CellKind.BEGIN, struct.pack(">I", 2) + b"xyz"),  # more data than total
        _inner(CellKind.BEGIN, b"", length=MAX_BODY + 1),  # length past the cell
        _inner(CellKind.BEGIN, struct.pack(">I", 1) + b"x")[:-1] + b"\x01",  # dirty padding
        b"\x00" * (INNER_SIZE - 1),  # wrong size
    ],
)
def test_malformed_cells(inner: bytes) -> None:
    with pytest.raises(ProtocolError):
        Reassembler().feed(inner)


def test_short_fragment_before_the_end_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="short fragment"):
        Reassembler().feed(_inner(CellKind.BEGIN, struct.pack(">I", 3000) + b"x" * 10))
    reassembler = Reassembler()
    reassembler.feed(_inner(CellKind.BEGIN, struct.pack(">I", 3000) + b"x" * (MAX_BODY - 4)))
    with pytest.raises(ProtocolError, match="short fragment"):
        reassembler.feed(_inner(CellKind.CONTINUE, b"y"))


def test_begin_while_in_progress_is_rejected() -> None:
    inners = fragment(b"z" * 3000)
    reassembler = Reassembler()
    reassembler.feed(inners[0])
    with pytest.raises(ProtocolError):
        reassembler.feed(inners[0])


@given(st.binary(min_size=INNER_SIZE, max_size=INNER_SIZE))
def test_garbage_inner_is_none_message_or_protocol_error(inner: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        Reassembler().feed(inner)


def test_handshake_cell_round_trip_and_strictness() -> None:
    cell = cells.pack_handshake_cell(b"noise")
    assert len(cell) == CELL_SIZE
    assert cells.unpack_handshake_cell(cell) == b"noise"
    with pytest.raises(ProtocolError):
        cells.unpack_handshake_cell(cell[:-1] + b"\x01")
    with pytest.raises(ProtocolError):
        cells.unpack_handshake_cell(b"\xff\xff" + cell[2:])
    with pytest.raises(ProtocolError):
        cells.unpack_handshake_cell(cell[:-1])
