"""Deleted messages are gone: from the store's live pages, its free pages and its WAL.

The store is SQLCipher: a canary is never visible in the encrypted files, so a search of
the raw bytes proves nothing. These tests decrypt every page of the database file and
every frame of its WAL themselves (SQLCipher 4's format, with the raw key the store is
keyed by) and search the plaintext pages, free pages and superseded WAL frames included.
A canary that is still stored must be found (so the decryption is known to work); a
deleted one must not.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from onionmsg.crypto.identity import Identity
from onionmsg.store.db import Store

KEY = bytes(range(32))
CONTACT = Identity(bytes([7]) * 32)
OTHER_CONTACT = Identity(bytes([9]) * 32)

# SQLCipher 4 defaults (the store does not change them).
PAGE_SIZE = 4096
SALT_SIZE = 16
IV_SIZE = 16
HMAC_SIZE = 64
RESERVE = IV_SIZE + HMAC_SIZE  # 80: already a multiple of the AES block
WAL_HEADER = 32
WAL_FRAME_HEADER = 24


def _decrypt_page(raw: bytes, page_number: int, key: bytes, hmac_key: bytes) -> bytes:
    """One page's plaintext, after checking its HMAC (so a wrong layout cannot pass silently)."""
    assert len(raw) == PAGE_SIZE
    start = SALT_SIZE if page_number == 1 else 0
    encrypted = raw[start : PAGE_SIZE - RESERVE]
    iv = raw[PAGE_SIZE - RESERVE : PAGE_SIZE - HMAC_SIZE]
    tag = raw[PAGE_SIZE - HMAC_SIZE :]
    expected = hmac.new(
        hmac_key, encrypted + iv + struct.pack("<I", page_number), hashlib.sha512
    ).digest()
    assert hmac.compare_digest(tag, expected), f"page {page_number} fails its HMAC"
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return decryptor.update(encrypted) + decryptor.finalize()


