"""Fixed-size cells: every byte on a link travels in cells of exactly CELL_SIZE bytes.

CELL_SIZE is 996 = 2 x 498, so one cell fills exactly two Tor relay-cell payloads
(RELAY_PAYLOAD_SIZE = 498) and nothing about a cell's content shows in Tor's traffic.

Two cell layouts (docs/protocol.md has them byte by byte):

* handshake cell (plaintext, before the link is keyed):
  ``length: u16 | noise_message[length] | zero padding``
* link cell (after the handshake): ``AEAD(inner)`` where ``inner`` is INNER_SIZE bytes:
  ``kind: u8 | length: u16 | body[length] | zero padding``

A protocol message larger than one cell is split into a BEGIN fragment, whose body
starts with the message's total length (u32), and CONTINUE fragments. The total is
checked against MAX_MESSAGE_SIZE before anything is buffered, so a peer cannot make
us allocate more than that per link.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator

from onionmsg.errors import ProtocolError
from onionmsg.wire.messages import MAX_MESSAGE_SIZE

TOR_RELAY_PAYLOAD_SIZE = 498
CELL_SIZE = 2 * TOR_RELAY_PAYLOAD_SIZE
AEAD_TAG_SIZE = 16
INNER_SIZE = CELL_SIZE - AEAD_TAG_SIZE
_HEADER = struct.Struct(">BH")
_TOTAL = struct.Struct(">I")
MAX_BODY = INNER_SIZE - _HEADER.size
MAX_HANDSHAKE_MESSAGE = CELL_SIZE - 2


class CellKind(enum.IntEnum):
    PADDING = 0  # a drop cell: carries nothing, is discarded silently
    BEGIN = 1  # first fragment of a message: total length (u32) then data
    CONTINUE = 2  # further fragment of the message in progress


class CellBuffer:
    """Cuts a byte stream into whole cells; holds at most one partial cell."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._buffer += data
        while len(self._buffer) >= CELL_SIZE:
            cell = bytes(self._buffer[:CELL_SIZE])
            del self._buffer[:CELL_SIZE]
            yield cell

    @property
    def pending(self) -> int:
        """Bytes of an incomplete cell (a peer stalling mid-cell shows here)."""
        return len(self._buffer)


def pack_handshake_cell(noise_message: bytes) -> bytes:
    if len(noise_message) > MAX_HANDSHAKE_MESSAGE:
        raise ValueError("handshake message does not fit in a cell")
    body = struct.pack(">H", len(noise_message)) + noise_message
    return body + bytes(CELL_SIZE - len(body))


def unpack_handshake_cell(cell: bytes) -> bytes:
    if len(cell) != CELL_SIZE:
        raise ProtocolError("handshake cell has the wrong size")
    (length,) = struct.unpack_from(">H", cell)
    if length > MAX_HANDSHAKE_MESSAGE:
        raise ProtocolError("handshake cell length out of range")
    if any(cell[2 + length :]):
        raise ProtocolError("handshake cell padding is not zero")
    return cell[2 : 2 + length]


def _inner(kind: CellKind, body: bytes) -> bytes:
    header = _HEADER.pack(kind, len(body))
    return header + body + bytes(INNER_SIZE - len(header) - len(body))


def padding_inner() -> bytes:
    """The plaintext of a drop cell (it is encrypted like any other cell)."""
    return _inner(CellKind.PADDING, b"")


def fragment(encoded_message: bytes) -> list[bytes]:
    """Split one encoded message into cell plaintexts (INNER_SIZE bytes each)."""
    total = len(encoded_message)
    if total == 0 or total > MAX_MESSAGE_SIZE:
        raise ValueError(f"a message is 1..{MAX_MESSAGE_SIZE} bytes")
    first = MAX_BODY - _TOTAL.size
    inners = [_inner(CellKind.BEGIN, _TOTAL.pack(total) + encoded_message[:first])]
    for offset in range(first, total, MAX_BODY):
        inners.append(_inner(CellKind.CONTINUE, encoded_message[offset : offset + MAX_BODY]))
    return inners


def cells_needed(encoded_length: int) -> int:
    first = MAX_BODY - _TOTAL.size
    if encoded_length <= first:
        return 1
    return 1 + -(-(encoded_length - first) // MAX_BODY)


class Reassembler:
    """Turns decrypted cell plaintexts back into encoded messages.

    ``feed`` returns a complete encoded message, or None for a padding cell or an
    unfinished message. Every inconsistency raises ProtocolError.
    """

    def __init__(self, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self._max = max_message_size
        self._expected = 0
        self._parts = bytearray()
        self.padding_cells = 0

    @property
    def in_progress(self) -> bool:
        return self._expected > 0

    def feed(self, inner: bytes) -> bytes | None:
        if len(inner) != INNER_SIZE:
            raise ProtocolError("cell plaintext has the wrong size")
        kind_value, length = _HEADER.unpack_from(inner)
        if length > MAX_BODY:
            raise ProtocolError("cell body length out of range")
        body = inner[_HEADER.size : _HEADER.size + length]
        if any(inner[_HEADER.size + length :]):
            raise ProtocolError("cell padding is not zero")
        try:
            kind = CellKind(kind_value)
        except ValueError:
            raise ProtocolError(f"unknown cell kind {kind_value}") from None
        if kind is CellKind.PADDING:
            if length:
                raise ProtocolError("padding cell with a body")
            self.padding_cells += 1
            return None
        if kind is CellKind.BEGIN:
            if self.in_progress:
                raise ProtocolError("new message before the previous one ended")
            if length < _TOTAL.size + 1:
                raise ProtocolError("BEGIN cell too short")
            (total,) = _TOTAL.unpack_from(body)
            if total == 0 or total > self._max:
                raise ProtocolError(f"message of {total} bytes exceeds the cap of {self._max}")
            self._expected = total
            body = body[_TOTAL.size :]
        elif not self.in_progress:
            raise ProtocolError("CONTINUE cell without a message in progress")
        if not body or len(self._parts) + len(body) > self._expected:
            raise ProtocolError("fragment lengths do not add up")
        self._parts += body
        if len(self._parts) < self._expected:
            # Every fragment but the last must be full, so a message has one layout.
            if len(body) != (MAX_BODY - _TOTAL.size if kind is CellKind.BEGIN else MAX_BODY):
                raise ProtocolError("short fragment before the end of a message")
            return None
        message = bytes(self._parts)
        self._parts = bytearray()
        self._expected = 0
        return message
