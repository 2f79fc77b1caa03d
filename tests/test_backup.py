"""Backups: the container (round trip, wrong passphrase, every byte tampered, truncation,
versions), what is and is not backed up, and restoring into a new store."""

from __future__ import annotations

import string
from pathlib import Path

import msgpack
import nacl.bindings
import nacl.pwhash
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onionmsg import backup as backup_module
from onionmsg.backup import (
    CONTACT_TABLES,
    FORMAT_VERSION,
    HEADER_SIZE,
    HISTORY_TABLES,
    MAGIC,
    NOT_BACKED_UP,
    Backup,
    BackupError,
    WrongBackupPassphraseError,
    check_header,
    open_backup,
    restore_backup,
    seal_backup,
    take_backup,
)
from onionmsg.crypto.identity import Identity
from onionmsg.crypto.ratchet import is_initiator
from onionmsg.store.db import SCHEMA_VERSION, Status, Store, StoreError
from onionmsg.store.keys import KeyParams
from onionmsg.wire.messages import Envelope, decode

KEY = bytes(range(32))
PASSPHRASE = b"a long backup passphrase"
# The real parameters cost ~0.6 s and 256 MiB a derivation: far too slow for hundreds of
# tamper checks. The container records whatever parameters it was made with.
CHEAP = KeyParams(
    passphrase=True,
    salt=bytes(16),
    opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
    memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
)
NOW = 1_700_000_000_000


def _identity(seed: int) -> Identity:
    return Identity(bytes([seed]) * 32)


def _populated_store(path: Path) -> Store:
    store = Store.create(path, KEY, _identity(7))
    bob = store.add_contact(_identity(1).onion_address, "bob", "127.0.0.1:7002", NOW)
    carol = store.add_contact(_identity(9).onion_address, None, None, NOW + 1)
    store.set_verified(bob.id, True)
    store.set_expiry(carol.id, 3600)
    store.restore([("block_unknown", 1), ("a_blob_setting", b"\x00\x01")], [])
    store.queue_outgoing(
        bob.id,
        b"o" * 16,
        text="hello bob",
        content=None,
        envelope=b"sealed",
        ratchet_state='{"old": "state"}',
        now_ms=NOW,
        status=Status.SENT,
    )
    store.acknowledge(bob.id, b"o" * 16)
    store.queue_outgoing(
        carol.id,
        b"p" * 16,
        text="not yet delivered",
        content=None,
        envelope=b"sealed",
        ratchet_state='{"old": "state"}',
        now_ms=NOW,
        expires_at=NOW + 3_600_000,
    )
    store.queue_outgoing(
        bob.id,
        b"q" * 16,
        text="not yet delivered either",
        content=None,
        envelope=b"sealed",
        ratchet_state='{"old": "state"}',
        now_ms=NOW,
    )
    store.store_incoming(
        bob.id, b"i" * 16, text="hi ✓", sent_at=NOW - 5, ratchet_state="{}", now_ms=NOW
    )
    return store


def _everything(store: Store, tables: tuple[str, ...]) -> dict[str, object]:
    dump: dict[str, object] = {name: store.dump_table(name) for name in tables}
    dump["meta"] = sorted(store.meta_items())
    return dump


def test_every_table_of_the_store_is_classified(tmp_path: Path) -> None:
    """A table added to the schema later must be put in a backup, or said not to be."""
    store = Store.create(tmp_path / "s.db", KEY, _identity(7))
    classified = {"meta", *CONTACT_TABLES, *HISTORY_TABLES, *NOT_BACKED_UP}
    assert set(store.table_names()) == classified


@pytest.mark.parametrize("history", [False, True])
def test_round_trip_restores_identity_contacts_settings_and_history(
    tmp_path: Path, history: bool
) -> None:
    original = _populated_store(tmp_path / "a.db")
    data = seal_backup(take_backup(original, history=history, now_ms=NOW), PASSPHRASE, CHEAP)
    opened = open_backup(data, PASSPHRASE)
    assert opened.identity == _identity(7) and opened.created_at == NOW
    restored = Store.create(tmp_path / "b.db", b"\x01" * 32, opened.identity)
    restore_backup(restored, opened, now_ms=NOW + 10)
    assert _everything(restored, CONTACT_TABLES) == _everything(original, CONTACT_TABLES)
    assert restored.contacts() == original.contacts()  # every column, ids included
    # The history, except a disappearing message (to carol): a file outlives its expiry.
    kept = [m for m in original.messages() if m.expires_at is None] if history else []
    assert restored.messages() == kept
    assert len(kept) == (3 if history else 0)
    for contact in restored.contacts():
        # No old session comes back: a fresh one, opened by the pair's initiator.
        their_key = Identity(bytes([1 if contact.name == "bob" else 9]) * 32).public_key
        we_open = is_initiator(_identity(7).public_key, their_key)
        assert (restored.ratchet_state(contact.id) is not None) == we_open
        outbox = restored.outbox(contact.id)
        if we_open:
            first = decode(outbox[0].envelope or b"")
            assert isinstance(first, Envelope)
            assert (first.previous_chain_length, first.chain_length) == (0, 0)
        # With the history, the undelivered message to bob is queued again, same id.
        pending = history and contact.name == "bob"
        assert [e.message_id for e in outbox[1 if we_open else 0 :]] == (
            [b"q" * 16] if pending else []
        )
        assert not restored.was_received(contact.id, b"i" * 16)


