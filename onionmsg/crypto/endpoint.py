"""Keys of the per-contact endpoint onions (issue 7, after Gosling's design).

Each accepted contact gets two fresh keys from us, both kept in the encrypted store:

* an :class:`EndpointKey`: the Ed25519 key of an onion service that only this contact may
  use (its address is never published anywhere but inside our encrypted link with them);
* for the contact's own endpoint onion, a :class:`ClientAuthKey`: the X25519 key that
  Tor's v3 client authorisation asks for.  We hand its public half to the contact (they
  publish their endpoint with ``ClientAuthV3=`` for it); the private half goes to our tor
  (``ONION_CLIENT_AUTH_ADD``), without which the contact's endpoint descriptor cannot
  even be decrypted.

Neither key is derived from the identity, so an endpoint onion and a client-auth key can
not be linked to the identity or to each other by anyone without our store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import nacl.bindings
import nacl.utils

from onionmsg.crypto.identity import OnionServiceKey

X25519_KEY_SIZE = 32


@dataclass(frozen=True, repr=False)
class EndpointKey(OnionServiceKey):
    """The Ed25519 key of one endpoint onion; ``onion_address`` and ``tor_key_blob()`` as
    for the identity."""


@dataclass(frozen=True, repr=False)
class ClientAuthKey:
    """An X25519 key for Tor v3 client authorisation. ``repr`` never shows the secret."""

    private: bytes

    def __post_init__(self) -> None:
        if len(self.private) != X25519_KEY_SIZE:
            raise ValueError("an X25519 private key is 32 bytes")

    @classmethod
    def generate(cls) -> Self:
        return cls(nacl.utils.random(X25519_KEY_SIZE))

    @property
    def public(self) -> bytes:
        return nacl.bindings.crypto_scalarmult_base(self.private)

    def __repr__(self) -> str:
        return f"ClientAuthKey(public={self.public.hex()[:16]}...)"
