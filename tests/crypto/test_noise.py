"""Noise XK: byte-exact against the independent `noiseprotocol` package and a cacophony
vector, interop both ways, and every way a peer can send bad bytes."""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any

import nacl.bindings
import nacl.utils
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st
from noise.backends.default.hashes import hmac_hash
from noise.connection import Keypair, NoiseConnection

from onionmsg.crypto import noise
from onionmsg.crypto.noise import (
    DH_LEN,
    MAX_NONCE,
    PROTOCOL_NAME,
    TAG_LEN,
    CipherState,
    XKHandshake,
)
from onionmsg.errors import ProtocolError

PROLOGUE = b"onionmsg test prologue"

# Low-order X25519 points and non-canonical/high-bit encodings of them; any DH with one
# of these is all zeros.
LOW_ORDER_POINTS = [
    bytes.fromhex(h)
    for h in (
        "00" * 32,
        "01" + "00" * 31,
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ec" + "ff" * 30 + "7f",
        "ed" + "ff" * 30 + "7f",
        "ee" + "ff" * 30 + "7f",
        "00" * 31 + "80",
        "01" + "00" * 30 + "80",
    )
]


def public(private: bytes) -> bytes:
    return nacl.bindings.crypto_scalarmult_base(private)


def key(start: int) -> bytes:
    return bytes(range(start, start + 32))


class Keys:
    """Static and ephemeral private keys for both sides of one handshake."""

    def __init__(self, i_s: bytes, i_e: bytes, r_s: bytes, r_e: bytes) -> None:
        self.i_s, self.i_e, self.r_s, self.r_e = i_s, i_e, r_s, r_e


FIXED = Keys(key(0), key(32), key(64), key(96))


def ours(keys: Keys, prologue: bytes = PROLOGUE) -> tuple[XKHandshake, XKHandshake]:
    initiator = XKHandshake.initiator(
        keys.i_s, public(keys.r_s), prologue, ephemeral_private=keys.i_e
    )
    responder = XKHandshake.responder(keys.r_s, prologue, ephemeral_private=keys.r_e)
    return initiator, responder


def theirs(
    initiator: bool,
    static_private: bytes,
    ephemeral_private: bytes | None,
    prologue: bytes,
    remote_static_public: bytes | None = None,
) -> Any:
    """A noiseprotocol NoiseConnection, handshake started."""
    connection = NoiseConnection.from_name(PROTOCOL_NAME)
    connection.set_prologue(prologue)
    if initiator:
        connection.set_as_initiator()
        connection.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote_static_public)
    else:
        connection.set_as_responder()
    connection.set_keypair_from_private_bytes(Keypair.STATIC, static_private)
    if ephemeral_private is not None:
        connection.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral_private)
    with warnings.catch_warnings():
        # It warns that a fixed ephemeral is for tests only: this is a test.
        warnings.simplefilter("ignore")
        connection.start_handshake()
    return connection


def their_pair(keys: Keys, prologue: bytes = PROLOGUE) -> tuple[Any, Any]:
    return (
        theirs(True, keys.i_s, keys.i_e, prologue, public(keys.r_s)),
        theirs(False, keys.r_s, keys.r_e, prologue),
    )


def handshake(
    initiator: XKHandshake, responder: XKHandshake, payloads: tuple[bytes, bytes, bytes]
) -> list[bytes]:
    m1 = initiator.write_message(payloads[0])
    assert responder.read_message(m1) == payloads[0]
    m2 = responder.write_message(payloads[1])
    assert initiator.read_message(m2) == payloads[1]
    m3 = initiator.write_message(payloads[2])
    assert responder.read_message(m3) == payloads[2]
    assert initiator.complete and responder.complete
    return [m1, m2, m3]


def their_handshake(
    initiator: Any, responder: Any, payloads: tuple[bytes, bytes, bytes]
) -> list[bytes]:
    m1 = bytes(initiator.write_message(payloads[0]))
    assert bytes(responder.read_message(m1)) == payloads[0]
    m2 = bytes(responder.write_message(payloads[1]))
    assert bytes(initiator.read_message(m2)) == payloads[1]
    m3 = bytes(initiator.write_message(payloads[2]))
    assert bytes(responder.read_message(m3)) == payloads[2]
    assert initiator.handshake_finished and responder.handshake_finished
    return [m1, m2, m3]