def test_a_backup_holds_no_ratchet_state_and_no_outbox(tmp_path: Path) -> None:
    store = _populated_store(tmp_path / "a.db")
    taken = take_backup(store, history=True, now_ms=NOW)
    plaintext = backup_module._encode(taken)
    assert b"old" not in plaintext and b"sealed" not in plaintext
    assert {t.name for t in taken.tables} == {"contacts", "requests", "endpoints", "messages"}


def test_wrong_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    store = _populated_store(tmp_path / "a.db")
    data = seal_backup(take_backup(store, history=False, now_ms=NOW), PASSPHRASE, CHEAP)
    with pytest.raises(WrongBackupPassphraseError, match="wrong backup passphrase"):
        open_backup(data, b"another passphrase")


def test_any_changed_byte_is_refused(tmp_path: Path) -> None:
    store = _populated_store(tmp_path / "a.db")
    data = seal_backup(take_backup(store, history=True, now_ms=NOW), PASSPHRASE, CHEAP)
    for position in range(len(data)):
        for flip in (0x01, 0x80):
            tampered = bytearray(data)
            tampered[position] ^= flip
            with pytest.raises(BackupError):
                open_backup(bytes(tampered), PASSPHRASE)


def test_truncated_or_extended_files_are_refused(tmp_path: Path) -> None:
    store = _populated_store(tmp_path / "a.db")
    data = seal_backup(take_backup(store, history=True, now_ms=NOW), PASSPHRASE, CHEAP)
    for length in range(len(data)):
        with pytest.raises(BackupError):
            open_backup(data[:length], PASSPHRASE)
    with pytest.raises(BackupError):
        open_backup(data + b"\x00", PASSPHRASE)
    with pytest.raises(BackupError, match="truncated"):
        check_header(data[: HEADER_SIZE + 3])
    with pytest.raises(BackupError, match="not an onionmsg backup"):
        check_header(b"SQLite format 3\x00" + data[16:])


def test_a_newer_format_or_schema_is_refused_with_its_reason(tmp_path: Path) -> None:
    store = _populated_store(tmp_path / "a.db")
    taken = take_backup(store, history=False, now_ms=NOW)
    data = bytearray(seal_backup(taken, PASSPHRASE, CHEAP))
    data[len(MAGIC)] = FORMAT_VERSION + 1
    with pytest.raises(BackupError, match="newer than this onionmsg"):
        check_header(bytes(data))
    newer = Backup(SCHEMA_VERSION + 1, NOW, taken.identity_seed, taken.meta, taken.tables)
    with pytest.raises(BackupError, match=r"schema version .* newer"):
        open_backup(seal_backup(newer, PASSPHRASE, CHEAP), PASSPHRASE)


def test_hostile_key_parameters_are_refused_before_any_derivation(tmp_path: Path) -> None:
    store = _populated_store(tmp_path / "a.db")
    taken = take_backup(store, history=False, now_ms=NOW)
    greedy = KeyParams(True, bytes(16), 3, 64 * 1024**3)  # 64 GiB
    data = seal_backup(taken, PASSPHRASE, CHEAP)
    header = bytearray(data[:HEADER_SIZE])
    header[len(MAGIC) + 5 : len(MAGIC) + 13] = greedy.memlimit.to_bytes(8, "big")
    with pytest.raises(BackupError, match="impossible key parameters"):
        open_backup(bytes(header) + data[HEADER_SIZE:], PASSPHRASE)


def _seal_plaintext(plaintext: bytes) -> bytes:
    """A container around arbitrary plaintext, as a hostile or buggy writer could make."""
    nonce = bytes(24)
    header = backup_module._HEADER.pack(
        MAGIC, FORMAT_VERSION, CHEAP.opslimit, CHEAP.memlimit, CHEAP.salt, nonce
    )
    key = CHEAP.derive(PASSPHRASE)
    body = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, header, nonce, key)
    return header + body


