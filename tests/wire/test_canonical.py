"""Canonical encoding for every registered message type (issue 9, point 3).

Strategies are derived from each class's wire rules, so a type added later is covered
without touching this file. A non-canonical encoder (below) writes the same values in
msgpack's wider formats; every such variant must be refused, as must invalid UTF-8.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmsg.errors import ProtocolError
from onionmsg.wire import messages
from onionmsg.wire.messages import (
    Bytes,
    ContactRequest,
    Message,
    Text,
    TextContent,
    UInt,
    decode,
    decode_content,
    encode,
)

LINK_TYPES = sorted(messages._LINK.values(), key=lambda cls: cls.TYPE_ID)
CONTENT_TYPES = sorted(messages._CONTENT.values(), key=lambda cls: cls.TYPE_ID)
ALL_TYPES = [(cls, decode) for cls in LINK_TYPES] + [(cls, decode_content) for cls in CONTENT_TYPES]


def field_values(rule: UInt | Bytes | Text) -> st.SearchStrategy[Any]:
    if isinstance(rule, UInt):
        return st.one_of(st.integers(0, min(rule.maximum, 300)), st.integers(0, rule.maximum))
    if isinstance(rule, Bytes):
        if rule.exact is not None:
            return st.binary(min_size=rule.exact, max_size=rule.exact)
        return st.binary(max_size=min(rule.maximum, 70_000 // 8))
    return st.text(max_size=300).filter(lambda t: len(t.encode()) <= rule.max_bytes)


def instances(cls: type[Message]) -> st.SearchStrategy[Message]:
    return st.tuples(*(field_values(rule) for _, rule in cls.RULES)).map(lambda v: cls(*v))


# (One @given test over all types: pytest-twisted breaks @given under parametrize.)
@settings(max_examples=500)
@given(data=st.data())
def test_decode_then_encode_is_byte_identical_for_every_type(data: st.DataObject) -> None:
    cls, decoder = data.draw(st.sampled_from(ALL_TYPES))
    message = data.draw(instances(cls))
    encoded = encode(message)
    decoded = decoder(encoded)
    assert decoded == message
    assert encode(decoded) == encoded


def test_every_registered_type_is_covered() -> None:
    assert {cls.__name__ for cls in LINK_TYPES} >= {"Envelope", "Ack", "Hello", "ContactRequest"}
    assert {cls.__name__ for cls in CONTENT_TYPES} >= {"TextContent", "SessionStart"}
    assert len(ALL_TYPES) == len(messages._LINK) + len(messages._CONTENT)


def _wide(obj: Any, widen: st.DataObject) -> bytes:
    """``obj`` in msgpack, each item in a format drawn from all that can hold it."""
    if isinstance(obj, bool) or obj is None:
        packed: bytes = msgpack.packb(obj)
        return packed
    if isinstance(obj, int):
        forms = [(b"\xcf", ">Q")]
        if obj < 2**32:
            forms.append((b"\xce", ">I"))
        if obj < 2**16:
            forms.append((b"\xcd", ">H"))
        if obj < 2**8:
            forms.append((b"\xcc", ">B"))
        if obj < 2**7:
            forms.append((b"", ">B"))  # positive fixint: canonical
        prefix, fmt = widen.draw(st.sampled_from(forms))
        return prefix + struct.pack(fmt, obj)
    if isinstance(obj, bytes):
        size_forms = [(b"\xc6", ">I"), (b"\xc5", ">H"), (b"\xc4", ">B")]
        prefix, fmt = widen.draw(
            st.sampled_from([f for f in size_forms if len(obj) < 256 ** struct.calcsize(f[1])])
        )
        return prefix + struct.pack(fmt, len(obj)) + obj
    if isinstance(obj, str):
        raw = obj.encode()
        str_forms: list[tuple[bytes, str]] = [(b"\xdb", ">I"), (b"\xda", ">H"), (b"\xd9", ">B")]
        fitting = [f for f in str_forms if len(raw) < 256 ** struct.calcsize(f[1])]
        if len(raw) < 32:
            fitting.append((bytes([0xA0 | len(raw)]), ""))
        prefix, fmt = widen.draw(st.sampled_from(fitting))
        return prefix + (struct.pack(fmt, len(raw)) if fmt else b"") + raw
    assert isinstance(obj, list)
    array_forms: list[bytes] = [b"\xdd" + struct.pack(">I", len(obj))]
    array_forms.append(b"\xdc" + struct.pack(">H", len(obj)))
    if len(obj) < 16:
        array_forms.append(bytes([0x90 | len(obj)]))
    head = widen.draw(st.sampled_from(array_forms))
    return head + b"".join(_wide(item, widen) for item in obj)


@settings(max_examples=500)
@given(data=st.data())
def test_every_other_encoding_of_the_same_values_is_refused(data: st.DataObject) -> None:
    cls, decoder = data.draw(st.sampled_from(ALL_TYPES))
    message = data.draw(instances(cls))
    canonical = encode(message)
    variant = _wide(msgpack.unpackb(canonical, raw=False), data)
    assert msgpack.unpackb(variant, raw=False) == msgpack.unpackb(canonical, raw=False)
    if variant == canonical:
        assert decoder(variant) == message
    else:
        with pytest.raises(ProtocolError):
            decoder(variant)


INVALID_UTF8 = [
    b"\xff",  # never valid
    b"\xc0\x80",  # overlong NUL
    b"\xe0\x80\xaf",  # overlong "/"
    b"\xed\xa0\x80",  # a UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\xe2\x82",  # truncated sequence
    b"\x80",  # lone continuation byte
]


@pytest.mark.parametrize("bad", INVALID_UTF8, ids=lambda b: b.hex())
def test_invalid_utf8_is_refused_in_every_text_field(bad: bytes) -> None:
    for message, decoder in (
        (ContactRequest("ab"), decode),
        (TextContent(7, "ab"), decode_content),
    ):
        good = encode(message)
        marker = b"\xa2ab"
        assert good.count(marker) == 1
        raw = b"a" + bad + b"b"
        forged = good.replace(marker, bytes([0xA0 | len(raw)]) + raw)
        with pytest.raises(ProtocolError):
            decoder(forged)


def test_text_as_bytes_and_bytes_as_text_are_refused() -> None:
    with pytest.raises(ProtocolError):
        decode(msgpack.packb([ContactRequest.TYPE_ID, b"hello"], use_bin_type=True))
    with pytest.raises(ProtocolError):
        decode(msgpack.packb([messages.Ack.TYPE_ID, "x" * 16], use_bin_type=True))


def test_a_map_instead_of_an_array_is_refused() -> None:
    with pytest.raises(ProtocolError):
        decode(msgpack.packb({2: b"\x00" * 16}, use_bin_type=True))