def established(keys: Keys = FIXED) -> tuple[XKHandshake, XKHandshake, list[bytes]]:
    initiator, responder = ours(keys)
    messages = handshake(initiator, responder, (b"one", b"two", b"three"))
    return initiator, responder, messages


# -- byte-exact against noiseprotocol -----------------------------------------------------


def assert_same_as_noiseprotocol(
    keys: Keys, prologue: bytes, payloads: tuple[bytes, bytes, bytes], transport: list[bytes]
) -> None:
    initiator, responder = ours(keys, prologue)
    their_initiator, their_responder = their_pair(keys, prologue)

    assert handshake(initiator, responder, payloads) == their_handshake(
        their_initiator, their_responder, payloads
    )
    assert initiator.handshake_hash == responder.handshake_hash
    assert initiator.handshake_hash == their_initiator.get_handshake_hash()
    assert responder.handshake_hash == their_responder.get_handshake_hash()
    assert responder.remote_static_public == public(keys.i_s)

    i_send, i_recv = initiator.split()
    r_send, r_recv = responder.split()
    for round_, data in enumerate(transport):
        if round_ == len(transport) // 2:
            # Rekey every cipher mid-stream; noiseprotocol must agree on the new keys.
            for cipher in (i_send, i_recv, r_send, r_recv):
                cipher.rekey()
            their_initiator.rekey_outbound_cipher()
            their_initiator.rekey_inbound_cipher()
            their_responder.rekey_outbound_cipher()
            their_responder.rekey_inbound_cipher()
        forward = i_send.encrypt_with_ad(b"", data)
        assert forward == their_initiator.encrypt(data)
        assert r_recv.decrypt_with_ad(b"", forward) == data
        assert bytes(their_responder.decrypt(forward)) == data
        backward = r_send.encrypt_with_ad(b"", data[::-1])
        assert backward == their_responder.encrypt(data[::-1])
        assert i_recv.decrypt_with_ad(b"", backward) == data[::-1]
        assert bytes(their_initiator.decrypt(backward)) == data[::-1]


@pytest.mark.parametrize(
    "keys",
    [
        FIXED,
        Keys(key(1), key(2), key(3), key(4)),
        Keys(bytes(32), bytes([1]) * 32, bytes([0xFF]) * 32, bytes([0x80]) * 32),
    ],
    ids=["range", "shifted-range", "extreme-bytes"],
)
def test_byte_exact_with_fixed_keys(keys: Keys) -> None:
    assert_same_as_noiseprotocol(
        keys,
        PROLOGUE,
        (b"", b"hello responder", b"x" * 300),
        [b"", b"a", b"transport" * 50, bytes(range(256))],
    )


def test_empty_prologue_and_payloads_byte_exact() -> None:
    assert_same_as_noiseprotocol(FIXED, b"", (b"", b"", b""), [b"", b""])


@settings(max_examples=50, deadline=None)
@given(
    private_keys=st.lists(st.binary(min_size=32, max_size=32), min_size=4, max_size=4),
    prologue=st.binary(max_size=100),
    payloads=st.tuples(st.binary(max_size=200), st.binary(max_size=200), st.binary(max_size=200)),
    transport=st.lists(st.binary(max_size=300), max_size=6),
)
def test_byte_exact_property(
    private_keys: list[bytes],
    prologue: bytes,
    payloads: tuple[bytes, bytes, bytes],
    transport: list[bytes],
) -> None:
    assert_same_as_noiseprotocol(Keys(*private_keys), prologue, payloads, transport)


# -- known answers --------------------------------------------------------------------------

