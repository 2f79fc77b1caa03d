"""A user's identity: one Ed25519 key, whose public half *is* the Tor v3 onion address.

Address derivation follows Tor's rend-spec-v3 ("Encoding onion addresses"):

    onion_address = base32(PUBKEY || CHECKSUM || VERSION) + ".onion"
    CHECKSUM = SHA3_256(".onion checksum" || PUBKEY || VERSION)[:2]
    VERSION = b"\\x03"
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Self

import nacl.bindings
import nacl.signing
import nacl.utils

from onionmsg.errors import AddressError

ONION_VERSION = 3
ONION_SUFFIX = ".onion"
ADDRESS_LENGTH = 56  # base32 of 35 bytes, without ".onion"
_CHECKSUM_PREFIX = b".onion checksum"
_BASE32_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def _checksum(public_key: bytes) -> bytes:
    return hashlib.sha3_256(_CHECKSUM_PREFIX + public_key + bytes([ONION_VERSION])).digest()[:2]


def onion_address_from_public_key(public_key: bytes) -> str:
    """The v3 onion address (56 lowercase base32 characters, no ".onion") of an Ed25519 key."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    raw = public_key + _checksum(public_key) + bytes([ONION_VERSION])
    return base64.b32encode(raw).decode("ascii").lower()


def parse_onion_address(text: str) -> bytes:
    """Validate a v3 onion address and return its Ed25519 public key.

    Accepts an optional ".onion" suffix and either case (not mixed, which is a
    typo or tampering sign elsewhere but harmless here: base32 is case-free).
    Raises AddressError with a sentence that tells the user what is wrong.
    """
    if not isinstance(text, str):
        raise AddressError("an onion address must be text")
    candidate = text.strip()
    if candidate.lower().endswith(ONION_SUFFIX):
        candidate = candidate[: -len(ONION_SUFFIX)]
    if "." in candidate:
        raise AddressError(f"{_shown(text)} is not an onion address: subdomains are not allowed")
    if len(candidate) != ADDRESS_LENGTH:
        raise AddressError(
            f"{_shown(text)} is not a v3 onion address: it must have {ADDRESS_LENGTH} "
            f"characters before .onion, not {len(candidate)}"
        )
    try:
        # b32decode alone would take "=" padding and return fewer than 35 bytes.
        if not set(candidate.lower()) <= _BASE32_LOWER:
            raise ValueError("not base32")
        raw = base64.b32decode(candidate.upper(), casefold=False)
    except (binascii.Error, ValueError):
        raise AddressError(
            f"{_shown(text)} is not a v3 onion address: it may only use the letters a-z "
            "and the digits 2-7"
        ) from None
    public_key, checksum, version = raw[:32], raw[32:34], raw[34]
    if version != ONION_VERSION:
        raise AddressError(
            f"{_shown(text)} is not a v3 onion address (version byte {version}, expected 3)"
        )
    if checksum != _checksum(public_key):
        raise AddressError(f"{_shown(text)} has a wrong checksum: check it for a typo")
    try:
        # A point that is not on the curve can't be anyone's identity.
        nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public_key)
    except Exception:
        raise AddressError(f"{_shown(text)} does not encode a valid Ed25519 key") from None
    return public_key


def normalize_onion_address(text: str) -> str:
    """The canonical form (lowercase, no suffix) of a valid address."""
    return onion_address_from_public_key(parse_onion_address(text))


def _shown(text: str) -> str:
    """A bounded, printable rendering of user input for error messages."""
    clipped = text if len(text) <= 80 else text[:77] + "..."
    return repr(clipped)


def ed25519_public_to_x25519(public_key: bytes) -> bytes:
    """The X25519 key a handshake uses for an Ed25519 identity (RFC 7748 birational map)."""
    return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public_key)


@dataclass(frozen=True, repr=False)
class OnionServiceKey:
    """An Ed25519 key whose public half is a v3 onion address. ``repr`` never shows the secret.

    The identity is one; each per-contact endpoint onion (crypto/endpoint.py) is another.
    """

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")

    @classmethod
    def generate(cls) -> Self:
        return cls(nacl.utils.random(32))

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def onion_address(self) -> str:
        return onion_address_from_public_key(self.public_key)

    def expanded_secret_key(self) -> bytes:
        """Tor's 64-byte expanded secret key: SHA-512(seed) with the scalar half clamped."""
        digest = bytearray(hashlib.sha512(self.seed).digest())
        digest[0] &= 248
        digest[31] &= 127
        digest[31] |= 64
        return bytes(digest)

    def tor_key_blob(self) -> str:
        """The ADD_ONION key argument: ``ED25519-V3:`` + base64 of the expanded secret key."""
        return "ED25519-V3:" + base64.b64encode(self.expanded_secret_key()).decode("ascii")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.onion_address})"


@dataclass(frozen=True, repr=False)
class Identity(OnionServiceKey):
    """A user's Ed25519 identity key: its onion is the public address, its X25519 form the
    static key of every handshake."""

    @property
    def x25519_private(self) -> bytes:
        """The Curve25519 secret matching ``ed25519_public_to_x25519(public_key)``."""
        secret_key = self.seed + self.public_key
        return nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(secret_key)

    @property
    def x25519_public(self) -> bytes:
        return ed25519_public_to_x25519(self.public_key)
