"""The encrypted store: keyed by the passphrase, nothing readable without it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlcipher3.dbapi2 import IntegrityError

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
    store.queue_outgoing(
        contact.id,
        b"\x01" * 16,
        text="canary-text-PLUGH",
        content=b"canary-content-PLUGH",
        envelope=None,
        ratchet_state='{"canary": "PLUGH"}',
        now_ms=2,
    )
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


def test_rename_and_remove_a_contact(store: Store) -> None:
    contact = store.add_contact(OTHER.onion_address, "bob", None, 1)
    third = store.add_contact(Identity(bytes([9]) * 32).onion_address, "carol", None, 2)
    renamed = store.rename_contact(contact.id, "  robert ")
    assert renamed.name == "robert" and store.find_contact("robert") == renamed
    with pytest.raises(ContactError, match="taken"):
        store.rename_contact(contact.id, "carol")
    with pytest.raises(ContactError, match="onion address"):
        store.rename_contact(contact.id, third.address)
    assert store.rename_contact(contact.id, None).display_name == OTHER.onion_address[:16]
    store.queue_outgoing(
        contact.id,
        b"\x02" * 16,
        text="hi",
        content=None,
        envelope=b"e",
        ratchet_state="{}",
        now_ms=3,
    )
    store.store_incoming(
        contact.id, b"\x03" * 16, text="yo", sent_at=1, ratchet_state="s", now_ms=4
    )
    store.remove_contact(contact.id)
    assert store.contacts() == [third]
    # Everything about the contact went with it.
    assert store.messages() == [] and store.outbox(contact.id) == []
    assert store.ratchet_state(contact.id) is None
    assert not store.was_received(contact.id, b"\x03" * 16)


def test_outgoing_status_only_moves_forward_and_ack_empties_the_outbox(store: Store) -> None:
    contact = store.add_contact(OTHER.onion_address, None, None, 1)
    message = store.queue_outgoing(
        contact.id,
        b"\x02" * 16,
        text="hi",
        content=None,
        envelope=b"sealed",
        ratchet_state="{}",
        now_ms=10,
    )
    assert message is not None and message.status is Status.QUEUED
    assert [e.envelope for e in store.outbox(contact.id)] == [b"sealed"]
    assert store.ratchet_state(contact.id) == "{}"
    sent = store.mark_sent(contact.id, message.message_id)
    assert sent is not None and sent.status is Status.SENT
    delivered = store.acknowledge(contact.id, message.message_id)
    assert delivered is not None and delivered.status is Status.DELIVERED
    assert store.mark_sent(contact.id, message.message_id) is None  # never backwards
    assert store.acknowledge(contact.id, message.message_id) is None
    assert store.outbox(contact.id) == []


def test_waiting_content_is_sealed_later_in_one_step(store: Store) -> None:
    contact = store.add_contact(OTHER.onion_address, None, None, 1)
    for i in range(3):
        store.queue_outgoing(
            contact.id,
            bytes([i]) * 16,
            text=f"t{i}",
            content=f"c{i}".encode(),
            envelope=None,
            ratchet_state=None,
            now_ms=i,
        )
    assert store.ratchet_state(contact.id) is None
    waiting = store.outbox(contact.id)
    store.seal_outbox(contact.id, [(e.id, b"env" + e.message_id) for e in waiting], "state")
    sealed = store.outbox(contact.id)
    assert [e.envelope for e in sealed] == [b"env" + bytes([i]) * 16 for i in range(3)]
    assert all(e.content is None for e in sealed)
    assert store.ratchet_state(contact.id) == "state"


def test_incoming_is_recorded_for_dedup(store: Store) -> None:
    contact = store.add_contact(OTHER.onion_address, None, None, 1)
    assert not store.was_received(contact.id, b"\x03" * 16)
    first = store.store_incoming(
        contact.id, b"\x03" * 16, text="hello", sent_at=1, ratchet_state="s1", now_ms=2
    )
    assert first is not None
    assert store.was_received(contact.id, b"\x03" * 16)
    assert store.ratchet_state(contact.id) == "s1"
    with pytest.raises(IntegrityError):  # the id can't be stored twice
        store.store_incoming(
            contact.id, b"\x03" * 16, text="hello", sent_at=1, ratchet_state="s2", now_ms=3
        )
    assert store.ratchet_state(contact.id) == "s1"  # the failed transaction left nothing
    assert [m.text for m in store.messages()] == ["hello"]


def test_key_params(tmp_path: Path) -> None:
    params = KeyParams.new(passphrase=True)
    params.save(tmp_path / "k.json")
    loaded = KeyParams.load(tmp_path / "k.json")
    assert loaded == params
    assert (tmp_path / "k.json").stat().st_mode & 0o777 == 0o600
    assert KeyParams.new(passphrase=False).derive(None) == NO_PASSPHRASE_KEY


# The version-1 schema as released: stores made then must open (and upgrade) now.
_V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE contacts (id INTEGER PRIMARY KEY, address TEXT NOT NULL UNIQUE, name TEXT UNIQUE,
    tcp_endpoint TEXT, added_at INTEGER NOT NULL, verified INTEGER NOT NULL DEFAULT 0,
    expire_seconds INTEGER NOT NULL DEFAULT 0);
CREATE TABLE ratchets (contact_id INTEGER PRIMARY KEY, state TEXT NOT NULL);
"""


