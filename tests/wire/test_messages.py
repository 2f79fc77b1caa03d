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
    Envelope,
    SessionStart,
    TextContent,
    decode,
    decode_content,
    encode,
)

envelopes = st.builds(
    Envelope,
    message_id=st.binary(min_size=16, max_size=16),
    ratchet_public=st.binary(min_size=32, max_size=32),
    previous_chain_length=st.integers(min_value=0, max_value=2**32 - 1),
    chain_length=st.integers(min_value=0, max_value=2**32 - 1),
    ciphertext=st.binary(max_size=300),
)
texts = st.builds(
    TextContent, sent_at=st.integers(min_value=0, max_value=2**64 - 1), text=st.text(max_size=200)
)


@given(envelopes)
def test_round_trip_is_byte_identical(message: Envelope) -> None:
    encoded = encode(message)
    assert decode(encoded) == message
    assert encode(decode(encoded)) == encoded


@given(texts)
def test_content_round_trip(message: TextContent) -> None:
    encoded = encode(message)
    assert decode_content(encoded) == message
    assert decode_content(encode(SessionStart())) == SessionStart()


def test_namespaces_do_not_mix() -> None:
    with pytest.raises(ProtocolError):
        decode(encode(TextContent(1, "x")))  # content is never a link message
    with pytest.raises(ProtocolError):
        decode_content(encode(Ack(bytes(16))))


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
        [1, b"\x00" * 16, b"\x00" * 32, 0, 0],  # missing field
        [1, b"\x00" * 16, b"\x00" * 32, 0, 0, b"c", "extra"],  # extra field
        [1, b"\x00" * 15, b"\x00" * 32, 0, 0, b"c"],  # id too short
        [1, b"\x00" * 16, b"\x00" * 31, 0, 0, b"c"],  # ratchet key too short
        [1, "not bytes" * 2, b"\x00" * 32, 0, 0, b"c"],
        [1, b"\x00" * 16, b"\x00" * 32, -1, 0, b"c"],  # negative counter
        [1, b"\x00" * 16, b"\x00" * 32, 0, 2**32, b"c"],  # counter out of range
        [1, b"\x00" * 16, b"\x00" * 32, 1.5, 0, b"c"],  # float
        [1, b"\x00" * 16, b"\x00" * 32, True, 0, b"c"],  # bool is not an int
        [1, b"\x00" * 16, b"\x00" * 32, 0, 0, "text not bytes"],
        [1, b"\x00" * 16, b"\x00" * 32, 0, 0, None],
        [2, b"\x00" * 16, 1],
        [True, b"\x00" * 16],
    ],
)
def test_schema_violations(obj: object) -> None:
    with pytest.raises(ProtocolError):
        decode(msgpack.packb(obj, use_bin_type=True))


def test_invalid_utf8_is_rejected() -> None:
    good = encode(TextContent(5, "hé"))
    bad = good.replace("é".encode(), b"\xff\xfe")
    with pytest.raises(ProtocolError):
        decode_content(bad)


def test_non_canonical_integer_is_rejected() -> None:
    canonical = encode(TextContent(5, "hi"))
    # 5 as a uint32 (0xce 00 00 00 05) instead of a positive fixint.
    wide = canonical.replace(b"\x05\xa2hi", b"\xce\x00\x00\x00\x05\xa2hi")
    assert wide != canonical
    assert msgpack.unpackb(wide) == msgpack.unpackb(canonical)
    with pytest.raises(ProtocolError, match="non-canonical"):
        decode_content(wide)


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
        encode(TextContent(0, "x" * (MAX_TEXT_BYTES + 1)))
    assert decode_content(encode(TextContent(0, "x" * MAX_TEXT_BYTES)))


def test_oversized_input_is_rejected_before_parsing() -> None:
    with pytest.raises(ProtocolError, match="larger"):
        decode(b"\x91" + b"\xc0" * MAX_MESSAGE_SIZE)


def test_deep_nesting_is_rejected() -> None:
    with pytest.raises(ProtocolError):
        decode(b"\x91" * 10_000 + b"\xc0")
