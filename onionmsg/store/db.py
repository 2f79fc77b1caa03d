"""The encrypted store: one SQLCipher database per user (identity, contacts, history, outbox).

The database is in WAL mode. Every write is one short transaction; those that a promise
depends on (a message accepted by ``send``, a message stored before we acknowledge it, a
contact) commit with ``synchronous=FULL`` and so survive a crash or a power loss. Status
updates that can be recomputed (sent, delivered: a lost one only causes a redelivery that
the peer deduplicates) commit with ``synchronous=NORMAL``: they survive a crash of the
daemon but not a power loss. Measured here: 0.27 ms per FULL commit in WAL mode versus
~13 ms in the default rollback-journal mode.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlcipher3 import dbapi2 as sqlcipher

from onionmsg.crypto.identity import Identity, normalize_onion_address
from onionmsg.errors import AddressError, OnionmsgError
from onionmsg.store.keys import KeyParams

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE contacts (
    id INTEGER PRIMARY KEY,
    address TEXT NOT NULL UNIQUE,
    name TEXT UNIQUE,
    tcp_endpoint TEXT,
    added_at INTEGER NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    message_id BLOB NOT NULL,
    contact_id INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    text TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    stored_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    UNIQUE (contact_id, direction, message_id)
);
CREATE INDEX messages_outbox ON messages (contact_id, direction, status);
"""


class StoreError(OnionmsgError):
    """The store could not be read or written."""


class WrongPassphraseError(StoreError):
    """The passphrase is wrong (or the store is damaged); nothing was changed."""


class ContactError(OnionmsgError):
    """A contact could not be added or found."""


class Status(enum.StrEnum):
    QUEUED = "queued"  # accepted and durable, not yet written to a link
    SENT = "sent"  # written to a link, not yet acknowledged
    DELIVERED = "delivered"  # the peer stored it and said so
    RECEIVED = "received"  # an incoming message


@dataclass(frozen=True)
class Contact:
    id: int
    address: str
    name: str | None
    tcp_endpoint: str | None
    added_at: int
    verified: bool = False

    @property
    def display_name(self) -> str:
        return self.name or self.address[:16]


@dataclass(frozen=True)
class StoredMessage:
    id: int
    message_id: bytes
    contact_id: int
    direction: str
    text: str
    sent_at: int
    stored_at: int
    status: Status


def _key_pragma(key: bytes) -> str:
    # A raw 256-bit key: SQLCipher skips its own PBKDF2 (Argon2id already ran).
    return f"PRAGMA key = \"x'{key.hex()}'\""