def test_a_version_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    path, key = tmp_path / "old.db", bytes(32)
    identity = Identity(bytes(range(32)))
    connection = Store._connect(path, key)
    connection.executescript(_V1_SCHEMA)
    connection.execute("INSERT INTO meta VALUES ('schema_version', 1)")
    connection.execute("INSERT INTO meta VALUES ('identity_seed', ?)", (identity.seed,))
    bob = Identity(bytes([2]) * 32).onion_address
    connection.execute(
        "INSERT INTO contacts (address, name, added_at) VALUES (?, 'bob', 5)", (bob,)
    )
    connection.close()
    store = Store.open(path, key)
    (contact,) = store.contacts()
    # Contacts of version 1 were added by hand on both sides: they count as accepted.
    assert (contact.name, contact.accepted, contact.blocked) == ("bob", True, False)
    assert contact.i2p_destination is None
    assert store.requests() == []
    store.close()
    assert Store.open(path, key).identity().seed == identity.seed  # opens again, upgraded


def test_requests_one_row_per_address_bounded(store: Store) -> None:
    addresses = [Identity(bytes([i]) * 32).onion_address for i in range(10, 15)]
    for when, address in enumerate(addresses):
        request, dropped = store.record_request(address, f"note {when}", when, max_pending=3)
    assert [r.address for r in dropped] == [addresses[1]]
    again, dropped = store.record_request(addresses[4], "changed", 99, max_pending=3)
    assert (again.id, again.message, again.received_at, dropped) == (request.id, "changed", 4, [])
    assert [r.address for r in store.requests()] == addresses[2:]
    # Adding a requester as a contact answers the request.
    contact = store.add_contact(addresses[2], "carol", None, 100)
    assert contact.accepted and store.request_for(addresses[2]) is None


def test_i2p_private_key_is_kept_encrypted_and_replaceable(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = Store.create(path, KEY, Identity(bytes(32)))
    assert store.i2p_private_key() is None
    store.set_i2p_private_key("first-CANARY-key")
    store.set_i2p_private_key("second-CANARY-key")
    store.close()
    assert b"CANARY" not in path.read_bytes()
    assert Store.open(path, KEY).i2p_private_key() == "second-CANARY-key"


def test_contacts_keep_their_i2p_destination(store: Store) -> None:
    added = store.add_contact(OTHER.onion_address, "bob", None, 1, i2p_destination="dest")
    assert added.i2p_destination == "dest"
    assert store.find_contact("bob") == added
    plain = store.add_contact(Identity(bytes([9]) * 32).onion_address, None, None, 2)
    assert store.contact_by_id(plain.id).i2p_destination is None
