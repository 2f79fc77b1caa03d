"""``onionmsg:`` contact strings: one's onion address and I2P destination, signed.

    onionmsg:<onion address>?v=1[&i2p=<I2P destination>]&sig=<signature>

The onion address is the identity's Ed25519 public key, so anyone can check the signature
with nothing but the string; the signature covers the version, the address and the I2P
destination (docs/protocol.md gives the exact bytes). A destination is only ever taken
from a string whose signature verifies, so nobody can attach their own destination to
someone else's address. No other field is accepted: everything in a string is signed.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Protocol

import nacl.exceptions
import nacl.signing

from onionmsg.crypto.identity import Identity, normalize_onion_address, parse_onion_address
from onionmsg.errors import AddressError, OnionmsgError
from onionmsg.transport.sam import SAMError, parse_destination, public_destination

SCHEME = "onionmsg:"
VERSION = "1"
MAX_LENGTH = 2048
_DOMAIN = b"onionmsg contact string v1\n"


class ContactStringError(OnionmsgError, ValueError):
    """The text is not a valid, correctly signed onionmsg: contact string."""


@dataclass(frozen=True)
class ContactCard:
    address: str  # canonical onion address (no ".onion")
    i2p_destination: str | None = None


class _HasKeys(Protocol):
    def identity(self) -> Identity: ...

    def i2p_private_key(self) -> str | None: ...


def is_contact_string(text: str) -> bool:
    return text.strip().lower().startswith(SCHEME)


def _signed_bytes(address: str, i2p_destination: str | None) -> bytes:
    return _DOMAIN + f"{VERSION}\n{address}\n{i2p_destination or ''}".encode("ascii")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def make_contact_string(identity: Identity, i2p_destination: str | None = None) -> str:
    """The user's contact string (their I2P destination included when they have one)."""
    address = identity.onion_address
    signature = identity.signing_key.sign(_signed_bytes(address, i2p_destination)).signature
    fields = [f"v={VERSION}"]
    if i2p_destination is not None:
        fields.append(f"i2p={i2p_destination}")
    fields.append(f"sig={_b64url(signature)}")
    return f"{SCHEME}{address}?{'&'.join(fields)}"


def own_contact_string(store: _HasKeys) -> str:
    """The contact string of the store's user, with their I2P destination if they have one."""
    private_key = store.i2p_private_key()
    destination = public_destination(private_key) if private_key is not None else None
    return make_contact_string(store.identity(), destination)


def parse_contact_string(text: str) -> ContactCard:
    """Check a contact string and return what it vouches for; ContactStringError if not."""
    text = text.strip()
    if len(text) > MAX_LENGTH:
        raise ContactStringError(f"a contact string has at most {MAX_LENGTH} characters")
    if not text.lower().startswith(SCHEME):
        raise ContactStringError(f"a contact string starts with {SCHEME!r}")
    address_text, sep, query = text[len(SCHEME) :].partition("?")
    if not sep:
        raise ContactStringError("the contact string has no signature")
    try:
        public_key = parse_onion_address(address_text)
        address = normalize_onion_address(address_text)
    except AddressError as error:
        raise ContactStringError(f"the contact string's address is wrong: {error}") from None
    fields: dict[str, str] = {}
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        if not eq or key in fields:
            raise ContactStringError(f"the contact string has a malformed field {item[:20]!r}")
        if key not in ("v", "i2p", "sig"):
            raise ContactStringError(f"the contact string has an unknown field {key[:20]!r}")
        fields[key] = value
    if fields.get("v") != VERSION:
        raise ContactStringError("this contact string's version is not supported")
    i2p_destination = fields.get("i2p")
    if i2p_destination is not None:
        try:
            parse_destination(i2p_destination)
        except SAMError as error:
            raise ContactStringError(f"the contact string's I2P destination: {error}") from None
    try:
        signature = base64.urlsafe_b64decode(fields.get("sig", "") + "==")
    except (binascii.Error, ValueError):
        raise ContactStringError("the contact string's signature is not base64") from None
    try:
        nacl.signing.VerifyKey(public_key).verify(
            _signed_bytes(address, i2p_destination), signature
        )
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        raise ContactStringError(
            "the contact string's signature does not verify: it was altered or forged"
        ) from None
    return ContactCard(address, i2p_destination)
