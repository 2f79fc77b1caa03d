"""Noise_XK_25519_ChaChaPoly_BLAKE2b (Noise Protocol Framework, revision 34), sans-IO.

Written to the specification's pseudo-code (sections 5.1-5.3, 7.5) with PyNaCl's
primitives; tests/crypto/test_noise.py checks it byte for byte against the independent
``noiseprotocol`` package. Message sizes, for a payload of p bytes:

    message 1 (-> e, es):  32 + 16 + p
    message 2 (<- e, ee):  32 + 16 + p
    message 3 (-> s, se):  48 + 16 + p

Any bad input from the peer raises ProtocolError; calling a method out of turn is a
programming error and raises RuntimeError.
"""

from __future__ import annotations

import hashlib
import hmac

import nacl.bindings
import nacl.exceptions
import nacl.utils

from onionmsg.errors import ProtocolError

PROTOCOL_NAME = b"Noise_XK_25519_ChaChaPoly_BLAKE2b"
DH_LEN = 32
TAG_LEN = 16
HASH_LEN = 64
MAX_NONCE = 2**64 - 1  # reserved by the spec (used by Rekey)


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASH_LEN).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2b).digest()


def _hkdf(chaining_key: bytes, input_key_material: bytes, outputs: int) -> list[bytes]:
    temp_key = _hmac(chaining_key, input_key_material)
    output1 = _hmac(temp_key, b"\x01")
    output2 = _hmac(temp_key, output1 + b"\x02")
    if outputs == 2:
        return [output1, output2]
    return [output1, output2, _hmac(temp_key, output2 + b"\x03")]


def _nonce(n: int) -> bytes:
    return b"\x00" * 4 + n.to_bytes(8, "little")


def _dh(private: bytes, public: bytes) -> bytes:
    try:
        # libsodium refuses low-order points (an all-zero shared secret).
        return nacl.bindings.crypto_scalarmult(private, public)
    except nacl.exceptions.RuntimeError:
        raise ProtocolError("the peer's key is a low-order point") from None


def _public(private: bytes) -> bytes:
    return nacl.bindings.crypto_scalarmult_base(private)


class CipherState:
    """A key and a counter nonce (spec 5.1)."""

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != 32:
            raise ValueError("a CipherState key is 32 bytes")
        self._key = key
        self._n = 0

    @property
    def nonce(self) -> int:
        return self._n

    @property
    def has_key(self) -> bool:
        return self._key is not None

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._key is None:
            return plaintext
        if self._n >= MAX_NONCE:
            raise ProtocolError("nonces exhausted: the link must be re-established")
        ciphertext: bytes = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext, ad, _nonce(self._n), self._key
        )
        self._n += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._key is None:
            return ciphertext
        if self._n >= MAX_NONCE:
            raise ProtocolError("nonces exhausted: the link must be re-established")
        try:
            plaintext: bytes = nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
                ciphertext, ad, _nonce(self._n), self._key
            )
        except nacl.exceptions.CryptoError:
            raise ProtocolError("authentication failed (tampered, replayed or reordered)") from None
        self._n += 1
        return plaintext

    def rekey(self) -> None:
        """REKEY(k): the first 32 bytes of ENCRYPT(k, maxnonce, zerolen, zeros)."""
        if self._key is None:
            raise RuntimeError("rekey without a key")
        self._key = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            bytes(32), b"", _nonce(MAX_NONCE), self._key
        )[:32]


class _SymmetricState:
    """Spec 5.2, with HASH = BLAKE2b."""

    def __init__(self) -> None:
        # len(PROTOCOL_NAME) <= HASHLEN, so h is the name zero-padded.
        self.h = PROTOCOL_NAME.ljust(HASH_LEN, b"\x00")
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, input_key_material: bytes) -> None:
        self.ck, temp_k = _hkdf(self.ck, input_key_material, 2)
        self.cipher = CipherState(temp_k[:32])

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
        temp_k1, temp_k2 = _hkdf(self.ck, b"", 2)
        return CipherState(temp_k1[:32]), CipherState(temp_k2[:32])


