"""Encrypted identity backups: ``onionmsg export`` and ``onionmsg import`` (docs/protocol.md).

A backup holds the identity key, every contact (every column of every table that
describes who the user knows), the settings in the store's ``meta`` table and, when asked
for, the message history. It never holds a ratchet state, an outbox or the ids of
received messages:

* A ratchet state is the set of keys of a live conversation. Restoring an old one would
  make the restored device encrypt again under message keys it already used (the same
  key, the same zero nonce: two plaintexts under one keystream) and decrypt with chains
  that the contact has moved past, so the two sides would silently desynchronise. The
  restored user starts a fresh session with every contact instead (see ``_start_sessions``
  here and ``Node._restart_session``): its contacts replace their old session when the new
  one opens, and re-encrypt under it whatever they had not delivered yet.
* Outbox envelopes are sealed under those old sessions and are useless without them; the
  messages they carry are queued again from the history (when it is restored).
* The received ids only deduplicate redeliveries of old-session envelopes.

The container (magic, version, Argon2id parameters, salt, nonce, XChaCha20-Poly1305 of a
canonical msgpack document whose associated data is the header) is sans-IO: `seal_backup`
and `open_backup` take and return bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack
import nacl.bindings
import nacl.exceptions
import nacl.pwhash
import nacl.utils

from onionmsg.crypto.identity import Identity, parse_onion_address
from onionmsg.crypto.ratchet import Ratchet, is_initiator
from onionmsg.delivery.envelopes import seal
from onionmsg.delivery.restart import expire_seconds
from onionmsg.errors import OnionmsgError
from onionmsg.store.db import SCHEMA_VERSION, Status, Store
from onionmsg.store.keys import KeyParams
from onionmsg.wire.messages import MESSAGE_ID_SIZE, SessionStart, TextContent

MAGIC = b"onionmsg backup\n"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">16sBIQ16s24s")  # magic, version, opslimit, memlimit, salt, nonce
HEADER_SIZE = _HEADER.size  # 69 bytes
_TAG_SIZE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES
# A hostile file must not make us allocate gigabytes or spin for minutes before the
# passphrase is even checked: at most libsodium's "sensitive" memory (1 GiB) and 32 passes
# (ours: 256 MiB, 5 passes).
_MAX_OPSLIMIT = 32
_MAX_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE

# Every table of the store is classified, so that a new table cannot be left out (or put
# in) by accident: tests/test_backup.py checks that this covers the whole schema.
CONTACT_TABLES = ("contacts", "requests", "endpoints")  # in insertion order (foreign keys)
HISTORY_TABLES = ("messages",)
NOT_BACKED_UP = {
    "ratchets": "live session keys: reusing them would reuse message keys",
    "outbox": "envelopes sealed under the old sessions",
    "received": "deduplicates redeliveries of old-session envelopes",
}
# Meta keys the container carries elsewhere (identity) or that belong to the new store.
_META_NOT_COPIED = ("schema_version", "identity_seed")


class BackupError(OnionmsgError):
    """A backup could not be written or read; nothing was changed."""


class WrongBackupPassphraseError(BackupError):
    """The backup passphrase is wrong, or the file was altered."""


@dataclass(frozen=True, repr=False)  # its rows may be keys (ratchets, endpoints) or messages
class Table:
    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True, repr=False)  # its repr would show every key and message
class Backup:
    """What a backup file holds, in the clear."""

    schema_version: int
    created_at: int  # ms since 1970
    identity_seed: bytes
    meta: tuple[tuple[str, Any], ...]  # sorted by key
    tables: tuple[Table, ...]

    @property
    def identity(self) -> Identity:
        return Identity(self.identity_seed)

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name == name), None)


# -- taking a backup from a store and putting one into a new store ----------------------------


def take_backup(store: Store, *, history: bool, now_ms: int) -> Backup:
    """Everything to back up, read in one read transaction (a consistent snapshot, also
    while a daemon writes to the store)."""
    with store.read_transaction():
        identity = store.identity()
        meta = tuple(sorted((k, v) for k, v in store.meta_items() if k not in _META_NOT_COPIED))
        names = CONTACT_TABLES + (HISTORY_TABLES if history else ())
        tables = tuple(_without_expiring(Table(name, *store.dump_table(name))) for name in names)
    return Backup(SCHEMA_VERSION, now_ms, identity.seed, meta, tables)


def _without_expiring(table: Table) -> Table:
    """Disappearing messages stay out of backups: a file outlives their expiry."""
    if "expires_at" not in table.columns:
        return table
    column = table.columns.index("expires_at")
    return Table(table.name, table.columns, tuple(r for r in table.rows if r[column] is None))


def restore_backup(store: Store, backup: Backup, *, now_ms: int) -> None:
    """Fill a store just created (with ``backup.identity``) from a backup, then open a fresh
    ratchet session with every contact (one transaction each; the store is not yet in use).
    """
    if store.identity().seed != backup.identity_seed:
        raise BackupError("the store was created with another identity")
    order = CONTACT_TABLES + HISTORY_TABLES  # parents before children
    tables = sorted(backup.tables, key=lambda table: order.index(table.name))
    store.restore(list(backup.meta), [(t.name, t.columns, t.rows) for t in tables])
    _start_sessions(store, now_ms)


def _start_sessions(store: Store, now_ms: int) -> None:
    """As after ``contacts add``: the initiator of each pair opens a new session; and every
    restored outgoing message that was never acknowledged is queued again, under the new
    session (or, on the responder's side, waiting for it). It keeps its id, so a contact
    that did receive it only acknowledges it again.
    """
    identity = store.identity()
    for contact in store.contacts():
        their_key = parse_onion_address(contact.address)
        ratchet: Ratchet | None = None
        if is_initiator(identity.public_key, their_key):
            ratchet = _queue(store, identity, their_key, contact.id, None, SessionStart(), now_ms)
        for message in store.messages(contact.id):
            pending = message.status in (Status.QUEUED, Status.SENT)
            if message.direction != "out" or not pending:
                continue
            if message.expires_at is not None and message.expires_at <= now_ms:
                continue
            expire = 0 if message.expires_at is None else expire_seconds(message)
            content = TextContent(message.sent_at, message.text, expire)
            sealed = _queue(
                store, identity, their_key, contact.id, ratchet, content, now_ms, message.message_id
            )
            ratchet = sealed or ratchet


def _queue(
    store: Store,
    identity: Identity,
    their_key: bytes,
    contact_id: int,
    ratchet: Ratchet | None,
    content: SessionStart | TextContent,
    now_ms: int,
    message_id: bytes | None = None,
) -> Ratchet | None:
    message_id = message_id or nacl.utils.random(MESSAGE_ID_SIZE)
    sealing = seal(identity, their_key, ratchet, message_id, content)
    store.queue_outgoing(
        contact_id,
        message_id,
        text=None,  # the history row, if any, was restored with the tables
        content=sealing.content,
        envelope=sealing.envelope,
        ratchet_state=sealing.ratchet.to_json() if sealing.ratchet else None,
        now_ms=now_ms,
    )
    return sealing.ratchet


# -- the container ------------------------------------------------------------------------------


def seal_backup(backup: Backup, passphrase: bytes, params: KeyParams | None = None) -> bytes:
    """The backup file's bytes. ``params``: Argon2id parameters (tests use cheap ones)."""
    params = params or KeyParams.new(passphrase=True)
    nonce = nacl.utils.random(nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
    header = _HEADER.pack(
        MAGIC, FORMAT_VERSION, params.opslimit, params.memlimit, params.salt, nonce
    )
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        _encode(backup), header, nonce, params.derive(passphrase)
    )
    return header + ciphertext


def check_header(data: bytes) -> None:
    """What can be said of a backup file without its passphrase: BackupError if it is not
    one, one of a newer format, or too short to hold anything."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise BackupError("this is not an onionmsg backup file")
    if len(data) > len(MAGIC) and data[len(MAGIC)] > FORMAT_VERSION:
        raise BackupError(
            f"this backup has format version {data[len(MAGIC)]}, newer than this onionmsg "
            f"reads ({FORMAT_VERSION}): restore it with a newer onionmsg"
        )
    if len(data) < HEADER_SIZE + _TAG_SIZE:
        raise BackupError("the backup file is truncated")


def open_backup(data: bytes, passphrase: bytes) -> Backup:
    """The backup in a file's bytes, or BackupError saying what is wrong with it."""
    check_header(data)
    header = data[:HEADER_SIZE]
    _, version, opslimit, memlimit, salt, nonce = _HEADER.unpack(header)
    if version != FORMAT_VERSION:
        raise BackupError(f"unknown backup format version {version}")
    if not (
        nacl.pwhash.argon2id.OPSLIMIT_MIN <= opslimit <= _MAX_OPSLIMIT
        and nacl.pwhash.argon2id.MEMLIMIT_MIN <= memlimit <= _MAX_MEMLIMIT
    ):
        raise BackupError("the backup file is damaged (impossible key parameters)")
    key = KeyParams(passphrase=True, salt=salt, opslimit=opslimit, memlimit=memlimit).derive(
        passphrase
    )
    try:
        plaintext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            data[HEADER_SIZE:], header, nonce, key
        )
    except nacl.exceptions.CryptoError:
        # One tag covers both: the file cannot tell a wrong passphrase from a changed byte.
        raise WrongBackupPassphraseError(
            "wrong backup passphrase, or the backup file is damaged or truncated"
        ) from None
    return _decode(plaintext)


