"""Noise_XK_25519_ChaChaPoly_BLAKE2b, sans-IO, after the Noise spec revision 34.

    XK:
      <- s
      ...
      -> e, es
      <- e, ee
      -> s, se

Message sizes for a payload of p bytes (every payload is encrypted, since ``es``
keys the cipher before the first one):

* message 1 (initiator): e (32) + AEAD(payload) (16 + p)        = 32 + 16 + p
* message 2 (responder): e (32) + AEAD(payload) (16 + p)        = 32 + 16 + p
* message 3 (initiator): AEAD(s) (48) + AEAD(payload) (16 + p)  = 48 + 16 + p

No Noise message, handshake or transport, may exceed 65535 bytes.

Errors: anything a peer can cause (a bad length, failed authentication, a message out
of turn, a DH with an all-zero result, nonce exhaustion) raises ProtocolError. A
handshake that failed once stays failed, because its state may already have absorbed
part of the bad message. Misuse by the caller (wrong key sizes, writing out of turn or
after completion, an oversized payload) raises ValueError or RuntimeError.

PyNaCl supplies only the primitives (X25519, ChaCha20-Poly1305-IETF, randomness);
HASH is hashlib's BLAKE2b and HMAC is Python's hmac over it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

import nacl.bindings
import nacl.exceptions
import nacl.utils

from onionmsg.errors import ProtocolError

PROTOCOL_NAME: Final = b"Noise_XK_25519_ChaChaPoly_BLAKE2b"
DH_LEN: Final = 32
TAG_LEN: Final = 16
KEY_LEN: Final = 32
HASH_LEN: Final = 64
BLOCK_LEN: Final = 128
MAX_MESSAGE_LEN: Final = 65535
# The spec reserves n = 2^64-1: Rekey() encrypts with it, no message ever may.
MAX_NONCE: Final = 2**64 - 1

_ZEROS32: Final = bytes(32)


# -- primitives ---------------------------------------------------------------------------


def _nonce(n: int) -> bytes:
    # ChaChaPoly in Noise: 32 bits of zeros, then the counter as a 64-bit little-endian.
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def _encrypt(k: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
    return nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, ad, _nonce(n), k)


def _decrypt(k: bytes, n: int, ad: bytes, ciphertext: bytes) -> bytes:
    # Below the tag length libsodium raises ValueError, not CryptoError: check first.
    if len(ciphertext) < TAG_LEN:
        raise ProtocolError("ciphertext shorter than the authentication tag")
    try:
        return nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(ciphertext, ad, _nonce(n), k)
    except nacl.exceptions.CryptoError:
        raise ProtocolError("authentication failed (tampered, replayed or reordered)") from None


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASH_LEN).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    # hashlib.blake2b's defaults are a 64-byte digest and a 128-byte block, i.e. HASHLEN
    # and BLOCKLEN, so this is HMAC-BLAKE2b exactly as the spec defines it.
    return hmac.digest(key, data, hashlib.blake2b)


def _hkdf2(chaining_key: bytes, input_key_material: bytes) -> tuple[bytes, bytes]:
    # HKDF(ck, ikm, 2); XK never needs the third output (only psk handshakes do).
    temp_key = _hmac(chaining_key, input_key_material)
    output1 = _hmac(temp_key, b"\x01")
    output2 = _hmac(temp_key, output1 + b"\x02")
    return output1, output2


def _public_key(private_key: bytes) -> bytes:
    return nacl.bindings.crypto_scalarmult_base(private_key)


def _dh(private_key: bytes, public_key: bytes) -> bytes:
    if len(public_key) != DH_LEN:
        raise ProtocolError("a public key must be 32 bytes")
    try:
        shared = nacl.bindings.crypto_scalarmult(private_key, public_key)
    except nacl.exceptions.CryptoError:
        # libsodium refuses an all-zero result (a low-order point), which would let
        # the peer force a DH output everybody knows.
        raise ProtocolError("DH with a low-order public key") from None
    if hmac.compare_digest(shared, _ZEROS32):  # in case a libsodium build does not check
        raise ProtocolError("DH with a low-order public key")
    return shared


def _check_private(name: str, key: bytes) -> bytes:
    if len(key) != DH_LEN:
        raise ValueError(f"{name} must be {DH_LEN} bytes")
    return bytes(key)


# -- CipherState (spec 5.1) ---------------------------------------------------------------


class CipherState:
    """A key and a nonce counter: one direction of a Noise session."""

    __slots__ = ("_k", "_n")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_LEN:
            raise ValueError(f"a CipherState key must be {KEY_LEN} bytes")
        self._k: bytes | None = bytes(key)
        self._n = 0

    @classmethod
    def _empty(cls) -> CipherState:
        # The handshake's cipher starts with no key (InitializeKey(empty)). The public
        # constructor refuses that, since a keyless transport would send plaintext.
        state = cls.__new__(cls)
        state._k = None
        state._n = 0
        return state

    def _initialize_key(self, key: bytes) -> None:
        self._k = key
        self._n = 0

    @property
    def nonce(self) -> int:
        """The nonce the next message will use."""
        return self._n

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """ENCRYPT(k, n++, ad, plaintext); the plaintext itself while there is no key."""
        if self._k is None:
            return plaintext
        if len(plaintext) + TAG_LEN > MAX_MESSAGE_LEN:
            raise ValueError("a Noise message is at most 65535 bytes")
        if self._n >= MAX_NONCE:
            raise ProtocolError("nonces exhausted: the session must end")
        ciphertext = _encrypt(self._k, self._n, ad, plaintext)
        self._n += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """DECRYPT(k, n++, ad, ciphertext); n advances only if authentication succeeds."""
        if self._k is None:
            return ciphertext
        if len(ciphertext) > MAX_MESSAGE_LEN:
            raise ProtocolError("a Noise message is at most 65535 bytes")
        if self._n >= MAX_NONCE:
            raise ProtocolError("nonces exhausted: the session must end")
        plaintext = _decrypt(self._k, self._n, ad, ciphertext)
        self._n += 1
        return plaintext

    def rekey(self) -> None:
        """k = the first 32 bytes of ENCRYPT(k, 2^64-1, empty, 32 zeros); n is unchanged."""
        if self._k is None:
            raise RuntimeError("cannot rekey a CipherState without a key")
        self._k = _encrypt(self._k, MAX_NONCE, b"", _ZEROS32)[:KEY_LEN]


# -- SymmetricState (spec 5.2) ------------------------------------------------------------


class _SymmetricState:
    __slots__ = ("cipher", "ck", "h")

    def __init__(self, protocol_name: bytes) -> None:
        # A name of at most HASHLEN bytes is zero-padded to HASHLEN, not hashed.
        if len(protocol_name) <= HASH_LEN:
            self.h = protocol_name.ljust(HASH_LEN, b"\x00")
        else:
            self.h = _hash(protocol_name)
        self.ck = self.h
        self.cipher = CipherState._empty()

    def mix_key(self, input_key_material: bytes) -> None:
        self.ck, temp_k = _hkdf2(self.ck, input_key_material)
        # HASHLEN is 64, so temp_k is truncated to the 32-byte cipher key.
        self.cipher._initialize_key(temp_k[:KEY_LEN])

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        temp_k1, temp_k2 = _hkdf2(self.ck, b"")
        return CipherState(temp_k1[:KEY_LEN]), CipherState(temp_k2[:KEY_LEN])


# -- HandshakeState for XK (spec 5.3, 7.5) ------------------------------------------------

# Whether the initiator writes message 1, 2, 3.
_INITIATOR_WRITES: Final = (True, False, True)
# The shortest valid message 1, 2, 3 (empty payload).
_MIN_LENGTHS: Final = (DH_LEN + TAG_LEN, DH_LEN + TAG_LEN, DH_LEN + TAG_LEN + TAG_LEN)


class XKHandshake:
    """One side of a Noise XK handshake: exchange three messages, then split()."""

    __slots__ = (
        "_e_private",
        "_e_public",
        "_failed",
        "_initiator",
        "_re",
        "_rs",
        "_s_private",
        "_s_public",
        "_split_done",
        "_step",
        "_symmetric",
    )

    def __init__(
        self,
        *,
        initiator: bool,
        local_static_private: bytes,
        remote_static_public: bytes | None,
        prologue: bytes,
        ephemeral_private: bytes | None,
    ) -> None:
        self._initiator = initiator
        self._s_private = _check_private("local_static_private", local_static_private)
        self._s_public = _public_key(self._s_private)
        if ephemeral_private is None:
            self._e_private = nacl.utils.random(DH_LEN)
        else:
            # A fixed ephemeral is for tests only: reusing one forfeits forward secrecy.
            self._e_private = _check_private("ephemeral_private", ephemeral_private)
        self._e_public = _public_key(self._e_private)
        self._rs = remote_static_public
        self._re: bytes | None = None
        self._step = 0  # messages done so far, 0..3
        self._failed = False
        self._split_done = False

        self._symmetric = _SymmetricState(PROTOCOL_NAME)
        self._symmetric.mix_hash(prologue)
        # Pre-message "<- s": both sides hash the responder's static public key.
        responder_static = remote_static_public if initiator else self._s_public
        assert responder_static is not None
        self._symmetric.mix_hash(responder_static)

    @classmethod
    def initiator(
        cls,
        local_static_private: bytes,
        remote_static_public: bytes,
        prologue: bytes,
        *,
        ephemeral_private: bytes | None = None,
    ) -> XKHandshake:
        """The side that dials; it must already know the responder's static public key."""
        if len(remote_static_public) != DH_LEN:
            raise ValueError(f"remote_static_public must be {DH_LEN} bytes")
        remote = bytes(remote_static_public)
        local = _check_private("local_static_private", local_static_private)
        # A clamped scalar is a multiple of the cofactor, so a low-order key gives an
        # all-zero DH with any private key: refuse it here, not in write_message().
        try:
            _dh(local, remote)
        except ProtocolError:
            raise ValueError("remote_static_public is a low-order point") from None
        return cls(
            initiator=True,
            local_static_private=local,
            remote_static_public=remote,
            prologue=prologue,
            ephemeral_private=ephemeral_private,
        )

    @classmethod
    def responder(
        cls,
        local_static_private: bytes,
        prologue: bytes,
        *,
        ephemeral_private: bytes | None = None,
    ) -> XKHandshake:
        """The side that answers; it learns the initiator's static key from message 3."""
        return cls(
            initiator=False,
            local_static_private=local_static_private,
            remote_static_public=None,
            prologue=prologue,
            ephemeral_private=ephemeral_private,
        )

    # -- state ---------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self._step == 3

    @property
    def remote_static_public(self) -> bytes | None:
        """The peer's static key: the initiator's input, or, for the responder, the key
        message 3 authenticated (None until then)."""
        return self._rs

    @property
    def handshake_hash(self) -> bytes:
        """h: unique to the session, fit for channel binding once complete."""
        return self._symmetric.h

    def _my_turn_to_write(self) -> bool:
        return _INITIATOR_WRITES[self._step] == self._initiator

    # -- messages ------------------------------------------------------------------------

    def write_message(self, payload: bytes = b"") -> bytes:
        """The next handshake message, carrying payload encrypted (message 1's payload
        has no forward secrecy). Out of turn, after completion or failure: RuntimeError."""
        if self._failed:
            raise RuntimeError("the handshake already failed")
        if self._step >= 3:
            raise RuntimeError("the handshake is already complete")
        if not self._my_turn_to_write():
            raise RuntimeError("it is the peer's turn to send")
        if _MIN_LENGTHS[self._step] + len(payload) > MAX_MESSAGE_LEN:
            raise ValueError("payload too large for a Noise message")
        try:
            message = self._write(bytes(payload))
        except BaseException:
            self._failed = True
            raise
        self._step += 1
        return message

    def read_message(self, message: bytes) -> bytes:
        """Process the peer's next handshake message and return its payload."""
        if self._failed:
            raise ProtocolError("the handshake already failed")
        if self._step >= 3:
            raise ProtocolError("handshake message after the handshake completed")
        if self._my_turn_to_write():
            raise ProtocolError("handshake message out of turn")
        message = bytes(message)
        if not _MIN_LENGTHS[self._step] <= len(message) <= MAX_MESSAGE_LEN:
            self._failed = True
            raise ProtocolError(f"handshake message {self._step + 1} has a bad length")
        try:
            payload = self._read(message)
        except ProtocolError:
            self._failed = True
            raise
        except Exception as error:  # anything else bad bytes provoke is still the peer's
            self._failed = True
            raise ProtocolError(f"invalid handshake message: {error}") from None
        self._step += 1
        return payload

    def _write(self, payload: bytes) -> bytes:
        sym = self._symmetric
        if self._step == 0:  # -> e, es
            assert self._rs is not None
            sym.mix_hash(self._e_public)
            sym.mix_key(_dh(self._e_private, self._rs))
            return self._e_public + sym.encrypt_and_hash(payload)
        assert self._re is not None
        if self._step == 1:  # <- e, ee
            sym.mix_hash(self._e_public)
            sym.mix_key(_dh(self._e_private, self._re))
            return self._e_public + sym.encrypt_and_hash(payload)
        # -> s, se
        encrypted_static = sym.encrypt_and_hash(self._s_public)
        sym.mix_key(_dh(self._s_private, self._re))
        return encrypted_static + sym.encrypt_and_hash(payload)

    def _read(self, message: bytes) -> bytes:
        sym = self._symmetric
        if self._step == 0:  # -> e, es  (this side is the responder)
            self._re = message[:DH_LEN]
            sym.mix_hash(self._re)
            sym.mix_key(_dh(self._s_private, self._re))
            return sym.decrypt_and_hash(message[DH_LEN:])
        if self._step == 1:  # <- e, ee  (this side is the initiator)
            self._re = message[:DH_LEN]
            sym.mix_hash(self._re)
            sym.mix_key(_dh(self._e_private, self._re))
            return sym.decrypt_and_hash(message[DH_LEN:])
        # -> s, se  (this side is the responder)
        remote_static = sym.decrypt_and_hash(message[: DH_LEN + TAG_LEN])
        sym.mix_key(_dh(self._e_private, remote_static))
        payload = sym.decrypt_and_hash(message[DH_LEN + TAG_LEN :])
        # Publish rs only once the whole message has authenticated.
        self._rs = remote_static
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """(send, receive) for this side. Only once: a second copy of the keys would let
        two senders reuse nonces."""
        if not self.complete:
            raise ProtocolError("the handshake is not complete")
        if self._split_done:
            raise RuntimeError("split() may be called only once")
        self._split_done = True
        c1, c2 = self._symmetric.split()
        # Forget the chaining key: nothing more may be derived from this handshake.
        self._symmetric.ck = b""
        return (c1, c2) if self._initiator else (c2, c1)
