"""A laptop lid closed and opened again (checklist item 25, scaled down to run in CI): the
user's daemon and its tor are frozen with SIGSTOP, a contact writes meanwhile, and after
SIGCONT both directions work again without a restart."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from integration.tor_users import befriend, client_tor, delivered, received, start_on_tor, tor_user
from integration.users import User, wait_for
from onionmsg.testnet import TestNet

FROZEN = 60.0  # seconds; the checklist asks for 30 minutes, which CI cannot afford


def test_contacts_reach_a_user_again_after_a_suspend(
    tor_network: TestNet, tmp_path: Path, users: list[User]
) -> None:
    alice = tor_user("alice", tmp_path / "alice", client_tor(tor_network, "client1"))
    bob = tor_user("bob", tmp_path / "bob", client_tor(tor_network, "client2"))
    users.extend([alice, bob])
    for user in (alice, bob):
        start_on_tor(user, user.tor)
    befriend(alice, bob)
    wait_for(lambda: alice.contacts()[0]["online"], 90, "alice and bob linked")
    assert alice.daemon is not None
    frozen = [alice.daemon.pid, alice.tor.pid]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        bob.cli("send", "alice", "written while you slept")
        time.sleep(FROZEN)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    wait_for(lambda: received(alice, "written while you slept"), 300, "bob's message")
    alice.cli("send", "bob", "awake again")
    wait_for(lambda: delivered(alice, "awake again"), 300, "alice's reply")
    print(f"both directions worked {time.monotonic() - resumed:.1f} s after the resume")
