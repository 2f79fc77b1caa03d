"""Backup and restore with real daemons on loopback TCP: alice exports (her daemon running),
her device dies, a fresh home imports the backup, and she and bob talk again both ways."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.users import User, wait_for


@pytest.fixture
def alice_and_bob(tmp_path: Path) -> Iterator[tuple[User, User]]:
    alice, bob = User("alice", tmp_path / "alice"), User("bob", tmp_path / "bob")
    store_passphrase = tmp_path / "store-passphrase"
    store_passphrase.write_text("alice's store passphrase\n")
    alice.env["ONIONMSG_PASSPHRASE_FILE"] = str(store_passphrase)
    alice.init()
    bob.init("--no-passphrase")
    try:
        for user in (alice, bob):
            user.start_daemon("--transport", "tcp", "--listen", "127.0.0.1:0")
        yield alice, bob
    finally:
        for user in (alice, bob):
            if user.daemon is not None:
                user.daemon.kill()
                user.daemon.wait()


def _texts(user: User, direction: str) -> list[str]:
    return [m["text"] for m in user.messages() if m["direction"] == direction]


def _delivered(user: User, text: str) -> bool:
    return any(m["text"] == text and m["status"] == "delivered" for m in user.messages())


def test_a_restored_user_and_a_contact_exchange_messages_both_ways(
    alice_and_bob: tuple[User, User], tmp_path: Path
) -> None:
    alice, bob = alice_and_bob
    alice_endpoint = alice.tcp_endpoint()
    alice.cli("contacts", "add", bob.address, "--name", "bob", "--tcp", bob.tcp_endpoint())
    bob.cli("contacts", "add", alice.address, "--name", "alice", "--tcp", alice_endpoint)
    alice.cli("contacts", "verify", "bob", "--yes")
    alice.cli("send", "bob", "before the backup")
    bob.cli("send", "alice", "reply before the backup")
    wait_for(lambda: _delivered(alice, "before the backup"), 30, "alice's message delivered")
    wait_for(lambda: _delivered(bob, "reply before the backup"), 30, "bob's reply delivered")

    # Exported while alice's daemon runs (the store is read beside it).
    backup = tmp_path / "alice.backup"
    backup_passphrase = tmp_path / "backup-passphrase"
    backup_passphrase.write_text("a different backup passphrase\n")
    alice.cli(
        "export", str(backup), "--history", "--backup-passphrase-file", str(backup_passphrase)
    )
    assert backup.stat().st_mode & 0o777 == 0o600
    data = backup.read_bytes()
    for secret in (b"before the backup", alice.address.encode(), bob.address.encode(), b"bob"):
        assert secret not in data

    # Alice's device dies; bob writes to her meanwhile.
    alice.stop_daemon()
    wait_for(lambda: not bob.contacts()[0]["online"], 30, "alice offline")
    bob.cli("send", "alice", "while you were away")

    restored = User("restored", tmp_path / "restored")
    restored.env["ONIONMSG_PASSPHRASE_FILE"] = str(tmp_path / "new-store-passphrase")
    (tmp_path / "new-store-passphrase").write_text("the new machine's passphrase\n")
    imported = restored.cli(
        "import", str(backup), "--backup-passphrase-file", str(backup_passphrase)
    )
    assert imported.stdout.strip() == alice.address
    assert "one machine only" in imported.stderr
    restored.address = alice.address
    assert restored.home.stat().st_mode & 0o777 == 0o700
    assert restored.cli("address").stdout.strip() == alice.address

    restored.start_daemon("--transport", "tcp", "--listen", alice_endpoint)
    contacts = restored.contacts()
    assert [(c["name"], c["address"], c["verified"]) for c in contacts] == [
        ("bob", bob.address, True)
    ]
    # Bob's message, sealed under the session the restored alice no longer has, arrives.
    wait_for(lambda: "while you were away" in _texts(restored, "in"), 90, "bob's message")
    wait_for(lambda: _delivered(bob, "while you were away"), 30, "its acknowledgement")
    restored.cli("send", "bob", "I am back")
    wait_for(lambda: "I am back" in _texts(bob, "in"), 30, "the restored alice's message")
    wait_for(lambda: _delivered(restored, "I am back"), 30, "its acknowledgement")
    bob.cli("send", "alice", "welcome back")
    wait_for(lambda: "welcome back" in _texts(restored, "in"), 30, "bob's welcome")
    # The history came with the backup.
    assert _texts(restored, "out")[:1] == ["before the backup"]
    assert _texts(restored, "in")[:2] == ["reply before the backup", "while you were away"]
    assert restored.status()["twin"] is None


def test_import_refuses_what_it_cannot_restore_and_changes_nothing(
    alice_and_bob: tuple[User, User], tmp_path: Path
) -> None:
    alice, _ = alice_and_bob
    backup = tmp_path / "alice.backup"
    good, wrong = tmp_path / "good", tmp_path / "wrong"
    good.write_text("the backup passphrase\n")
    wrong.write_text("not the backup passphrase\n")
    alice.cli("export", str(backup), "--backup-passphrase-file", str(good))
    target = User("target", tmp_path / "target")
    target.env["ONIONMSG_PASSPHRASE_FILE"] = str(good)

    def refused(file: Path, passphrase: Path, home: Path, reason: str) -> None:
        result = target.cli(
            "import",
            str(file),
            "--home",
            str(home),
            "--backup-passphrase-file",
            str(passphrase),
            check=False,
        )
        assert result.returncode == 1, result.stderr
        assert reason in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stdout == ""

    refused(backup, wrong, target.home, "wrong backup passphrase")
    assert not target.home.exists()
    damaged = tmp_path / "damaged"
    data = bytearray(backup.read_bytes())
    data[len(data) // 2] ^= 0x20
    damaged.write_bytes(bytes(data))
    refused(damaged, good, target.home, "damaged")
    truncated = tmp_path / "truncated"
    truncated.write_bytes(backup.read_bytes()[:40])
    refused(truncated, good, target.home, "truncated")
    assert not target.home.exists()
    newer = tmp_path / "newer"
    newer.write_bytes(backup.read_bytes()[:16] + b"\x09" + backup.read_bytes()[17:])
    refused(newer, good, target.home, "newer than this onionmsg")
    # A home in use: refused, and left exactly as it was.
    before = sorted((p.name, p.stat().st_mtime_ns) for p in alice.home.iterdir())
    refused(backup, good, alice.home, "not empty")
    assert sorted((p.name, p.stat().st_mtime_ns) for p in alice.home.iterdir()) == before
    # No unencrypted backups: an empty backup passphrase is refused.
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = alice.cli(
        "export", str(tmp_path / "x"), "--backup-passphrase-file", str(empty), check=False
    )
    assert result.returncode == 1 and "backup passphrase is empty" in result.stderr
    assert not (tmp_path / "x").exists()
    # And the good file restores.
    restored = target.cli(
        "import", str(backup), "--home", str(target.home), "--backup-passphrase-file", str(good)
    )
    assert restored.stdout.strip() == alice.address