# The Noise_XK_25519_ChaChaPoly_BLAKE2b vector of cacophony's test vectors (as shipped in
# mcginty/snow, tests/vectors/cacophony.txt), copied here so the test needs no download.
# Messages alternate initiator/responder: three handshake messages, then transport.
CACOPHONY = {
    "prologue": "4a6f686e2047616c74",
    "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
    "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
    "init_remote_static": "31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62",
    "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
    "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
    "handshake_hash": "f19cda578a38f47ffef8844a7568a5900b28351a7882c7a294ae45d154827b39"
    "b3516a076ff383654107a0f477d501ad921e111da06f96dc6bd9e8b0c4eca800",
}
CACOPHONY_MESSAGES = [
    (
        "4c756477696720766f6e204d69736573",
        "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
        "2806e28405ac4325fcf83607489496d6d326ab3fe084dbb1634f801405a69297",
    ),
    (
        "4d757272617920526f746862617264",
        "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
        "0ea4de2eff2cd3b1e7be5f7e792d87395f0863722ab04ec030529d6c5820de",
    ),
    (
        "462e20412e20486179656b",
        "ec9136de99472b49eda3ba9fe84882d48f131b27386784b3f45e9f103ad1b6ef"
        "a2f2e95f0afce5d0d4c8052aed81438500be54a8fd8dd4f5ba04f7907b312701"
        "d0d687716a30b23c22f568",
    ),
    ("4361726c204d656e676572", "d6ea0c3364ed480b415d44c3235fdb311dfa8d6e1dc1e6f3a76ee3"),
    (
        "4a65616e2d426170746973746520536179",
        "59f41ca9ea14a8305bae379bbdd8b4d5cf9bd308d2d7e042e2bf03c48dd910b37b",
    ),
    (
        "457567656e2042f6686d20766f6e2042617765726b",
        "fa23ba8af343a3934c64219d3d0206d66894f7cdb180b738324608e15b0102095ed2f44d4b",
    ),
]


def test_cacophony_vector() -> None:
    v = {name: bytes.fromhex(value) for name, value in CACOPHONY.items()}
    assert public(v["resp_static"]) == v["init_remote_static"]
    initiator = XKHandshake.initiator(
        v["init_static"],
        v["init_remote_static"],
        v["prologue"],
        ephemeral_private=v["init_ephemeral"],
    )
    responder = XKHandshake.responder(
        v["resp_static"], v["prologue"], ephemeral_private=v["resp_ephemeral"]
    )
    messages = [(bytes.fromhex(p), bytes.fromhex(c)) for p, c in CACOPHONY_MESSAGES]

    for index, (payload, ciphertext) in enumerate(messages[:3]):
        writer, reader = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        assert writer.write_message(payload) == ciphertext
        assert reader.read_message(ciphertext) == payload
        if index == 1:
            # This cacophony file's "handshake_hash" is h *before* the last handshake
            # message (checked the same way for its NN vector); noiseprotocol and the
            # spec's GetHandshakeHash() give the final h, compared below.
            assert initiator.handshake_hash == v["handshake_hash"]

    their_initiator, their_responder = (
        theirs(
            True, v["init_static"], v["init_ephemeral"], v["prologue"], public(v["resp_static"])
        ),
        theirs(False, v["resp_static"], v["resp_ephemeral"], v["prologue"]),
    )
    their_handshake(
        their_initiator, their_responder, (messages[0][0], messages[1][0], messages[2][0])
    )
    assert initiator.handshake_hash == their_initiator.get_handshake_hash()

    i_send, i_recv = initiator.split()
    r_send, r_recv = responder.split()
    for index, (payload, ciphertext) in enumerate(messages[3:], start=3):
        send, recv = (i_send, r_recv) if index % 2 == 0 else (r_send, i_recv)
        assert send.encrypt_with_ad(b"", payload) == ciphertext
        assert recv.decrypt_with_ad(b"", ciphertext) == payload