@pytest.mark.parametrize(
    "document",
    [
        [SCHEMA_VERSION, NOW, bytes(32), [], []],  # fine: the control case
        [SCHEMA_VERSION, NOW, bytes(31), [], []],
        [SCHEMA_VERSION, NOW, bytes(32), [["b", 1], ["a", 2]], []],
        [SCHEMA_VERSION, NOW, bytes(32), [], [["ratchets", ["state"], [["x"]]]]],
        [SCHEMA_VERSION, NOW, bytes(32), [], [["contacts", ["id"], [[1, 2]]]]],
        [SCHEMA_VERSION, NOW, bytes(32), [], [["contacts", ["id"], [[1.5]]]]],
        {"schema": SCHEMA_VERSION},
    ],
)
def test_malformed_documents_are_refused(document: object) -> None:
    data = _seal_plaintext(msgpack.packb(document, use_bin_type=True))
    if document == [SCHEMA_VERSION, NOW, bytes(32), [], []]:
        assert open_backup(data, PASSPHRASE).tables == ()
        return
    with pytest.raises(BackupError, match="malformed"):
        open_backup(data, PASSPHRASE)


def test_a_non_canonical_encoding_is_refused() -> None:
    canonical = msgpack.packb([SCHEMA_VERSION, NOW, bytes(32), [], []], use_bin_type=True)
    wide = b"\x95\xcd" + SCHEMA_VERSION.to_bytes(2, "big") + canonical[2:]  # uint16 for 1
    with pytest.raises(BackupError, match="non-canonical"):
        open_backup(_seal_plaintext(wide), PASSPHRASE)


def test_restore_refuses_columns_of_another_schema(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "s.db", KEY, _identity(7))
    with pytest.raises(StoreError, match="does not match"):
        store.restore([], [("contacts", ("id", "address", "nickname"), ())])
    assert store.contacts() == []


def test_export_reads_a_snapshot_beside_a_writing_daemon(tmp_path: Path) -> None:
    """The store is opened read-only in a second connection while the first one writes:
    the reader sees one consistent state, and cannot write."""
    path = tmp_path / "s.db"
    daemon = _populated_store(path)
    reader = Store.open(path, KEY, read_only=True)
    with reader.read_transaction():
        before = reader.contacts()
        daemon.add_contact(_identity(11).onion_address, "dave", None, NOW + 2)
        assert reader.contacts() == before  # the snapshot does not move
    assert [c.name for c in reader.contacts()] == ["bob", None, "dave"]
    taken = take_backup(reader, history=True, now_ms=NOW)
    contacts = taken.table("contacts")
    assert contacts is not None and len(contacts.rows) == 3
    with pytest.raises(StoreError):
        reader.add_contact(_identity(12).onion_address, "eve", None, NOW)
    reader.close()
    daemon.close()


_names = st.text(alphabet=string.ascii_letters + "éü ✓", min_size=1, max_size=20).filter(
    lambda name: name.strip() == name
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    contacts=st.lists(
        st.tuples(
            st.integers(min_value=20, max_value=255),
            st.one_of(st.none(), _names),
            st.one_of(st.none(), st.just("127.0.0.1:9")),
            st.booleans(),
            st.integers(min_value=0, max_value=10**6),
        ),
        max_size=6,
        unique_by=lambda c: c[0],
    ),
    history=st.lists(
        st.tuples(st.integers(0, 5), st.text(max_size=50), st.booleans()), max_size=12
    ),
)
def test_random_contacts_and_history_survive_a_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    contacts: list[tuple[int, str | None, str | None, bool, int]],
    history: list[tuple[int, str, bool]],
) -> None:
    directory = tmp_path_factory.mktemp("random")
    store = Store.create(directory / "a.db", KEY, _identity(7))
    names: set[str] = set()
    ids = []
    for seed, name, tcp, verified, expire in contacts:
        if name in names:
            name = None
        names.add(name or "")
        contact = store.add_contact(_identity(seed).onion_address, name, tcp, NOW + seed)
        store.set_verified(contact.id, verified)
        store.set_expiry(contact.id, expire)
        ids.append(contact.id)
    for n, (which, text, incoming) in enumerate(history):
        if not ids:
            break
        contact_id = ids[which % len(ids)]
        message_id = n.to_bytes(16, "big")
        if incoming:
            store.store_incoming(
                contact_id, message_id, text=text, sent_at=NOW, ratchet_state="{}", now_ms=NOW
            )
        else:
            store.queue_outgoing(
                contact_id,
                message_id,
                text=text,
                content=b"x",
                envelope=None,
                ratchet_state=None,
                now_ms=NOW,
            )
    data = seal_backup(take_backup(store, history=True, now_ms=NOW), PASSPHRASE, CHEAP)
    restored = Store.create(directory / "b.db", KEY, _identity(7))
    restore_backup(restored, open_backup(data, PASSPHRASE), now_ms=NOW)
    tables = CONTACT_TABLES + HISTORY_TABLES
    assert _everything(restored, tables) == _everything(store, tables)
    store.close()
    restored.close()
