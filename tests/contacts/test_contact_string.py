"""onionmsg: contact strings: what they vouch for, and every way they are refused."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmsg.contacts.contact_string import (
    ContactCard,
    ContactStringError,
    is_contact_string,
    make_contact_string,
    parse_contact_string,
)
from onionmsg.crypto.identity import Identity
from onionmsg.transport.sam import i2p_b64encode

ALICE = Identity(bytes([1]) * 32)
MALLORY = Identity(bytes([2]) * 32)
DEST = i2p_b64encode(bytes(range(256)) + bytes(128) + b"\x05\x00\x04\x00\x07\x00\x00")
OTHER_DEST = i2p_b64encode(bytes(255) + b"\x01" + bytes(128) + b"\x05\x00\x04\x00\x07\x00\x00")


def test_round_trip_with_and_without_i2p() -> None:
    full = make_contact_string(ALICE, DEST)
    assert full.startswith(f"onionmsg:{ALICE.onion_address}?v=1&i2p=")
    assert parse_contact_string(full) == ContactCard(ALICE.onion_address, DEST)
    bare = make_contact_string(ALICE)
    assert parse_contact_string(bare) == ContactCard(ALICE.onion_address, None)
    assert is_contact_string(" ONIONMSG:x") and not is_contact_string(ALICE.onion_address)


def test_a_swapped_destination_is_refused() -> None:
    forged = make_contact_string(ALICE, DEST).replace(DEST, OTHER_DEST)
    with pytest.raises(ContactStringError, match="does not verify"):
        parse_contact_string(forged)


def test_a_destination_added_to_an_unsigned_one_is_refused() -> None:
    bare = make_contact_string(ALICE)
    forged = bare.replace("v=1&", f"v=1&i2p={OTHER_DEST}&")
    with pytest.raises(ContactStringError, match="does not verify"):
        parse_contact_string(forged)


def test_someone_elses_signature_is_refused() -> None:
    mallory = make_contact_string(MALLORY, DEST)
    forged = mallory.replace(MALLORY.onion_address, ALICE.onion_address)
    with pytest.raises(ContactStringError, match="does not verify"):
        parse_contact_string(forged)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.split("?")[0], "no signature"),
        (lambda s: s.replace("v=1", "v=2"), "version"),
        (lambda s: s + "&note=hi", "unknown field"),
        (lambda s: s + "&sig=AAAA", "malformed"),
        (lambda s: s.replace("onionmsg:", "onionmsg:x"), "address"),
        (lambda s: s.replace("onionmsg:", "http:"), "starts with"),
        (lambda s: s.replace("i2p=", "i2p=!"), "I2P destination"),
        (lambda s: s[:-10] + "**********", "base64|does not verify"),
        (lambda s: s + "A" * 3000, "at most"),
    ],
)
def test_malformed_strings_are_refused(mutate: object, message: str) -> None:
    assert callable(mutate)
    with pytest.raises(ContactStringError, match=message):
        parse_contact_string(mutate(make_contact_string(ALICE, DEST)))


@given(st.text(max_size=300))
def test_garbage_raises_only_the_contact_string_error(text: str) -> None:
    with contextlib.suppress(ContactStringError):
        parse_contact_string("onionmsg:" + text)
