"""No key, passphrase or plaintext in any log, at any level.

Daemons run with ``-v`` (debug logging of everything: onionmsg, Twisted, txtorcon) through a
session of ordinary use; then every log and every file under each home, except the
encrypted store itself, is searched for the secrets in every usual spelling (raw, hex,
base64, base32): the message texts and a request's note, the identity seed, the store key,
the passphrase, the ratchet states' keys, the endpoint onions' keys and the client-auth
private keys (tor's ``x25519:`` form included), and the ADD_ONION key blobs.
"""

from __future__ import annotations

import base64
import json
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from integration.tor_users import client_tor, delivered, received, start_on_tor, tor_user
from integration.users import User, wait_for
from onionmsg.config import Home
from onionmsg.control.client import ControlClient
from onionmsg.crypto.endpoint import EndpointKey
from onionmsg.store.db import Store
from onionmsg.store.keys import KeyParams
from onionmsg.testnet import TestNet
from onionmsg.transport.tor import client_auth_private_text

VERBOSE = ("onionmsg", "-v")
STORE_FILES = ("store.db", "store.db-wal", "store.db-shm")


def spellings(secret: bytes) -> Iterator[bytes]:
    """The ways a secret could be written to a log."""
    yield secret
    yield secret.hex().encode()
    yield secret.hex().upper().encode()
    for encoded in (base64.b64encode(secret), base64.urlsafe_b64encode(secret)):
        yield encoded
        yield encoded.rstrip(b"=")
    yield base64.b32encode(secret).rstrip(b"=")
    yield base64.b32encode(secret).rstrip(b"=").lower()


