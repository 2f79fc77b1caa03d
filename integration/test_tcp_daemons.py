"""Two real daemons on loopback TCP: add each other, message both ways, read histories."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.users import User, wait_for
from onionmsg.control.client import ControlClient


@pytest.fixture
def alice_and_bob(tmp_path: Path) -> Iterator[tuple[User, User]]:
    alice, bob = User("alice", tmp_path / "alice"), User("bob", tmp_path / "bob")
    alice.init("--no-passphrase")
    passphrase = tmp_path / "bob-passphrase"
    passphrase.write_text("correct horse battery staple\n")
    bob.env["ONIONMSG_PASSPHRASE_FILE"] = str(passphrase)
    bob.init()
    try:
        alice.start_daemon("--transport", "tcp", "--listen", "127.0.0.1:0")
        bob.start_daemon("--transport", "tcp", "--listen", "127.0.0.1:0")
        yield alice, bob
    finally:
        for user in (alice, bob):
            if user.daemon is not None:
                user.daemon.kill()
                user.daemon.wait()


def _befriend(alice: User, bob: User) -> None:
    alice.cli("contacts", "add", bob.address, "--name", "bob", "--tcp", bob.tcp_endpoint())
    bob.cli(
        "contacts",
        "add",
        alice.address + ".onion",
        "--name",
        "alice",
        "--tcp",
        alice.tcp_endpoint(),
    )
    wait_for(lambda: all(c["online"] for c in alice.contacts() + bob.contacts()), 30, "link")


def test_two_users_exchange_messages(alice_and_bob: tuple[User, User]) -> None:
    alice, bob = alice_and_bob
    assert alice.status()["address"] == alice.address
    shown = alice.cli("address")
    assert shown.stdout.strip() == alice.address
    assert "without a passphrase" in shown.stderr  # alice chose --no-passphrase
    assert "without a passphrase" not in bob.cli("address").stderr
    assert bob.status()["passphrase"] is True
    _befriend(alice, bob)
    sent_id = alice.cli("send", "bob", "hello bob").stdout.strip()
    bob.cli("send", alice.address, "hi alice, ünïcödé ✓")

    def delivered(user: User, text: str) -> bool:
        return any(m["text"] == text and m["status"] == "delivered" for m in user.messages())

    wait_for(lambda: delivered(alice, "hello bob"), 30, "alice's message delivered")
    wait_for(lambda: delivered(bob, "hi alice, ünïcödé ✓"), 30, "bob's message delivered")
    bob_history = bob.messages()
    incoming = [m for m in bob_history if m["direction"] == "in"]
    assert [(m["id"], m["contact"], m["text"]) for m in incoming] == [
        (sent_id, "alice", "hello bob")
    ]
    for m in bob_history:
        assert {"id", "contact", "direction", "text", "time", "status"} <= m.keys()
    alice_in = [m for m in alice.messages() if m["direction"] == "in"]
    assert [(m["contact"], m["text"]) for m in alice_in] == [("bob", "hi alice, ünïcödé ✓")]
    contacts = alice.contacts()
    assert [(c["name"], c["address"], c["online"]) for c in contacts] == [
        ("bob", bob.address, True)
    ]


def test_follow_prints_new_messages(alice_and_bob: tuple[User, User]) -> None:
    alice, bob = alice_and_bob
    _befriend(alice, bob)
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "onionmsg",
            "--home",
            str(bob.home),
            "messages",
            "--json",
            "--follow",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=bob.env,
    )
    try:
        time.sleep(0.5)
        alice.cli("send", "bob", "live")
        assert follower.stdout is not None
        line = follower.stdout.readline()
        assert json.loads(line)["text"] == "live"
    finally:
        follower.kill()
        follower.wait()


def test_cli_errors_are_one_clear_sentence(
    alice_and_bob: tuple[User, User], tmp_path: Path
) -> None:
    alice, bob = alice_and_bob
    bad = alice.cli("contacts", "add", "notanaddress", check=False)
    assert bad.returncode == 1 and "not a v3 onion address" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    bad = alice.cli("send", "nobody", "hi", check=False)
    assert bad.returncode == 1 and "no contact named" in bad.stderr
    bad = alice.cli("contacts", "add", alice.address, check=False)
    assert bad.returncode == 1 and "your own address" in bad.stderr
    usage = alice.cli("contacts", "frobnicate", check=False)
    assert usage.returncode == 2
    again = alice.cli("init", "--no-passphrase", check=False)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    nobody = User("carol", tmp_path / "carol")
    assert nobody.cli("send", "bob", "x", check=False).returncode == 1
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    result = bob.cli("address", "--passphrase-file", str(wrong), check=False)
    # The daemon is running, so address comes from it without a passphrase.
    assert result.returncode == 0
    bob.stop_daemon()
    result = bob.cli("daemon", "--passphrase-file", str(wrong), check=False)
    assert result.returncode == 1 and "wrong passphrase" in result.stderr
    assert bob.cli("address").stdout.strip() == bob.address  # data intact


def test_hostile_bytes_do_not_crash_the_daemon(alice_and_bob: tuple[User, User]) -> None:
    alice, bob = alice_and_bob
    _befriend(alice, bob)
    host, port = bob.tcp_endpoint().rsplit(":", 1)
    for payload in (b"\x00" * 5000, b"GET / HTTP/1.0\r\n\r\n" * 100, bytes(range(256)) * 8):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(payload)
            sock.settimeout(10)
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
    alice.cli("send", "bob", "still alive?")
    wait_for(lambda: any(m["text"] == "still alive?" for m in bob.messages()), 30, "delivery")
    assert bob.daemon is not None and bob.daemon.poll() is None


def test_home_is_private_and_holds_no_plaintext(alice_and_bob: tuple[User, User]) -> None:
    alice, bob = alice_and_bob
    _befriend(alice, bob)
    canary = "canary-PLUGH-4711"
    alice.cli("send", "bob", canary)
    wait_for(lambda: any(m["text"] == canary for m in bob.messages()), 30, "delivery")
    for user in (alice, bob):
        assert user.home.stat().st_mode & 0o777 == 0o700
        for path in user.home.rglob("*"):
            if path.name.startswith("daemon-"):  # the test's own capture of stderr
                continue
            assert path.stat().st_mode & 0o077 == 0, path
            if path.is_file():
                data = path.read_bytes()
                for secret in (canary, alice.address, bob.address, "bob", "alice"):
                    # bob's home is passphrase-protected; alice's (--no-passphrase) is still
                    # SQLCipher, with a public key: no plaintext on disk in either.
                    assert secret.encode() not in data, (path, secret)


def test_safety_numbers_match_and_mark_verified(alice_and_bob: tuple[User, User]) -> None:
    alice, bob = alice_and_bob
    _befriend(alice, bob)

    def number(output: str) -> str:
        return next(line.strip() for line in output.splitlines() if line.strip()[:5].isdigit())

    seen_by_alice = alice.cli("contacts", "verify", "bob").stdout
    assert "Not marked verified" in seen_by_alice
    assert [c["verified"] for c in alice.contacts()] == [False]
    seen_by_bob = bob.cli("contacts", "verify", "alice", "--yes").stdout
    assert number(seen_by_alice) == number(seen_by_bob)
    assert len(number(seen_by_bob).split()) == 12
    assert [c["verified"] for c in bob.contacts()] == [True]
    bob.stop_daemon()
    bob.start_daemon("--transport", "tcp", "--listen", "127.0.0.1:0")
    assert [c["verified"] for c in bob.contacts()] == [True]  # stored


def test_fifty_messages_to_an_offline_contact_survive_a_sender_restart(
    alice_and_bob: tuple[User, User],
) -> None:
    alice, bob = alice_and_bob
    _befriend(alice, bob)
    bob_endpoint = bob.tcp_endpoint()
    bob.stop_daemon()
    wait_for(lambda: not alice.contacts()[0]["online"], 30, "bob offline")
    for i in range(50):
        alice.cli("send", "bob", f"offline {i:02d}")
    assert {m["status"] for m in alice.messages()} == {"queued"}
    # The messages are encrypted (Double Ratchet) and stored; the sender restarts.
    alice_endpoint = alice.tcp_endpoint()
    alice.stop_daemon()
    alice.start_daemon("--transport", "tcp", "--listen", alice_endpoint)
    bob.start_daemon("--transport", "tcp", "--listen", bob_endpoint)
    wait_for(
        lambda: len([m for m in bob.messages() if m["direction"] == "in"]) == 50,
        90,
        "all 50 messages",
    )
    texts = [m["text"] for m in bob.messages() if m["direction"] == "in"]
    assert texts == [f"offline {i:02d}" for i in range(50)]
    wait_for(
        lambda: {m["status"] for m in alice.messages() if m["direction"] == "out"} == {"delivered"},
        60,
        "all acknowledged",
    )


def test_passwd_rekeys_in_place(tmp_path: Path) -> None:
    user = User("carol", tmp_path / "carol")
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_text("first passphrase\n")
    new.write_text("second passphrase\n")
    address = user.init("--passphrase-file", str(old))
    before = (user.home / "store.key.json").read_bytes()
    result = user.cli("passwd", "--passphrase-file", str(old), "--new-passphrase-file", str(new))
    assert "passphrase changed" in result.stderr
    assert (user.home / "store.key.json").read_bytes() != before  # a new salt
    assert not (user.home / "store.key.json.new").exists()
    wrong = user.cli("address", "--passphrase-file", str(old), check=False)
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr
    assert user.cli("address", "--passphrase-file", str(new)).stdout.strip() == address
    # Refused while a daemon holds the store.
    user.env["ONIONMSG_PASSPHRASE_FILE"] = str(new)
    user.start_daemon("--transport", "tcp")
    try:
        busy = user.cli(
            "passwd", "--passphrase-file", str(new), "--new-passphrase-file", str(old), check=False
        )
        assert busy.returncode == 1 and "daemon is already running" in busy.stderr
    finally:
        user.stop_daemon()
    assert user.cli("address", "--passphrase-file", str(new)).stdout.strip() == address


def test_interrupted_passwd_is_finished_on_next_open(tmp_path: Path) -> None:
    """A crash between re-keying and swapping the key files loses nothing."""
    from onionmsg.store.db import Store
    from onionmsg.store.keys import KeyParams

    user = User("dave", tmp_path / "dave")
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_text("first passphrase\n")
    new.write_text("second passphrase\n")
    address = user.init("--passphrase-file", str(old))
    params = KeyParams.load(user.home / "store.key.json")
    store = Store.open_with_passphrase(user.home / "store.db", params, b"first passphrase")
    pending = KeyParams.new(passphrase=True)
    pending.save(user.home / "store.key.json.new")
    store.rekey(pending.derive(b"second passphrase"))
    store.close()  # ... and the process dies here, before the swap
    assert user.cli("address", "--passphrase-file", str(new)).stdout.strip() == address
    assert not (user.home / "store.key.json.new").exists()


def test_cover_traffic_profile_is_used_shown_and_changed_at_run_time(tmp_path: Path) -> None:
    alice, bob = User("alice", tmp_path / "alice"), User("bob", tmp_path / "bob")
    for user in (alice, bob):
        user.init("--no-passphrase")
        user.start_daemon("--transport", "tcp", "--cover", "high")
    try:
        _befriend(alice, bob)
        alice.cli("send", "bob", "under cover")
        wait_for(lambda: any(m["status"] == "delivered" for m in alice.messages()), 30, "delivery")
        cover = alice.status()["cover"]
        assert cover["profile"] == "high" and cover["expected_latency_s"] == 0.5
        assert cover["bytes_per_day"] > 100_000_000
        wait_for(lambda: alice.status()["cover"]["sent_cells"]["drop"] > 0, 30, "drop cells")
        # Loop cells go out to alice's own address and come back.
        wait_for(lambda: alice.status()["cover"]["loop_returned"] >= 2, 60, "loop cells back")
        with ControlClient(alice.home / "control.sock") as client:
            assert client.call("cover.set", profile="low")["profile"] == "low"
            custom = client.call("cover.set", payload_rate=0.5, loop_rate=0.1)
        assert custom["profile"] == "custom" and custom["payload_rate"] == 0.5
        assert alice.status()["cover"]["profile"] == "custom"
        bad = alice.cli("daemon", "--cover", "loud", check=False)
        assert bad.returncode == 2
    finally:
        for user in (alice, bob):
            if user.daemon is not None:
                user.stop_daemon()
