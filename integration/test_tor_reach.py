"""Issue 7 end to end on the private Tor network: a request, accepted; both sides move to
private endpoint onions; the user goes invisible and the contact still gets through, while
a stranger cannot even knock."""

from __future__ import annotations

import json
from pathlib import Path

from integration.tor_users import client_tor, delivered, start_on_tor, tor_user
from integration.users import User, wait_for
from onionmsg.testnet import TestNet


def requests(user: User) -> list[dict[str, object]]:
    return [json.loads(line) for line in user.cli("requests", "--json").stdout.splitlines()]


def test_accept_go_invisible_and_still_chat_over_an_endpoint_onion(
    tor_network: TestNet, tmp_path: Path, users: list[User]
) -> None:
    alice = tor_user("alice", tmp_path / "alice", client_tor(tor_network, "client1"))
    bob = tor_user("bob", tmp_path / "bob", client_tor(tor_network, "client2"))
    mallory = tor_user("mallory", tmp_path / "mallory", client_tor(tor_network, "client3"))
    users.extend([alice, bob, mallory])
    for user in (alice, bob, mallory):
        start_on_tor(user, user.tor)
    assert alice.status()["network"]["pow"] == "on"  # the identity onion's PoW defence

    bob.cli("contacts", "add", alice.address, "--name", "alice", "--message", "it's bob")
    (request,) = wait_for(lambda: requests(alice), 90, "bob's request")
    assert request["message"] == "it's bob" and alice.messages() == []
    alice.cli("requests", "accept", str(request["id"]), "--name", "bob")

    def endpoints_ready(user: User) -> bool:
        network = user.status()["network"]
        return bool(network["endpoints_uploaded"] == 1 and network["client_auth"] == 1)

    wait_for(lambda: endpoints_ready(alice) and endpoints_ready(bob), 120, "endpoint onions")

    alice.cli("settings", "invisible", "on")
    wait_for(lambda: not alice.status()["network"]["identity_published"], 30, "invisible")
    assert "withdrawn (invisible)" in alice.cli("status").stdout
    # Bob's daemon restarts: his new link can only go to alice's endpoint onion.
    bob.stop_daemon()
    start_on_tor(bob, bob.tor)
    bob.cli("send", "alice", "found you anyway")
    wait_for(lambda: delivered(bob, "found you anyway"), 120, "delivery over the endpoint")
    alice.cli("send", "bob", "and back")
    wait_for(lambda: delivered(alice, "and back"), 120, "alice's reply")

    # A stranger who knows alice's address cannot reach her while she is invisible.
    mallory.cli("contacts", "add", alice.address, "--name", "alice", "--message", "hi!")
    wait_for(lambda: mallory.contacts()[0]["connection"] == "waiting", 90, "mallory's dial to fail")
    assert requests(alice) == []
