"""Per-contact Double Ratchet (Signal's specification), on the maintained `doubleratchet` package.

Why and how, in short (docs/protocol.md has the details):

* The session's shared secret comes from the two identity keys alone,
  ``SK = BLAKE2b(X25519(a, B) || min(A, B) || max(A, B))`` (keys converted from Ed25519),
  so a message can be encrypted when it is queued, also for a contact who is offline.
* The side whose Ed25519 key sorts first is the *initiator*: it opens the session with
  its first message (``encrypt_initial_message`` against the other side's identity
  X25519 key as initial ratchet key). The other side can encrypt only once that message
  has arrived; until then its outgoing messages wait in the (encrypted) store.
* Each message key is used once and deleted; up to MAX_SKIP keys of skipped messages are
  kept for reordering; a header that would skip more than that is refused without
  deriving the keys.
* The AEAD is ChaCha20-Poly1305 with a fixed nonce, which the specification allows
  because every message key encrypts exactly one message.

The package's API is ``async`` but does no I/O; ``_run`` drives its coroutines to the
end synchronously and fails loudly if one ever awaits something real.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import nacl.bindings
import nacl.exceptions
from doubleratchet import (
    AuthenticationFailedException,
    DecryptionFailedException,
    EncryptedMessage,
    Header,
)
from doubleratchet import DoubleRatchet as _PackageDoubleRatchet
from doubleratchet import aead as _aead
from doubleratchet.diffie_hellman_ratchet import (
    DoSProtectionException,
    DuplicateMessageException,
)
from doubleratchet.recommended import HashFunction, kdf_hkdf, kdf_separate_hmacs
from doubleratchet.recommended.diffie_hellman_ratchet_curve25519 import DiffieHellmanRatchet

from onionmsg.crypto.identity import Identity, ed25519_public_to_x25519
from onionmsg.errors import ProtocolError

MAX_SKIP = 1000
_MESSAGE_CHAIN_CONSTANT = b"\x01\x02"
_ZERO_NONCE = bytes(12)
T = TypeVar("T")


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the package awaits only its own coroutines)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("the doubleratchet package suspended: it must not do I/O")


class _AEAD(_aead.AEAD):
    @staticmethod
    async def encrypt(plaintext: bytes, key: bytes, associated_data: bytes) -> bytes:
        ciphertext: bytes = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext, associated_data, _ZERO_NONCE, key
        )
        return ciphertext

    @staticmethod
    async def decrypt(ciphertext: bytes, key: bytes, associated_data: bytes) -> bytes:
        try:
            plaintext: bytes = nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
                ciphertext, associated_data, _ZERO_NONCE, key
            )
        except (nacl.exceptions.CryptoError, ValueError):
            raise AuthenticationFailedException("message authentication failed") from None
        return plaintext


class _RootChainKDF(kdf_hkdf.KDF):
    @staticmethod
    def _get_hash_function() -> HashFunction:
        return HashFunction.SHA_512

    @staticmethod
    def _get_info() -> bytes:
        return b"onionmsg root chain v1"


class _MessageChainKDF(kdf_separate_hmacs.KDF):
    # As in the specification: HMAC-SHA-256 of the chain key with 0x01 and with 0x02.
    @staticmethod
    def _get_hash_function() -> HashFunction:
        return HashFunction.SHA_256


class _DoubleRatchet(_PackageDoubleRatchet):
    @staticmethod
    def _build_associated_data(associated_data: bytes, header: Header) -> bytes:
        return (
            associated_data
            + header.ratchet_pub
            + header.previous_sending_chain_length.to_bytes(8, "big")
            + header.sending_chain_length.to_bytes(8, "big")
        )


_PARAMETERS: dict[str, Any] = {
    "diffie_hellman_ratchet_class": DiffieHellmanRatchet,
    "root_chain_kdf": _RootChainKDF,
    "message_chain_kdf": _MessageChainKDF,
    "message_chain_constant": _MESSAGE_CHAIN_CONSTANT,
    "dos_protection_threshold": MAX_SKIP,
    "max_num_skipped_message_keys": MAX_SKIP,
    "aead": _AEAD,
}


@dataclass(frozen=True)
class Sealed:
    """A ratchet-encrypted message as it travels (inside an encrypted link)."""

    ratchet_public: bytes
    previous_chain_length: int
    chain_length: int
    ciphertext: bytes

    @property
    def is_initial(self) -> bool:
        return self.previous_chain_length == 0 and self.chain_length == 0

    def _package(self) -> EncryptedMessage:
        header = Header(self.ratchet_public, self.previous_chain_length, self.chain_length)
        return EncryptedMessage(header=header, ciphertext=self.ciphertext)

    @classmethod
    def _from_package(cls, message: EncryptedMessage) -> Sealed:
        header = message.header
        return cls(
            header.ratchet_pub,
            header.previous_sending_chain_length,
            header.sending_chain_length,
            message.ciphertext,
        )


def is_initiator(own_public: bytes, their_public: bytes) -> bool:
    """The side whose Ed25519 key sorts first opens the session."""
    return own_public < their_public


def shared_secret(identity: Identity, their_public: bytes) -> bytes:
    their_x25519 = ed25519_public_to_x25519(their_public)
    try:
        dh = nacl.bindings.crypto_scalarmult(identity.x25519_private, their_x25519)
    except nacl.exceptions.RuntimeError:
        raise ProtocolError("the contact's key is a low-order point") from None
    low, high = sorted((identity.public_key, their_public))
    return hashlib.blake2b(dh + low + high, digest_size=32, person=b"onionmsg-ratchet").digest()


class Ratchet:
    """One contact's Double Ratchet session. Serialise with ``to_json``/``from_json``."""

    def __init__(self, session: _DoubleRatchet) -> None:
        self._session = session

    @classmethod
    def start(
        cls, identity: Identity, their_public: bytes, plaintext: bytes, associated_data: bytes
    ) -> tuple[Ratchet, Sealed]:
        """Open the session (initiator side only) with its first message."""
        if not is_initiator(identity.public_key, their_public):
            raise ValueError("only the initiator opens a ratchet session")
        session, message = _run(
            _DoubleRatchet.encrypt_initial_message(
                **_PARAMETERS,
                shared_secret=shared_secret(identity, their_public),
                recipient_ratchet_pub=ed25519_public_to_x25519(their_public),
                message=plaintext,
                associated_data=associated_data,
            )
        )
        return cls(session), Sealed._from_package(message)

    @classmethod
    def accept(
        cls, identity: Identity, their_public: bytes, sealed: Sealed, associated_data: bytes
    ) -> tuple[Ratchet, bytes]:
        """Join the session the initiator opened, from its first message."""
        if is_initiator(identity.public_key, their_public):
            raise ProtocolError("the contact tried to open a session it must not open")
        try:
            session, plaintext = _run(
                _DoubleRatchet.decrypt_initial_message(
                    **_PARAMETERS,
                    shared_secret=shared_secret(identity, their_public),
                    own_ratchet_priv=identity.x25519_private,
                    message=sealed._package(),
                    associated_data=associated_data,
                )
            )
        except _FAILURES as error:
            name = type(error).__name__
            raise ProtocolError(f"cannot open the contact's session ({name})") from None
        return cls(session), plaintext

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> Sealed:
        message = _run(self._session.encrypt_message(plaintext, associated_data))
        return Sealed._from_package(message)

    def decrypt(self, sealed: Sealed, associated_data: bytes) -> bytes:
        """The plaintext; on any failure ProtocolError and the session is unchanged."""
        with warnings.catch_warnings():
            # The package warns (and skips the keys) when an old chain had > MAX_SKIP
            # unread messages; we refuse such jumps below anyway.
            warnings.simplefilter("ignore")
            try:
                return _run(self._session.decrypt_message(sealed._package(), associated_data))
            except _FAILURES as error:
                raise ProtocolError(f"undecryptable message ({type(error).__name__})") from None

    def to_json(self) -> str:
        return json.dumps(self._session.json, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Ratchet:
        return cls(_DoubleRatchet.from_json(json.loads(text), **_PARAMETERS))


_FAILURES = (
    AuthenticationFailedException,
    DecryptionFailedException,
    DoSProtectionException,
    DuplicateMessageException,
    ValueError,
)
