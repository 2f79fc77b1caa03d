"""No key in a repr, a str or an exception message: objects that hold secrets hide them.

Python cannot wipe memory (threat-model.md, "Residual risks"), but it can keep keys out of
the text that ends up in logs, tracebacks and test reports.
"""

from __future__ import annotations

import base64
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from onionmsg.backup import seal_backup, take_backup
from onionmsg.crypto.endpoint import ClientAuthKey, EndpointKey
from onionmsg.crypto.identity import Identity
from onionmsg.crypto.noise import CipherState, XKHandshake
from onionmsg.crypto.ratchet import Ratchet
from onionmsg.store.db import Endpoints, Store, WrongPassphraseError
from onionmsg.store.keys import KeyParams

SEED = bytes(range(100, 132))
OTHER = Identity(bytes([7]) * 32)


def spellings(secret: bytes) -> Iterator[str]:
    yield secret.hex()
    yield secret.hex().upper()
    yield base64.b64encode(secret).decode()
    yield base64.b64encode(secret).decode().rstrip("=")[:-2]  # a prefix survives padding
    yield base64.b32encode(secret).decode().rstrip("=").lower()
    yield repr(secret)[2:-1]  # bytes' own repr, escaped
    yield secret.decode("latin-1")


def assert_hidden(text: str, *secrets: bytes) -> None:
    for secret in secrets:
        for spelling in spellings(secret):
            assert spelling not in text, f"a secret spelt {spelling[:12]!r}... is shown"


def test_the_check_can_fail() -> None:
    with pytest.raises(AssertionError):
        assert_hidden(repr(SEED), SEED)
    with pytest.raises(AssertionError):
        assert_hidden(f"key {base64.b64encode(SEED).decode()}", SEED)


@pytest.mark.parametrize("cls", [Identity, EndpointKey])
def test_onion_service_keys_hide_their_secrets(cls: type[Identity] | type[EndpointKey]) -> None:
    key = cls(SEED)
    shown = f"{key!r} {key!s} {[key]} { ({'k': key}) }"
    assert key.onion_address in shown
    assert_hidden(shown, SEED, key.expanded_secret_key())
    if isinstance(key, Identity):
        assert_hidden(shown, key.x25519_private)


def test_client_auth_key_hides_its_secret() -> None:
    key = ClientAuthKey(SEED)
    shown = f"{key!r} {key!s} {[key]}"
    assert key.public.hex()[:16] in shown
    assert_hidden(shown, SEED)


def test_stored_endpoints_hide_their_secrets() -> None:
    endpoints = Endpoints(3, SEED, b"\x01" * 32, bytes(reversed(SEED)), "x" * 56)
    shown = f"{endpoints!r} {endpoints!s}"
    assert "contact_id=3" in shown
    assert_hidden(shown, SEED, bytes(reversed(SEED)))


def test_backups_hide_their_keys_and_messages(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "s.db", bytes(32), Identity(SEED))
    contact = store.add_contact(OTHER.onion_address, "c", None, 1)
    store.save_endpoints(Endpoints(contact.id, bytes(reversed(SEED)), None, None, None))
    store.store_incoming(
        contact.id, b"\x01" * 16, text="canary-XYZZY", sent_at=1, ratchet_state="{}", now_ms=1
    )
    backup = take_backup(store, history=True, now_ms=2)
    store.close()
    shown = f"{backup!r} {[backup]} {backup.tables!r}"
    assert_hidden(shown, SEED, bytes(reversed(SEED)), b"canary-XYZZY")
    # and the sealed file shows neither
    sealed = seal_backup(backup, b"pw", KeyParams(True, bytes(16), 1, 8192))
    assert_hidden(sealed.decode("latin-1"), SEED, b"canary-XYZZY")


def test_session_state_hides_its_keys() -> None:
    cipher = CipherState(SEED)
    assert_hidden(f"{cipher!r} {cipher!s}", SEED)
    responder = Identity(bytes([1]) * 32)
    initiator = Identity(bytes([2]) * 32)
    handshake = XKHandshake.initiator(
        initiator.x25519_private, responder.x25519_public, b"p", ephemeral_private=SEED
    )
    assert_hidden(repr(handshake), SEED, initiator.x25519_private)
    low, high = sorted((initiator, responder), key=lambda i: i.public_key)
    ratchet, _ = Ratchet.start(low, high.public_key, b"hello", b"ad")
    assert_hidden(repr(ratchet), low.x25519_private, low.seed)


def test_a_wrong_store_key_is_not_repeated_in_the_error(tmp_path: Path) -> None:
    Store.create(tmp_path / "s.db", bytes(32), Identity(SEED)).close()
    with pytest.raises(WrongPassphraseError) as caught:
        Store.open(tmp_path / "s.db", SEED)
    shown = "".join(traceback.format_exception(caught.value))
    assert "wrong passphrase" in shown
    assert_hidden(shown, SEED)


def test_a_bad_key_length_is_not_repeated_in_the_error() -> None:
    for make in (Identity, EndpointKey, ClientAuthKey, CipherState):
        with pytest.raises(ValueError) as caught:
            make(SEED[:31])
        assert_hidden(str(caught.value), SEED[:31])
