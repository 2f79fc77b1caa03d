"""The encrypted store: keyed by the passphrase, nothing readable without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from onionmsg.crypto.identity import Identity
from onionmsg.errors import AddressError
from onionmsg.store.db import ContactError, Status, Store, StoreError, WrongPassphraseError
from onionmsg.store.keys import NO_PASSPHRASE_KEY, KeyParams

KEY = bytes(range(32))
OTHER = Identity(bytes([7]) * 32)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.create(tmp_path / "store.db", KEY, Identity(bytes(32)))


def test_identity_round_trip(tmp_path: Path) -> None:
    identity = Identity.generate()
    Store.create(tmp_path / "s.db", KEY, identity).close()
    assert Store.open(tmp_path / "s.db", KEY).identity() == identity


def test_wrong_key_is_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store.create(path, KEY, Identity(bytes(32))).close()
    before = path.read_bytes()
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        Store.open(path, bytes(32))
    assert path.read_bytes() == before
    assert Store.open(path, KEY).identity() == Identity(bytes(32))


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store.create(path, KEY, Identity(bytes(32))).close()
    with pytest.raises(StoreError, match="refusing"):
        Store.create(path, KEY, Identity.generate())


def test_file_is_private_and_reveals_no_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = Store.create(path, KEY, Identity(bytes(32)))
    contact = store.add_contact(OTHER.onion_address, "canary-name-XYZZY", None, 1)
    store.add_outgoing(contact.id, b"\x01" * 16, "canary-text-PLUGH", 2)
    store.close()
    assert path.stat().st_mode & 0o777 == 0o600
    for file in tmp_path.iterdir():
        data = file.read_bytes()
        for canary in (b"XYZZY", b"PLUGH", OTHER.onion_address.encode(), b"SQLite format"):
            assert canary not in data, (file, canary)


def test_contacts(store: Store) -> None:
    contact = store.add_contact(OTHER.onion_address.upper() + ".onion", "bob", "127.0.0.1:1", 5)
    assert contact.address == OTHER.onion_address
    assert store.find_contact("bob") == contact
    assert store.find_contact(OTHER.onion_address + ".onion") == contact
    assert store.contacts() == [contact]
    with pytest.raises(ContactError, match="already a contact"):
        store.add_contact(OTHER.onion_address, "bobby", None, 6)
    third = Identity(bytes([9]) * 32)
    with pytest.raises(ContactError, match="taken"):
        store.add_contact(third.onion_address, "bob", None, 6)
    with pytest.raises(ContactError, match="no contact named"):
        store.find_contact("carol")
    with pytest.raises(AddressError):
        store.add_contact("not-an-address", None, None, 1)
    with pytest.raises(ContactError, match="empty"):
        store.add_contact(third.onion_address, "  ", None, 1)


def test_outgoing_status_only_moves_forward(store: Store) -> None:
    contact = store.add_contact(OTHER.onion_address, None, None, 1)
    message = store.add_outgoing(contact.id, b"\x02" * 16, "hi", 10)
    assert store.outbox(contact.id) == [message]
    sent = store.set_status(contact.id, message.message_id, Status.SENT)
    assert sent is not None and sent.status is Status.SENT
    delivered = store.set_status(contact.id, message.message_id, Status.DELIVERED)
    assert delivered is not None and delivered.status is Status.DELIVERED
    assert store.set_status(contact.id, message.message_id, Status.SENT) is None
    assert store.outbox(contact.id) == []


def test_incoming_is_deduplicated_by_id(store: Store) -> None:
    contact = store.add_contact(OTHER.onion_address, None, None, 1)
    first = store.add_incoming(contact.id, b"\x03" * 16, "hello", 1, 2)
    assert first is not None
    assert store.add_incoming(contact.id, b"\x03" * 16, "hello", 1, 3) is None
    assert [m.text for m in store.messages()] == ["hello"]


def test_key_params(tmp_path: Path) -> None:
    params = KeyParams.new(passphrase=True)
    params.save(tmp_path / "k.json")
    loaded = KeyParams.load(tmp_path / "k.json")
    assert loaded == params
    assert (tmp_path / "k.json").stat().st_mode & 0o777 == 0o600
    assert KeyParams.new(passphrase=False).derive(None) == NO_PASSPHRASE_KEY
