"""Real onionmsg daemons on the private Tor network: every user is an onion service."""

from __future__ import annotations

import signal
from functools import partial
from pathlib import Path

from stem.control import Controller, EventType

from integration.tor_users import (
    befriend,
    client_tor,
    delivered,
    received,
    start_on_tor,
    tor_user,
)
from integration.users import User, wait_for
from onionmsg.control.client import ControlClient
from onionmsg.testnet import TestNet


def test_published_address_is_the_identity(
    tor_network: TestNet, tmp_path: Path, users: list[User]
) -> None:
    tor = client_tor(tor_network, "client1")
    alice = tor_user("alice", tmp_path / "alice", tor)
    users.append(alice)
    uploaded: list[str] = []
    with Controller.from_port(address="127.0.0.1", port=tor.control_port) as controller:
        controller.authenticate()
        controller.add_event_listener(
            lambda event: uploaded.append(event.address) if event.action == "UPLOADED" else None,
            EventType.HS_DESC,
        )
        start_on_tor(alice, tor)
        wait_for(lambda: alice.address in uploaded, 60, "an HS_DESC UPLOADED event")
    assert set(uploaded) == {alice.address}
    status = alice.status()
    assert status["listening"] == f"tor {alice.address}.onion"
    assert status["network"]["bootstrap_percent"] == 100


def test_three_users_talk_over_onion_services(
    tor_network: TestNet, tmp_path: Path, users: list[User]
) -> None:
    names = ["alice", "bob", "carol"]
    tors = [client_tor(tor_network, n) for n in ("client1", "client2", "client3")]
    people = [tor_user(n, tmp_path / n, t) for n, t in zip(names, tors, strict=True)]
    users.extend(people)
    for person, tor in zip(people, tors, strict=True):
        start_on_tor(person, tor)
    alice, bob, carol = people
    befriend(alice, bob)
    befriend(bob, carol)
    befriend(carol, alice)
    pairs = [(alice, bob), (bob, alice), (bob, carol), (carol, bob), (carol, alice), (alice, carol)]
    for sender, recipient in pairs:
        sender.cli("send", recipient.name, f"{sender.name} to {recipient.name}")
    for sender, recipient in pairs:
        text = f"{sender.name} to {recipient.name}"
        wait_for(partial(delivered, sender, text), 90, f"'{text}' delivered")
        assert received(recipient, text)
    for person in people:
        incoming = [m for m in person.messages() if m["direction"] == "in"]
        assert len(incoming) == 2
        assert len({m["id"] for m in incoming}) == 2


def alice_and_bob_on_tor(tor_network: TestNet, tmp_path: Path, users: list[User]) -> list[User]:
    """Two users on their own client tors, each other's contacts, both daemons running."""
    alice = tor_user("alice", tmp_path / "alice", client_tor(tor_network, "client1"))
    bob = tor_user("bob", tmp_path / "bob", client_tor(tor_network, "client2"))
    users.extend([alice, bob])
    start_on_tor(alice, alice.tor)
    start_on_tor(bob, bob.tor)
    befriend(alice, bob)
    return [alice, bob]


def test_contact_offline_then_back(tor_network: TestNet, tmp_path: Path, users: list[User]) -> None:
    alice, bob = alice_and_bob_on_tor(tor_network, tmp_path, users)
    wait_for(lambda: alice.contacts()[0]["online"], 90, "alice and bob linked")
    bob.stop_daemon(signal.SIGTERM)
    wait_for(lambda: not alice.contacts()[0]["online"], 60, "alice to see bob offline")
    alice.cli("send", "bob", "are you there?")
    start_on_tor(bob, bob.tor)
    wait_for(lambda: delivered(alice, "are you there?"), 120, "delivery after bob returns")
    assert received(bob, "are you there?")


def test_tor_restart_republishes_and_messages_flow(
    tor_network: TestNet, tmp_path: Path, users: list[User]
) -> None:
    alice, bob = alice_and_bob_on_tor(tor_network, tmp_path, users)
    alice.cli("send", "bob", "before")
    wait_for(lambda: delivered(alice, "before"), 90, "first message delivered")
    watcher = ControlClient(alice.home / "control.sock", timeout=120)
    watcher.call("subscribe")
    tor_network.restart_client("client1")  # kill -9 alice's tor and start it again
    wait_for(
        lambda: alice.status()["network"]["state"] != "reachable",
        30,
        "alice to notice her tor died",
    )
    wait_for(lambda: alice.status()["network"]["reachable"], 120, "alice's onion back")
    # Subscribers (the UI) saw it happen as events.
    states = []
    for event in watcher.events():
        if event.get("event") == "network":
            states.append(event["state"])
            if event["state"] == "reachable":
                break
    watcher.close()
    assert "lost" in states and states[-1] == "reachable"
    alice.cli("send", "bob", "after")
    bob.cli("send", "alice", "after, from bob")
    wait_for(lambda: delivered(alice, "after"), 120, "delivery after tor restart")
    wait_for(lambda: delivered(bob, "after, from bob"), 120, "delivery to alice after restart")
    assert alice.daemon is not None and alice.daemon.poll() is None


def test_cover_traffic_over_onion_services(
    tor_network: TestNet, tmp_path: Path, users: list[User]
) -> None:
    tor1, tor2 = client_tor(tor_network, "client1"), client_tor(tor_network, "client2")
    alice, bob = (
        tor_user("alice", tmp_path / "alice", tor1),
        tor_user("bob", tmp_path / "bob", tor2),
    )
    users.extend([alice, bob])
    for user in (alice, bob):
        start_on_tor(user, user.tor, "--cover", "high")
    befriend(alice, bob)
    alice.cli("send", "bob", "hidden in the stream")
    wait_for(lambda: delivered(alice, "hidden in the stream"), 90, "delivery under cover")
    # Loop cells travel through tor to alice's own onion service and back.
    wait_for(lambda: alice.status()["cover"]["loop_returned"] >= 2, 90, "loop cells back")
    cover = alice.status()["cover"]
    assert cover["sent_cells"]["drop"] > 0 and cover["loop_link"]