def decrypted_pages(path: Path, key: bytes) -> list[bytes]:
    """Every page of a SQLCipher 4 database and of its WAL (all frames, superseded or not),
    decrypted. An all-zero page (never written, or a zeroed WAL tail) is returned as is."""
    data = path.read_bytes()
    salt = data[:SALT_SIZE]
    hmac_key = hashlib.pbkdf2_hmac("sha512", key, bytes(b ^ 0x3A for b in salt), 2, 32)
    pages = []
    for index in range(len(data) // PAGE_SIZE):
        raw = data[index * PAGE_SIZE : (index + 1) * PAGE_SIZE]
        pages.append(_decrypt_page(raw, index + 1, key, hmac_key))
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        log = wal.read_bytes()
        offset = WAL_HEADER
        while offset + WAL_FRAME_HEADER + PAGE_SIZE <= len(log):
            (page_number,) = struct.unpack(">I", log[offset : offset + 4])
            raw = log[offset + WAL_FRAME_HEADER : offset + WAL_FRAME_HEADER + PAGE_SIZE]
            if page_number and any(raw):
                pages.append(_decrypt_page(raw, page_number, key, hmac_key))
            offset += WAL_FRAME_HEADER + PAGE_SIZE
    return pages


def plaintext_hits(home: Path, key: bytes, canary: bytes) -> list[str]:
    """Where ``canary`` is: any file under ``home`` (raw bytes), or a decrypted page of the
    store (its database file and WAL)."""
    hits = [
        str(path.relative_to(home))
        for path in sorted(home.rglob("*"))
        if path.is_file() and canary in path.read_bytes()
    ]
    for number, page in enumerate(decrypted_pages(home / "store.db", key), 1):
        if canary in page:
            hits.append(f"store.db decrypted page/frame {number}")
    return hits


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def _store(home: Path) -> Store:
    return Store.create(home / "store.db", KEY, Identity(bytes(32)))


def _queue(store: Store, contact_id: int, index: int, text: str, *, expires_at: int | None) -> None:
    store.queue_outgoing(
        contact_id,
        index.to_bytes(16, "big"),
        text=text,
        content=None,
        envelope=b"sealed",
        ratchet_state=None,
        now_ms=index,
        expires_at=expires_at,
    )


def _receive(
    store: Store, contact_id: int, index: int, text: str, *, expires_at: int | None
) -> None:
    store.store_incoming(
        contact_id,
        index.to_bytes(16, "big"),
        text=text,
        sent_at=index,
        ratchet_state="{}",
        now_ms=index,
        expires_at=expires_at,
    )


# A short canary (fits in a cell) and a long one (spills onto overflow pages).
SHORT = "canary-short-XYZZY"
LONG = "canary-long-PLUGH " + "x" * (3 * PAGE_SIZE)
KEPT = "canary-kept-FROTZ"


def test_the_decryption_sees_what_is_stored(home: Path) -> None:
    """The check below can fail: a stored canary is found in the decrypted pages (and never
    in the raw bytes of any file)."""
    store = _store(home)
    contact = store.add_contact(CONTACT.onion_address, "c", None, 1)
    _receive(store, contact.id, 1, SHORT, expires_at=None)
    assert plaintext_hits(home, KEY, SHORT.encode())
    assert not [h for h in plaintext_hits(home, KEY, SHORT.encode()) if "decrypted" not in h]
    store.close()
    assert plaintext_hits(home, KEY, SHORT.encode())


def test_expired_messages_leave_no_plaintext(home: Path) -> None:
    store = _store(home)
    contact = store.add_contact(CONTACT.onion_address, "c", None, 1)
    # Enough traffic that pages are written to the WAL more than once, and some reach the
    # database file through automatic checkpoints.
    for index in range(200):
        _receive(store, contact.id, 10 + index, f"{KEPT} {index}", expires_at=None)
    _receive(store, contact.id, 1, SHORT, expires_at=5_000)
    _queue(store, contact.id, 2, LONG, expires_at=5_000)
    assert plaintext_hits(home, KEY, SHORT.encode())
    assert plaintext_hits(home, KEY, b"canary-long-PLUGH")
    gone = store.delete_expired(now_ms=5_000)
    assert sorted(m.text[:12] for m in gone) == ["canary-long-", "canary-short"]
    for canary in (SHORT.encode(), b"canary-long-PLUGH"):
        assert plaintext_hits(home, KEY, canary) == [], canary
    assert plaintext_hits(home, KEY, f"{KEPT} 199".encode())  # the rest is still there
    store.close()
    assert plaintext_hits(home, KEY, SHORT.encode()) == []


def test_a_removed_contact_leaves_no_plaintext(home: Path) -> None:
    store = _store(home)
    removed = store.add_contact(CONTACT.onion_address, "canary-name-GRUE", None, 1)
    kept = store.add_contact(OTHER_CONTACT.onion_address, "kept", None, 1)
    for index in range(50):
        _receive(store, removed.id, 100 + index, f"{SHORT} {index}", expires_at=None)
        _receive(store, kept.id, 100 + index, f"{KEPT} {index}", expires_at=None)
    _queue(store, removed.id, 3, LONG, expires_at=None)
    # Plaintext waiting for a session sits in the outbox until sealed: it must go too.
    store.queue_outgoing(
        removed.id,
        b"\x04" * 16,
        text=None,
        content=b"canary-outbox-ZORK",
        envelope=None,
        ratchet_state='{"canary": "ratchet-state-ZORK"}',
        now_ms=4,
    )
    store.remove_contact(removed.id)
    for canary in (
        SHORT.encode(),
        b"canary-long-PLUGH",
        b"canary-name-GRUE",
        b"canary-outbox-ZORK",
        b"ratchet-state-ZORK",
    ):
        assert plaintext_hits(home, KEY, canary) == [], canary
    assert plaintext_hits(home, KEY, f"{KEPT} 49".encode())
    store.close()


def test_a_forgotten_request_leaves_no_plaintext(home: Path) -> None:
    store = _store(home)
    request, _ = store.record_request(
        CONTACT.onion_address, "canary-request-BLORB", 1, max_pending=5
    )
    store.forget_request(request.id)
    assert plaintext_hits(home, KEY, b"canary-request-BLORB") == []
    # Requests past the cap are dropped the same way.
    for index in range(3):
        address = Identity(bytes([20 + index]) * 32).onion_address
        store.record_request(address, f"canary-dropped-{index}", 10 + index, max_pending=1)
    assert plaintext_hits(home, KEY, b"canary-dropped-0") == []
    assert plaintext_hits(home, KEY, b"canary-dropped-2")  # the newest is kept
    store.close()


def test_a_reader_delays_the_scrub_until_the_store_closes(home: Path) -> None:
    """An ``export`` beside the daemon holds a snapshot: the deletion neither waits for it
    nor fails, and the plaintext goes when the store closes (SQLite's last-close checkpoint)."""
    store = _store(home)
    contact = store.add_contact(CONTACT.onion_address, "c", None, 1)
    _receive(store, contact.id, 1, SHORT, expires_at=5_000)
    reader = Store.open(home / "store.db", KEY, read_only=True)
    with reader.read_transaction():
        assert [m.text for m in reader.messages()] == [SHORT]
        assert [m.text for m in store.delete_expired(now_ms=5_000)] == [SHORT]
        assert [m.text for m in reader.messages()] == [SHORT]  # its snapshot, still
    reader.close()
    store.close()
    assert plaintext_hits(home, KEY, SHORT.encode()) == []
    assert not (home / "store.db-wal").exists()
