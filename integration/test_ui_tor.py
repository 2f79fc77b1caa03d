"""The console UI on the private Tor network: two users chat over onion services."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.test_ui import Tmux
from integration.tor_users import befriend, client_tor, start_on_tor, tor_user
from integration.users import User, wait_for
from onionmsg.testnet import TestNet


@pytest.fixture
def tmux_server(tmp_path: Path) -> Iterator[Tmux]:
    server = Tmux(tmp_path)
    try:
        yield server
    finally:
        server.kill()


def test_chat_over_onion_services_in_the_ui(
    tor_network: TestNet, tmp_path: Path, users: list[User], tmux_server: Tmux
) -> None:
    alice = tor_user("alice", tmp_path / "alice", client_tor(tor_network, "client1"))
    bob = tor_user("bob", tmp_path / "bob", client_tor(tor_network, "client2"))
    users.extend([alice, bob])
    for user in (alice, bob):
        start_on_tor(user, user.tor, "--cover", "high")
    befriend(alice, bob)
    tmux_server.start_ui("alice", alice)
    tmux_server.start_ui("bob", bob)
    # Tor's state is in the status bar, and bob comes online over his onion service.
    screen = tmux_server.wait("alice", "reachable", 60)
    assert "high" in screen  # the cover profile the daemon runs
    tmux_server.wait("alice", "● bob", 90)
    tmux_server.keys("alice", "Enter")
    tmux_server.keys("alice", "over onions, with cover", literal=True)
    tmux_server.keys("alice", "Enter")
    screen = tmux_server.wait("alice", "delivered", 90)
    assert re.search(r"me: over onions, with cover +delivered", screen), screen
    assert "alice: over onions, with cover" in tmux_server.wait("bob", "with cover", 60)
    wait_for(lambda: (alice.home / "ui.stderr").read_text() == "", 5, "a quiet UI")
