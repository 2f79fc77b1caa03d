"""Schema-checked message decoding: valid messages round-trip, everything else is ProtocolError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmsg.errors import ProtocolError
from onionmsg.wire.messages import (
    MAX_MESSAGE_SIZE,
    MAX_TEXT_BYTES,
    Ack,
    ChatMessage,
    decode,
    encode,
)

chat_messages = st.builds(
    ChatMessage,
    message_id=st.binary(min_size=16, max_size=16),
    sent_at=st.integers(min_value=0, max_value=2**64 - 1),
    text=st.text(max_size=200),
)


@given(chat_messages)
def test_round_trip_is_byte_identical(message: ChatMessage) -> None:
    encoded = encode(message)
    assert decode(encoded) == message
    assert encode(decode(encoded)) == encoded


def test_ack_round_trip() -> None:
    ack = Ack(b"\x01" * 16)
    assert decode(encode(ack)) == ack


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    try:
        message = decode(data)
    except ProtocolError:
        return
    assert encode(message) == data


@pytest.mark.parametrize(
    "obj",
    [
        [],
        {},
        "hello",
        [99, b"x"],  # unknown type
        [1, b"\x00" * 16, 5],  # missing field
        [1, b"\x00" * 16, 5, "hi", "extra"],  # extra field
        [1, b"\x00" * 15, 5, "hi"],  # id too short
        [1, "not bytes" * 2, 5, "hi"],
        [1, b"\x00" * 16, -1, "hi"],  # negative time
        [1, b"\x00" * 16, 1.5, "hi"],  # float
        [1, b"\x00" * 16, True, "hi"],  # bool is not an int
        [1, b"\x00" * 16, 5, b"bytes not text"],
        [1, b"\x00" * 16, 5, None],
        [2, b"\x00" * 16, 1],
        [True, b"\x00" * 16],
    ],
)
def test_schema_violations(obj: object) -> None:
    with pytest.raises(ProtocolError):
        decode(msgpack.packb(obj, use_bin_type=True))


def test_invalid_utf8_is_rejected() -> None:
    good = encode(ChatMessage(b"\x00" * 16, 5, "hé"))
    bad = good.replace("é".encode(), b"\xff\xfe")
    with pytest.raises(ProtocolError):
        decode(bad)


def test_non_canonical_integer_is_rejected() -> None:
    canonical = encode(ChatMessage(b"\x00" * 16, 5, "hi"))
    # 5 as a uint32 (0xce 00 00 00 05) instead of a positive fixint.
    wide = canonical.replace(b"\x05\xa2hi", b"\xce\x00\x00\x00\x05\xa2hi")
    assert wide != canonical
    assert msgpack.unpackb(wide) == msgpack.unpackb(canonical)
    with pytest.raises(ProtocolError, match="non-canonical"):
        decode(wide)


def test_str_instead_of_bin_is_rejected() -> None:
    # Old msgpack "raw" for the id: same bytes, other type.
    data = msgpack.packb([2, "a" * 16], use_bin_type=True)
    with pytest.raises(ProtocolError):
        decode(data)


def test_extension_types_are_rejected() -> None:
    data = msgpack.packb([2, msgpack.ExtType(1, b"\x00" * 16)], use_bin_type=True)
    with pytest.raises(ProtocolError):
        decode(data)


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(ProtocolError):
        decode(encode(Ack(b"\x00" * 16)) + b"\x00")


def test_text_cap() -> None:
    with pytest.raises(ProtocolError):
        encode(ChatMessage(b"\x00" * 16, 0, "x" * (MAX_TEXT_BYTES + 1)))
    assert decode(encode(ChatMessage(b"\x00" * 16, 0, "x" * MAX_TEXT_BYTES)))


def test_oversized_input_is_rejected_before_parsing() -> None:
    with pytest.raises(ProtocolError, match="larger"):
        decode(b"\x91" + b"\xc0" * MAX_MESSAGE_SIZE)


def test_deep_nesting_is_rejected() -> None:
    with pytest.raises(ProtocolError):
        decode(b"\x91" * 10_000 + b"\xc0")