# -- the document: canonical msgpack ----------------------------------------------------------

_VALUE_TYPES = (type(None), int, str, bytes)  # SQLite's NULL, INTEGER, TEXT, BLOB


def _encode(backup: Backup) -> bytes:
    document = [
        backup.schema_version,
        backup.created_at,
        backup.identity_seed,
        [[key, value] for key, value in backup.meta],
        [[t.name, list(t.columns), [list(row) for row in t.rows]] for t in backup.tables],
    ]
    for _, value in backup.meta:
        _check_value(value)
    for table in backup.tables:
        for row in table.rows:
            for value in row:
                _check_value(value)
    packed: bytes = msgpack.packb(document, use_bin_type=True)
    return packed


def _check_value(value: object) -> None:
    if type(value) not in _VALUE_TYPES:
        raise BackupError(f"a store value of type {type(value).__name__} cannot be backed up")


def _decode(plaintext: bytes) -> Backup:
    """Strict: the shape is checked, and the bytes must be the canonical encoding (as for
    protocol messages), so one backup has exactly one meaning."""

    def fail(what: str) -> BackupError:
        return BackupError(f"the backup's contents are malformed ({what})")

    try:
        document = msgpack.unpackb(plaintext, raw=False, strict_map_key=True, ext_hook=_no_ext)
    except Exception:  # msgpack raises several types for malformed input
        raise fail("not msgpack") from None
    if not isinstance(document, list) or len(document) != 5:
        raise fail("not a 5-element array")
    schema_version, created_at, seed, meta, tables = document
    if type(schema_version) is not int or type(created_at) is not int or created_at < 0:
        raise fail("version or time")
    if schema_version != SCHEMA_VERSION:
        newer = schema_version > SCHEMA_VERSION
        raise BackupError(
            f"this backup holds a store of schema version {schema_version}, "
            f"{'newer than' if newer else 'other than'} this onionmsg's ({SCHEMA_VERSION})"
            + (": restore it with a newer onionmsg" if newer else "")
        )
    if type(seed) is not bytes or len(seed) != 32:
        raise fail("identity")
    if not isinstance(meta, list) or not all(
        isinstance(item, list)
        and len(item) == 2
        and type(item[0]) is str
        and type(item[1]) in _VALUE_TYPES
        for item in meta
    ):
        raise fail("settings")
    if [item[0] for item in meta] != sorted({item[0] for item in meta}):
        raise fail("settings not sorted or repeated")
    parsed: list[Table] = []
    if not isinstance(tables, list):
        raise fail("tables")
    for table in tables:
        if not (isinstance(table, list) and len(table) == 3):
            raise fail("a table")
        name, columns, rows = table
        if type(name) is not str or name not in CONTACT_TABLES + HISTORY_TABLES:
            raise fail("an unknown table")
        if not isinstance(columns, list) or not all(type(c) is str for c in columns):
            raise fail(f"columns of {name}")
        if not isinstance(rows, list) or not all(
            isinstance(row, list)
            and len(row) == len(columns)
            and all(type(v) in _VALUE_TYPES for v in row)
            for row in rows
        ):
            raise fail(f"rows of {name}")
        parsed.append(Table(name, tuple(columns), tuple(tuple(row) for row in rows)))
    if len({t.name for t in parsed}) != len(parsed):
        raise fail("a table twice")
    backup = Backup(schema_version, created_at, seed, tuple((k, v) for k, v in meta), tuple(parsed))
    if _encode(backup) != plaintext:
        raise fail("non-canonical encoding")
    return backup


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError("msgpack extension types are not part of the format")
