"""Users whose daemons run on the private Tor network (one client tor per user)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from integration.users import User, wait_for
from onionmsg.testnet import TestNet, TorInstance


def tor_user(name: str, home: Path, tor: TorInstance) -> User:
    user = User(name, home)
    user.init("--no-passphrase")
    user.tor = tor
    return user


def start_on_tor(
    user: User, tor: TorInstance, *extra: str, launcher: Sequence[str] = ("onionmsg",)
) -> None:
    control = f"tcp:127.0.0.1:{tor.control_port}"
    user.start_daemon("--transport", "tor", "--tor-control", control, *extra, launcher=launcher)
    wait_for(
        lambda: user.status()["network"]["reachable"], 60, f"{user.name}'s onion to be reachable"
    )


def client_tor(tor_network: TestNet, name: str) -> TorInstance:
    """The network's client tor called ``name``, added if it does not exist yet."""
    for instance in tor_network.instances():
        if instance.name == name:
            return instance
    return tor_network.add_client(name)


def befriend(a: User, b: User) -> None:
    a.cli("contacts", "add", b.address, "--name", b.name)
    b.cli("contacts", "add", a.address, "--name", a.name)


def delivered(user: User, text: str) -> bool:
    return any(m["text"] == text and m["status"] == "delivered" for m in user.messages())


def received(user: User, text: str) -> bool:
    return any(m["text"] == text and m["direction"] == "in" for m in user.messages())