def _ratchet_secrets(state: str) -> Iterator[bytes]:
    """The secret keys in a ratchet state's JSON: the DH ratchet's private key, the root and
    chain keys, skipped message keys (the package stores bytes as latin-1 strings)."""

    def walk(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            for name, value in node.items():
                if isinstance(value, str) and (name.endswith("priv") or name == "key"):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    for text in walk(json.loads(state)):
        secret = text.encode("latin-1")
        assert len(secret) == 32
        yield secret


def store_secrets(user: User, passphrase: bytes | None) -> dict[str, bytes]:
    """Named secrets of a user, read from its store (its daemon stopped)."""
    home = Home(user.home)
    key = KeyParams.load(home.keyfile_path).derive(passphrase)
    store = Store.open(home.store_path, key)
    try:
        identity = store.identity()
        secrets = {
            "identity seed": identity.seed,
            "identity expanded key": identity.expanded_secret_key(),
            "identity x25519": identity.x25519_private,
            "store key": key,
        }
        if passphrase is not None:
            secrets["passphrase"] = passphrase
        for contact in store.contacts():
            state = store.ratchet_state(contact.id)
            assert state is not None, f"{user.name} has a ratchet session with {contact.name}"
            for index, secret in enumerate(_ratchet_secrets(state)):
                secrets[f"ratchet key {contact.name} {index}"] = secret
        for endpoints in store.all_endpoints():
            if endpoints.our_endpoint_seed is not None:
                endpoint = EndpointKey(endpoints.our_endpoint_seed)
                secrets[f"endpoint seed {endpoints.contact_id}"] = endpoint.seed
                secrets[f"endpoint expanded key {endpoints.contact_id}"] = (
                    endpoint.expanded_secret_key()
                )
            if endpoints.our_auth_private is not None:
                secrets[f"client-auth key {endpoints.contact_id}"] = endpoints.our_auth_private
    finally:
        store.close()
    return secrets


def searchable_files(user: User) -> list[Path]:
    """Every file under the home but the encrypted store (its daemon logs are there)."""
    files = [p for p in sorted(user.home.rglob("*")) if p.is_file() and p.name not in STORE_FILES]
    assert any(p.name.endswith(".stderr") for p in files), "the daemon's log is searched"
    return files


def leaks(files: list[Path], secrets: dict[str, bytes], texts: list[str]) -> list[str]:
    contents = {path: path.read_bytes() for path in files}
    found = []
    for name, secret in [*secrets.items(), *((f"text {t!r}", t.encode()) for t in texts)]:
        for spelling in spellings(secret):
            for path, data in contents.items():
                if spelling in data:
                    found.append(f"{name} in {path}")
    return found


def _assert_verbose_and_searchable(files: list[Path], user: User) -> None:
    """The search can fail: the logs hold the libraries' info lines (shown only with -v) and
    the user's public address, which the search finds."""
    logs = b"".join(p.read_bytes() for p in files if p.name.endswith(".stderr"))
    assert b"#info] Starting factory" in logs
    assert leaks(files, {}, [user.address])


def test_no_secret_in_any_log_over_tcp(tmp_path: Path, users: list[User]) -> None:
    alice, bob = User("alice", tmp_path / "alice"), User("bob", tmp_path / "bob")
    users.extend([alice, bob])
    passphrases = {"alice": b"canary passphrase ALICE-7f3a", "bob": b"canary passphrase BOB-91c2"}
    for user in (alice, bob):
        file = tmp_path / f"{user.name}-passphrase"
        file.write_bytes(passphrases[user.name] + b"\n")
        user.env["ONIONMSG_PASSPHRASE_FILE"] = str(file)
        user.init()
        user.start_daemon("--transport", "tcp", "--listen", "127.0.0.1:0", launcher=VERBOSE)
    note = "canary request note: it is alice, from the garden"
    texts = [
        note,
        "canary alice->bob before acceptance 5e1d",
        "canary alice->bob after acceptance 0b7c",
        "canary bob->alice ünïcödé 77aa",
    ]
    # A contact request with a note, a message waiting for the answer, the answer.
    alice.cli("contacts", "add", bob.address, "--name", "bob", "--tcp", bob.tcp_endpoint(),
              "--message", note)  # fmt: skip
    alice.cli("send", "bob", texts[1])
    (request,) = wait_for(
        lambda: [json.loads(x) for x in bob.cli("requests", "--json").stdout.splitlines()],
        30,
        "bob to get alice's request",
    )
    bob.cli("requests", "accept", str(request["id"]), "--name", "alice")
    alice.cli("send", "bob", texts[2])
    bob.cli("send", "alice", texts[3])
    for sender, text in ((alice, texts[1]), (alice, texts[2]), (bob, texts[3])):
        wait_for(partial(delivered, sender, text), 90, f"{text!r} delivered")
    # Settings and a backup while the daemons run.
    for user in (alice, bob):
        with ControlClient(user.home / "control.sock") as client:
            client.call("cover.set", profile="low")
            client.call("cover.set", payload_rate=2.0, loop_rate=1.0)
            client.call("cover.set", profile="off")
    backup_passphrase = tmp_path / "backup-passphrase"
    backup_passphrase.write_text("canary backup passphrase 3b3b\n")
    backups = []
    for user in (alice, bob):
        backup = tmp_path / f"{user.name}.backup"
        user.cli("export", str(backup), "--history", "--backup-passphrase-file",
                 str(backup_passphrase))  # fmt: skip
        backups.append(backup)
    for user in (alice, bob):
        assert user.stop_daemon(signal.SIGTERM) == 0
    secrets: dict[str, dict[str, bytes]] = {
        u.name: store_secrets(u, passphrases[u.name]) for u in (alice, bob)
    }
    assert any(name.startswith("ratchet key") for name in secrets["alice"])
    every_secret = {f"{u} {n}": s for u, named in secrets.items() for n, s in named.items()}
    every_secret["backup passphrase"] = b"canary backup passphrase 3b3b"
    files = searchable_files(alice) + searchable_files(bob)
    _assert_verbose_and_searchable(files, alice)
    assert leaks(files, every_secret, texts) == []
    # The backups are encrypted: no text and no key in them either.
    assert leaks(backups, every_secret, texts) == []


def test_no_key_in_any_log_on_tor(tor_network: TestNet, tmp_path: Path, users: list[User]) -> None:
    """txtorcon could log control commands, and ADD_ONION and ONION_CLIENT_AUTH_ADD carry
    keys: the identity's and endpoint onions' key blobs and the client-auth private keys."""
    alice = tor_user("alice", tmp_path / "alice", client_tor(tor_network, "client1"))
    bob = tor_user("bob", tmp_path / "bob", client_tor(tor_network, "client2"))
    users.extend([alice, bob])
    for user in (alice, bob):
        start_on_tor(user, user.tor, launcher=VERBOSE)
    alice.cli("contacts", "add", bob.address, "--name", "bob")
    bob.cli("contacts", "add", alice.address, "--name", "alice")
    texts = ["canary over tor alice->bob 41d0", "canary over tor bob->alice 9e9e"]
    alice.cli("send", "bob", texts[0])
    bob.cli("send", "alice", texts[1])
    wait_for(lambda: delivered(alice, texts[0]) and received(bob, texts[0]), 120, "alice's text")
    wait_for(lambda: delivered(bob, texts[1]) and received(alice, texts[1]), 120, "bob's text")
    # Each has published an endpoint onion for the other and holds a client-auth key for the
    # other's: the commands that carry those keys have been sent to tor.
    wait_for(
        lambda: all(
            u.status()["network"]["endpoints"] >= 1 and u.status()["network"]["client_auth"] >= 1
            for u in (alice, bob)
        ),
        120,
        "endpoint onions and client-auth keys",
    )
    for user in (alice, bob):
        assert user.stop_daemon(signal.SIGTERM) == 0
    every_secret: dict[str, bytes] = {}
    for user in (alice, bob):
        secrets = store_secrets(user, None)
        assert any(n.startswith("client-auth key") for n in secrets), "endpoints were made"
        for name, secret in list(secrets.items()):
            every_secret[f"{user.name} {name}"] = secret
            if name.startswith("client-auth key"):
                text = client_auth_private_text(secret).encode()
                every_secret[f"{user.name} {name} (tor form)"] = text
        seed = secrets["identity seed"]
        blob = "ED25519-V3:" + base64.b64encode(secrets["identity expanded key"]).decode()
        every_secret[f"{user.name} ADD_ONION blob"] = blob.encode()
        assert len(seed) == 32
    files = searchable_files(alice) + searchable_files(bob)
    _assert_verbose_and_searchable(files, alice)
    # The tors' own logs and data (their control ports saw the commands) are searched too.
    for user in (alice, bob):
        files += [p for p in sorted(user.tor.data_dir.rglob("*")) if p.is_file()]
    assert leaks(files, every_secret, texts) == []