class XKHandshake:
    """One side of an XK handshake (spec 5.3 and pattern XK of section 7.5)."""

    def __init__(
        self,
        initiator: bool,
        local_static_private: bytes,
        remote_static_public: bytes | None,
        prologue: bytes,
        ephemeral_private: bytes | None,
    ) -> None:
        self._initiator = initiator
        self._s = local_static_private
        self._s_pub = _public(local_static_private)
        self._e = ephemeral_private or nacl.utils.random(32)
        self._e_pub = _public(self._e)
        self._rs = remote_static_public
        self._re: bytes | None = None
        self._state = _SymmetricState()
        self._state.mix_hash(prologue)
        # Pre-message "<- s": both sides hash the responder's static key.
        responder_static = remote_static_public if initiator else self._s_pub
        assert responder_static is not None
        self._state.mix_hash(responder_static)
        self._step = 0  # messages processed so far (0..3)
        self._split: tuple[CipherState, CipherState] | None = None

    @classmethod
    def initiator(
        cls,
        local_static_private: bytes,
        remote_static_public: bytes,
        prologue: bytes,
        *,
        ephemeral_private: bytes | None = None,
    ) -> XKHandshake:
        if len(remote_static_public) != DH_LEN:
            raise ValueError("a remote static key is 32 bytes")
        return cls(True, local_static_private, remote_static_public, prologue, ephemeral_private)

    @classmethod
    def responder(
        cls,
        local_static_private: bytes,
        prologue: bytes,
        *,
        ephemeral_private: bytes | None = None,
    ) -> XKHandshake:
        return cls(False, local_static_private, None, prologue, ephemeral_private)

    @property
    def complete(self) -> bool:
        return self._step == 3

    @property
    def remote_static_public(self) -> bytes | None:
        return self._rs

    @property
    def handshake_hash(self) -> bytes:
        return self._state.h

    def _my_turn(self) -> bool:
        # The initiator writes messages 1 and 3 (steps 0 and 2); the responder message 2.
        return (self._step % 2 == 0) == self._initiator

    def write_message(self, payload: bytes = b"") -> bytes:
        if self.complete or not self._my_turn():
            raise RuntimeError("write_message out of turn")
        state = self._state
        out = b""
        if self._step in (0, 1):  # "-> e, es" / "<- e, ee"
            state.mix_hash(self._e_pub)
            out += self._e_pub
            assert self._re is not None or self._step == 0
            if self._step == 0:
                assert self._rs is not None
                state.mix_key(_dh(self._e, self._rs))  # es
            else:
                assert self._re is not None
                state.mix_key(_dh(self._e, self._re))  # ee
        else:  # "-> s, se"
            out += state.encrypt_and_hash(self._s_pub)
            assert self._re is not None
            state.mix_key(_dh(self._s, self._re))  # se
        out += state.encrypt_and_hash(payload)
        self._advance()
        return out

    def read_message(self, message: bytes) -> bytes:
        if self.complete or self._my_turn():
            raise ProtocolError("handshake message out of turn")
        state = self._state
        if self._step in (0, 1):
            if len(message) < DH_LEN + TAG_LEN:
                raise ProtocolError("handshake message too short")
            self._re = message[:DH_LEN]
            state.mix_hash(self._re)
            if self._step == 0:
                state.mix_key(_dh(self._s, self._re))  # es, responder side
            else:
                state.mix_key(_dh(self._e, self._re))  # ee
            rest = message[DH_LEN:]
        else:
            if len(message) < DH_LEN + 2 * TAG_LEN:
                raise ProtocolError("handshake message too short")
            self._rs = state.decrypt_and_hash(message[: DH_LEN + TAG_LEN])
            assert self._re is not None
            state.mix_key(_dh(self._e, self._rs))  # se, responder side
            rest = message[DH_LEN + TAG_LEN :]
        payload = state.decrypt_and_hash(rest)
        self._advance()
        return payload

    def _advance(self) -> None:
        self._step += 1
        if self._step == 3:
            self._split = self._state.split()

    def split(self) -> tuple[CipherState, CipherState]:
        """(send, receive) cipher states for this side."""
        if self._split is None:
            raise ProtocolError("the handshake is not complete")
        c1, c2 = self._split
        return (c1, c2) if self._initiator else (c2, c1)