def test_hmac_blake2b_matches_noiseprotocol() -> None:
    # Keys longer than BLOCKLEN (128) are hashed first: cover both sides of that line.
    algorithm = partial(hashes.BLAKE2b, digest_size=64)
    for length in (0, 1, 32, 64, 127, 128, 129, 200):
        k = bytes(range(length % 256)) * (length // 256) + bytes(range(length % 256))
        data = b"data" * length
        assert noise._hmac(k, data) == hmac_hash(k, data, algorithm)


def test_message_sizes() -> None:
    for p in (0, 1, 100):
        initiator, responder = ours(FIXED)
        m1 = initiator.write_message(bytes(p))
        assert len(m1) == 32 + 16 + p
        responder.read_message(m1)
        m2 = responder.write_message(bytes(p))
        assert len(m2) == 32 + 16 + p
        initiator.read_message(m2)
        m3 = initiator.write_message(bytes(p))
        assert len(m3) == 48 + 16 + p
        responder.read_message(m3)


# -- interop ------------------------------------------------------------------------------


def exchange(ours_send: CipherState, ours_recv: CipherState, peer: Any) -> None:
    for data in (b"", b"ping", b"z" * 1000):
        assert bytes(peer.decrypt(ours_send.encrypt_with_ad(b"", data))) == data
        assert ours_recv.decrypt_with_ad(b"", peer.encrypt(data)) == data


def test_our_initiator_with_their_responder() -> None:
    i_s, r_s = nacl.utils.random(32), nacl.utils.random(32)
    initiator = XKHandshake.initiator(i_s, public(r_s), PROLOGUE)
    responder = theirs(False, r_s, None, PROLOGUE)
    assert bytes(responder.read_message(initiator.write_message(b"1"))) == b"1"
    assert initiator.read_message(bytes(responder.write_message(b"2"))) == b"2"
    assert bytes(responder.read_message(initiator.write_message(b"3"))) == b"3"
    assert responder.handshake_finished and initiator.complete
    assert initiator.handshake_hash == responder.get_handshake_hash()
    exchange(*initiator.split(), responder)


def test_their_initiator_with_our_responder() -> None:
    i_s, r_s = nacl.utils.random(32), nacl.utils.random(32)
    initiator = theirs(True, i_s, None, PROLOGUE, public(r_s))
    responder = XKHandshake.responder(r_s, PROLOGUE)
    assert responder.read_message(bytes(initiator.write_message(b"1"))) == b"1"
    assert bytes(initiator.read_message(responder.write_message(b"2"))) == b"2"
    assert responder.read_message(bytes(initiator.write_message(b"3"))) == b"3"
    assert initiator.handshake_finished and responder.complete
    assert responder.remote_static_public == public(i_s)
    assert responder.handshake_hash == initiator.get_handshake_hash()
    exchange(*responder.split(), initiator)


def test_random_ephemerals_differ_per_session() -> None:
    first = XKHandshake.initiator(key(0), public(key(64)), PROLOGUE).write_message()
    second = XKHandshake.initiator(key(0), public(key(64)), PROLOGUE).write_message()
    assert first[:DH_LEN] != second[:DH_LEN]


# -- failures -----------------------------------------------------------------------------


def test_wrong_responder_static_fails() -> None:
    # The initiator believes B's key is X, but B holds Y.
    x, y = key(64), key(200 - 32)
    initiator = XKHandshake.initiator(key(0), public(x), PROLOGUE, ephemeral_private=key(32))
    m1 = initiator.write_message()
    # An honest B notices first: es under Y cannot open message 1's payload tag.
    with pytest.raises(ProtocolError):
        XKHandshake.responder(y, PROLOGUE).read_message(m1)
    # An impostor holding Y can only answer with a message 2 from some other session
    # (it cannot derive this one's keys without X): the initiator rejects it.
    other_initiator = XKHandshake.initiator(key(1), public(y), PROLOGUE)
    impostor = XKHandshake.responder(y, PROLOGUE)
    impostor.read_message(other_initiator.write_message())
    with pytest.raises(ProtocolError):
        initiator.read_message(impostor.write_message())
    assert not initiator.complete


def flips(message: bytes) -> list[bytes]:
    out = []
    for position in range(len(message)):
        for bit in (0x01, 0x80):  # 0x80 on byte 31 of a key is the bit X25519 ignores
            tampered = bytearray(message)
            tampered[position] ^= bit
            out.append(bytes(tampered))
    return out


def test_tampered_message_1_rejected_at_every_position() -> None:
    m1 = ours(FIXED)[0].write_message(b"payload")
    for tampered in flips(m1):
        with pytest.raises(ProtocolError):
            ours(FIXED)[1].read_message(tampered)


def test_tampered_message_2_rejected_at_every_position() -> None:
    initiator, responder = ours(FIXED)
    responder.read_message(initiator.write_message())
    m2 = responder.write_message(b"payload")
    for tampered in flips(m2):
        fresh_initiator, fresh_responder = ours(FIXED)
        fresh_responder.read_message(fresh_initiator.write_message())
        with pytest.raises(ProtocolError):
            fresh_initiator.read_message(tampered)


def test_tampered_message_3_rejected_at_every_position() -> None:
    _, _, (_, _, m3) = established()
    for tampered in flips(m3):
        initiator, responder = ours(FIXED)
        responder.read_message(initiator.write_message(b"one"))
        initiator.read_message(responder.write_message(b"two"))
        with pytest.raises(ProtocolError):
            responder.read_message(tampered)
        assert responder.remote_static_public is None


def reader_for(step: int) -> XKHandshake:
    """A fresh handshake (fixed keys) about to read message step+1."""
    initiator, responder = ours(FIXED)
    if step == 0:
        return responder
    responder.read_message(initiator.write_message(b"one"))
    if step == 1:
        responder.write_message(b"two")
        return initiator
    initiator.read_message(responder.write_message(b"two"))
    initiator.write_message(b"three")
    return responder


@pytest.mark.parametrize("step", [0, 1, 2])
def test_truncated_and_extended_messages_rejected(step: int) -> None:
    _, _, messages = established()
    message = messages[step]
    for length in range(len(message)):
        with pytest.raises(ProtocolError):
            reader_for(step).read_message(message[:length])
    with pytest.raises(ProtocolError):
        reader_for(step).read_message(message + b"\x00")
    # The untouched message still works from the same starting point.
    reader_for(step).read_message(message)


@settings(max_examples=50, deadline=None)
@given(step=st.integers(0, 2), garbage=st.binary(max_size=300))
def test_garbage_only_ever_raises_protocol_error(step: int, garbage: bytes) -> None:
    reader = reader_for(step)
    with pytest.raises(ProtocolError):
        reader.read_message(garbage)
    # A failed handshake stays failed, even for the genuine message.
    with pytest.raises(ProtocolError):
        reader.read_message(established()[2][step])


def test_oversized_message_rejected() -> None:
    with pytest.raises(ProtocolError):
        reader_for(0).read_message(bytes(65536))


def test_replayed_message_1_gets_fresh_message_2_and_old_message_3_fails() -> None:
    i_s, r_s = key(0), key(64)
    initiator = XKHandshake.initiator(i_s, public(r_s), PROLOGUE)
    responder = XKHandshake.responder(r_s, PROLOGUE)
    m1 = initiator.write_message()
    responder.read_message(m1)
    m2 = responder.write_message()
    initiator.read_message(m2)
    m3 = initiator.write_message(b"secret")
    responder.read_message(m3)

    replay_responder = XKHandshake.responder(r_s, PROLOGUE)
    replay_responder.read_message(m1)  # message 1 alone proves nothing, so it is accepted
    fresh_m2 = replay_responder.write_message()
    assert fresh_m2 != m2
    assert fresh_m2[:DH_LEN] != m2[:DH_LEN]
    with pytest.raises(ProtocolError):
        replay_responder.read_message(m3)
    assert not replay_responder.complete
    assert replay_responder.remote_static_public is None


def test_out_of_turn() -> None:
    initiator, responder = ours(FIXED)
    with pytest.raises(ProtocolError):
        initiator.read_message(bytes(48))  # the initiator speaks first
    with pytest.raises(RuntimeError):
        responder.write_message()  # nor may the responder
    m1 = initiator.write_message()
    with pytest.raises(RuntimeError):
        initiator.write_message()
    responder.read_message(m1)
    with pytest.raises(ProtocolError):
        responder.read_message(m1)  # its turn to write, not read
    m2 = responder.write_message()
    initiator.read_message(m2)
    m3 = initiator.write_message()
    responder.read_message(m3)
    for side in (initiator, responder):
        with pytest.raises(ProtocolError):
            side.read_message(m3)
        with pytest.raises(RuntimeError):
            side.write_message()


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_low_order_ephemeral_in_message_1_rejected(point: bytes) -> None:
    with pytest.raises(ProtocolError):
        XKHandshake.responder(key(64), PROLOGUE).read_message(point + bytes(TAG_LEN))


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_low_order_ephemeral_in_message_2_rejected(point: bytes) -> None:
    initiator, _ = ours(FIXED)
    initiator.write_message()
    with pytest.raises(ProtocolError):
        initiator.read_message(point + bytes(TAG_LEN))


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_low_order_static_in_message_3_rejected(point: bytes) -> None:
    initiator, responder = ours(FIXED)
    # A malicious initiator announces a low-order static key (properly encrypted).
    initiator._s_public = point
    responder.read_message(initiator.write_message())
    initiator.read_message(responder.write_message())
    m3 = initiator.write_message()
    with pytest.raises(ProtocolError):
        responder.read_message(m3)
    assert responder.remote_static_public is None


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_low_order_remote_static_refused_by_initiator(point: bytes) -> None:
    with pytest.raises(ValueError):
        XKHandshake.initiator(key(0), point, PROLOGUE)


def test_bad_key_sizes() -> None:
    with pytest.raises(ValueError):
        XKHandshake.initiator(key(0)[:31], public(key(64)), PROLOGUE)
    with pytest.raises(ValueError):
        XKHandshake.initiator(key(0), public(key(64))[:31], PROLOGUE)
    with pytest.raises(ValueError):
        XKHandshake.responder(key(0) + b"x", PROLOGUE)
    with pytest.raises(ValueError):
        XKHandshake.responder(key(0), PROLOGUE, ephemeral_private=b"short")
    with pytest.raises(ValueError):
        CipherState(bytes(31))


def test_split_before_complete_and_twice() -> None:
    initiator, responder = ours(FIXED)
    with pytest.raises(ProtocolError):
        initiator.split()
    responder.read_message(initiator.write_message())
    initiator.read_message(responder.write_message())
    with pytest.raises(ProtocolError):
        responder.split()
    responder.read_message(initiator.write_message())
    initiator.split()
    responder.split()
    with pytest.raises(RuntimeError):
        initiator.split()


def test_split_directions_pair_up() -> None:
    initiator, responder, _ = established()
    i_send, i_recv = initiator.split()
    r_send, r_recv = responder.split()
    assert r_recv.decrypt_with_ad(b"ad", i_send.encrypt_with_ad(b"ad", b"to r")) == b"to r"
    assert i_recv.decrypt_with_ad(b"ad", r_send.encrypt_with_ad(b"ad", b"to i")) == b"to i"
    # The two directions use different keys.
    assert i_send.encrypt_with_ad(b"", b"same") != r_send.encrypt_with_ad(b"", b"same")


def test_payload_too_large_for_a_noise_message() -> None:
    initiator, _ = ours(FIXED)
    with pytest.raises(ValueError):
        initiator.write_message(bytes(65535 - 48 + 1))
    assert len(initiator.write_message(bytes(65535 - 48))) == 65535


# -- CipherState --------------------------------------------------------------------------


def pair() -> tuple[CipherState, CipherState]:
    return CipherState(key(7)), CipherState(key(7))


def test_nonce_counts_up() -> None:
    sender, receiver = pair()
    for n in range(5):
        assert sender.nonce == receiver.nonce == n
        receiver.decrypt_with_ad(b"", sender.encrypt_with_ad(b"", b"m"))
    assert sender.nonce == receiver.nonce == 5


def test_nonce_layout_matches_an_independent_chacha20poly1305() -> None:
    # 4 zero bytes, then n as a 64-bit little-endian: check at an n whose bytes all differ.
    cipher = CipherState(key(9))
    n = 0x0102030405060708
    cipher._n = n
    expected = ChaCha20Poly1305(key(9)).encrypt(
        bytes(4) + n.to_bytes(8, "little"), b"plaintext", b"ad"
    )
    assert cipher.encrypt_with_ad(b"ad", b"plaintext") == expected


def test_replayed_and_reordered_ciphertexts_fail() -> None:
    sender, receiver = pair()
    first = sender.encrypt_with_ad(b"", b"first")
    second = sender.encrypt_with_ad(b"", b"second")
    with pytest.raises(ProtocolError):
        receiver.decrypt_with_ad(b"", second)  # reordered
    assert receiver.nonce == 0  # a failure does not advance the nonce
    assert receiver.decrypt_with_ad(b"", first) == b"first"
    with pytest.raises(ProtocolError):
        receiver.decrypt_with_ad(b"", first)  # replayed
    assert receiver.nonce == 1
    assert receiver.decrypt_with_ad(b"", second) == b"second"


def test_wrong_ad_short_and_tampered_ciphertexts_fail() -> None:
    sender, receiver = pair()
    ciphertext = sender.encrypt_with_ad(b"ad", b"message")
    for bad_ad, bad in (
        (b"other", ciphertext),
        (b"ad", ciphertext[:-1]),
        (b"ad", b""),
        (b"ad", bytes(TAG_LEN - 1)),
        (b"ad", ciphertext[:1] + bytes([ciphertext[1] ^ 1]) + ciphertext[2:]),
    ):
        with pytest.raises(ProtocolError):
            receiver.decrypt_with_ad(bad_ad, bad)
    assert receiver.decrypt_with_ad(b"ad", ciphertext) == b"message"


def test_rekey_on_both_sides() -> None:
    sender, receiver = pair()
    unchanged = CipherState(key(7))
    receiver.decrypt_with_ad(b"", sender.encrypt_with_ad(b"", b"before"))
    unchanged.encrypt_with_ad(b"", b"before")
    sender.rekey()
    receiver.rekey()
    assert sender.nonce == receiver.nonce == 1  # Rekey() leaves n alone
    ciphertext = sender.encrypt_with_ad(b"", b"after")
    assert ciphertext != unchanged.encrypt_with_ad(b"", b"after")
    assert receiver.decrypt_with_ad(b"", ciphertext) == b"after"
    # Only one side rekeying breaks the stream.
    sender.rekey()
    with pytest.raises(ProtocolError):
        receiver.decrypt_with_ad(b"", sender.encrypt_with_ad(b"", b"lost"))


def test_rekey_is_the_spec_formula() -> None:
    cipher = CipherState(key(5))
    cipher.rekey()
    expected_key = ChaCha20Poly1305(key(5)).encrypt(
        bytes(4) + MAX_NONCE.to_bytes(8, "little"), bytes(32), b""
    )[:32]
    assert cipher.encrypt_with_ad(b"", b"x") == CipherState(expected_key).encrypt_with_ad(b"", b"x")


def test_nonce_exhaustion() -> None:
    sender, receiver = pair()
    sender._n = receiver._n = MAX_NONCE - 1
    last = sender.encrypt_with_ad(b"", b"last")
    assert receiver.decrypt_with_ad(b"", last) == b"last"
    assert sender.nonce == receiver.nonce == MAX_NONCE
    with pytest.raises(ProtocolError):
        sender.encrypt_with_ad(b"", b"one too many")
    with pytest.raises(ProtocolError):
        receiver.decrypt_with_ad(b"", last)
    # Rekey still works at the reserved nonce: it never consumes it.
    sender.rekey()


def test_transport_message_size_limit() -> None:
    sender, receiver = pair()
    assert len(sender.encrypt_with_ad(b"", bytes(65535 - TAG_LEN))) == 65535
    with pytest.raises(ValueError):
        sender.encrypt_with_ad(b"", bytes(65535 - TAG_LEN + 1))
    with pytest.raises(ProtocolError):
        receiver.decrypt_with_ad(b"", bytes(65536))
