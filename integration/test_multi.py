"""A pair running `--transport tor,i2p` on the private Tor network and the private i2pd:
they talk over Tor (first in their preference), and over I2P once one's tor is gone."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from integration.i2p_users import i2p_options, needs_i2pd
from integration.tor_users import client_tor, delivered, received, tor_user
from integration.users import User, wait_for
from onionmsg.contacts.contact_string import parse_contact_string
from onionmsg.i2ptestnet import I2PRouter
from onionmsg.testnet import TestNet
from onionmsg.transport.sam import b32_address

pytestmark = needs_i2pd


def both_ready(user: User) -> bool:
    transports = user.status()["network"]["transports"]
    return bool(transports["tor"]["reachable"] and transports["i2p"]["state"] == "ready")


def link_transports(user: User) -> list[str | None]:
    return [c["transport"] for c in user.contacts() if c["online"]]


def exchange(alice: User, bob: User, tag: str, timeout: float) -> None:
    alice.cli("send", "bob", f"{tag}: alice to bob")
    bob.cli("send", "alice", f"{tag}: bob to alice")
    for sender, recipient in ((alice, bob), (bob, alice)):
        text = f"{tag}: {sender.name} to {recipient.name}"
        wait_for(partial(delivered, sender, text), timeout, f"'{text}' delivered")
        assert received(recipient, text)


def test_a_pair_on_tor_and_i2p_keeps_talking_over_i2p_when_one_tor_dies(
    tor_network: TestNet, router: I2PRouter, tmp_path: Path, users: list[User]
) -> None:
    # Tors of their own: bob's is killed below, and other modules use client1/client2.
    alice = tor_user("alice", tmp_path / "alice", client_tor(tor_network, "multialice"))
    bob = tor_user("bob", tmp_path / "bob", client_tor(tor_network, "multibob"))
    users.extend([alice, bob])

    def start(user: User) -> None:
        control = f"tcp:127.0.0.1:{user.tor.control_port}"
        options = ("--transport", "tor,i2p", "--tor-control", control, *i2p_options(router))
        user.start_daemon(*options)

    with ThreadPoolExecutor(2) as pool:  # i2pd creates both sessions on one readiness poll
        list(pool.map(start, [alice, bob]))
    for user in (alice, bob):
        wait_for(partial(both_ready, user), 60, f"{user.name} reachable over tor and i2p")
    strings = {u.name: u.cli("address", "--contact").stdout.strip() for u in (alice, bob)}
    for user in (alice, bob):
        status = user.status()
        destination = parse_contact_string(strings[user.name]).i2p_destination
        assert destination is not None
        assert status["transport"] == "tor,i2p"
        assert status["listening"] == f"tor {user.address}.onion, i2p {b32_address(destination)}"
        shown = user.cli("status").stdout
        assert "network:   tor: reachable (tor bootstrap 100%)" in shown
        assert "           i2p: ready (router reachable, session ready, tunnels ready)" in shown

    alice.cli("contacts", "add", strings["bob"], "--name", "bob")
    bob.cli("contacts", "add", strings["alice"], "--name", "alice")
    exchange(alice, bob, "over tor", timeout=60)
    assert link_transports(alice) == link_transports(bob) == ["tor"]  # tor comes first

    os.kill(bob.tor.pid, signal.SIGKILL)
    try:
        wait_for(
            lambda: not bob.status()["network"]["transports"]["tor"]["reachable"],
            30,
            "bob's daemon to notice his tor is gone",
        )
        exchange(alice, bob, "without bob's tor", timeout=60)
        wait_for(lambda: link_transports(alice) == ["i2p"], 30, "alice's link to bob over i2p")
        assert link_transports(bob) == ["i2p"]
        assert "online over i2p" in alice.cli("contacts", "list").stdout
    finally:
        # The network checks that all its tors live: later tests need bob's back.
        tor_network.restart_client("multibob")