class Store:
    """A synchronous handle on the encrypted database (short transactions only)."""

    def __init__(self, connection: Any) -> None:
        self._db = connection

    @classmethod
    def create(cls, path: Path, key: bytes, identity: Identity) -> Store:
        if path.exists():
            raise StoreError(f"{path} already exists: refusing to overwrite it")
        store = cls(cls._connect(path, key))
        with store._transaction() as db:
            # executescript() would COMMIT first; run the statements inside our transaction.
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            db.execute("INSERT INTO meta VALUES ('identity_seed', ?)", (identity.seed,))
        path.chmod(0o600)
        return store

    @classmethod
    def open(cls, path: Path, key: bytes) -> Store:
        if not path.exists():
            raise StoreError(f"{path} does not exist: run 'onionmsg init' first")
        store = cls(cls._connect(path, key))
        version = store._meta("schema_version")
        if version != SCHEMA_VERSION:
            store.close()
            raise StoreError(f"store schema version {version!r} is not supported")
        return store

    @staticmethod
    def _connect(path: Path, key: bytes) -> Any:
        connection = sqlcipher.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            # SQLCipher would print its own decryption errors to stderr.
            connection.execute("PRAGMA cipher_log_level = NONE")
            connection.execute(_key_pragma(key))
            # The first read is where a wrong key shows.
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlcipher.DatabaseError:
            connection.close()
            raise WrongPassphraseError(
                "wrong passphrase (or a damaged store): nothing was changed"
            ) from None
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("PRAGMA secure_delete = ON")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        return connection

    @classmethod
    def open_with_passphrase(cls, path: Path, params: KeyParams, passphrase: bytes | None) -> Store:
        return cls.open(path, params.derive(passphrase))

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[Any]:
        if not durable:
            self._db.execute("PRAGMA synchronous = NORMAL")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlcipher.OperationalError as error:
            # A full disk, a read-only file: say so; the transaction left nothing behind.
            raise StoreError(f"could not write the store: {error}") from None
        finally:
            if not durable:
                self._db.execute("PRAGMA synchronous = FULL")

    def _meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def rekey(self, new_key: bytes) -> None:
        self._db.execute(f"PRAGMA rekey = \"x'{new_key.hex()}'\"")

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    # -- identity ---------------------------------------------------------------------------

    def identity(self) -> Identity:
        seed = self._meta("identity_seed")
        if not isinstance(seed, bytes):
            raise StoreError("the store holds no identity")
        return Identity(seed)

    # -- contacts ---------------------------------------------------------------------------

    def add_contact(
        self, address: str, name: str | None, tcp_endpoint: str | None, now_ms: int
    ) -> Contact:
        address = normalize_onion_address(address)
        if name is not None:
            name = name.strip()
            if not name:
                raise ContactError("a contact name cannot be empty")
            if len(name) > 64:
                raise ContactError("a contact name has at most 64 characters")
            if _looks_like_address(name):
                raise ContactError("a contact name cannot be an onion address")
        try:
            with self._transaction() as db:
                cursor = db.execute(
                    "INSERT INTO contacts (address, name, tcp_endpoint, added_at)"
                    " VALUES (?, ?, ?, ?)",
                    (address, name, tcp_endpoint, now_ms),
                )
                contact_id = cursor.lastrowid
        except sqlcipher.IntegrityError:
            existing = self.find_contact(address, missing_ok=True)
            if existing is not None:
                raise ContactError(
                    f"{address} is already a contact ({existing.display_name})"
                ) from None
            raise ContactError(f"the name {name!r} is already taken") from None
        return Contact(contact_id, address, name, tcp_endpoint, now_ms)

    def contacts(self) -> list[Contact]:
        return self._contacts_where("1 = 1", ())

    def contact_by_id(self, contact_id: int) -> Contact:
        found = self._contacts_where("id = ?", (contact_id,))
        if not found:
            raise ContactError(f"no contact with id {contact_id}")
        return found[0]

    def find_contact(self, ref: str, *, missing_ok: bool = False) -> Contact | None:
        """A contact by name or by onion address (any accepted spelling)."""
        found = self._contacts_where("name = ?", (ref,))
        if not found and _looks_like_address(ref):
            try:
                address = normalize_onion_address(ref)
            except AddressError:
                if missing_ok:
                    return None
                raise
            found = self._contacts_where("address = ?", (address,))
        if not found:
            if missing_ok:
                return None
            raise ContactError(f"no contact named {ref[:80]!r}: see 'onionmsg contacts list'")
        return found[0]

    def _contacts_where(self, where: str, args: tuple[Any, ...]) -> list[Contact]:
        rows = self._db.execute(
            "SELECT id, address, name, tcp_endpoint, added_at, verified FROM contacts"  # noqa: S608 - fixed clauses only
            f" WHERE {where} ORDER BY id",
            args,
        )
        return [Contact(row[0], row[1], row[2], row[3], row[4], bool(row[5])) for row in rows]

    def set_verified(self, contact_id: int, verified: bool) -> None:
        with self._transaction() as db:
            db.execute("UPDATE contacts SET verified = ? WHERE id = ?", (int(verified), contact_id))

    # -- messages ---------------------------------------------------------------------------

    def add_outgoing(
        self,
        contact_id: int,
        message_id: bytes,
        text: str,
        now_ms: int,
        status: Status = Status.QUEUED,
    ) -> StoredMessage:
        """Store a message to send; ``SENT`` when the caller writes it to a link right after."""
        assert status in (Status.QUEUED, Status.SENT)
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO messages (message_id, contact_id, direction, text, sent_at,"
                " stored_at, status) VALUES (?, ?, 'out', ?, ?, ?, ?)",
                (message_id, contact_id, text, now_ms, now_ms, status.value),
            )
            row_id = cursor.lastrowid
        return StoredMessage(row_id, message_id, contact_id, "out", text, now_ms, now_ms, status)

    def add_incoming(
        self, contact_id: int, message_id: bytes, text: str, sent_at: int, now_ms: int
    ) -> StoredMessage | None:
        """Store a received message; None if this id was already stored (a redelivery)."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO messages (message_id, contact_id, direction, text,"
                " sent_at, stored_at, status) VALUES (?, ?, 'in', ?, ?, ?, ?)",
                (message_id, contact_id, text, sent_at, now_ms, Status.RECEIVED.value),
            )
            if cursor.rowcount == 0:
                return None
            row_id = cursor.lastrowid
        return StoredMessage(
            row_id, message_id, contact_id, "in", text, sent_at, now_ms, Status.RECEIVED
        )

    def set_status(
        self, contact_id: int, message_id: bytes, status: Status
    ) -> StoredMessage | None:
        """Advance an outgoing message's status (never backwards); the updated row or None."""
        order = [Status.QUEUED, Status.SENT, Status.DELIVERED]
        earlier = [s.value for s in order[: order.index(status)]]
        placeholders = ",".join("?" * len(earlier))
        if not earlier:
            return None
        with self._transaction(durable=False) as db:
            cursor = db.execute(
                f"UPDATE messages SET status = ? WHERE contact_id = ? AND direction = 'out'"  # noqa: S608
                f" AND message_id = ? AND status IN ({placeholders})",
                (status.value, contact_id, message_id, *earlier),
            )
            changed = cursor.rowcount
        if not changed:
            return None
        return self._message_where(
            "contact_id = ? AND direction = 'out' AND message_id = ?", (contact_id, message_id)
        )

    def outbox(self, contact_id: int) -> list[StoredMessage]:
        """Outgoing messages to this contact not yet delivered, oldest first."""
        return self._messages_where(
            "contact_id = ? AND direction = 'out' AND status != ?",
            (contact_id, Status.DELIVERED.value),
        )

    def messages(self, contact_id: int | None = None, after: int = 0) -> list[StoredMessage]:
        if contact_id is None:
            return self._messages_where("id > ?", (after,))
        return self._messages_where("contact_id = ? AND id > ?", (contact_id, after))

    def _messages_where(self, where: str, args: tuple[Any, ...]) -> list[StoredMessage]:
        rows = self._db.execute(
            "SELECT id, message_id, contact_id, direction, text, sent_at, stored_at, status"  # noqa: S608 - fixed clauses only
            f" FROM messages WHERE {where} ORDER BY id",
            args,
        )
        return [
            StoredMessage(row[0], row[1], row[2], row[3], row[4], row[5], row[6], Status(row[7]))
            for row in rows
        ]

    def _message_where(self, where: str, args: tuple[Any, ...]) -> StoredMessage | None:
        found = self._messages_where(where, args)
        return found[0] if found else None


def _looks_like_address(text: str) -> bool:
    candidate = text.strip().lower().removesuffix(".onion")
    return len(candidate) == 56
