"""A hostile contact over the private Tor network: the same refusals as over tcp
(integration/test_hostile.py), through tor's SOCKS port to the daemon's onion service."""

from __future__ import annotations

import time
from pathlib import Path

from integration.hostile_peer import HostilePeer, Sender, identity_that_opens_sessions_with
from integration.test_hostile import CAP_ABUSES, PATIENCE, over_the_cap
from integration.test_testnet import socks5_connect
from integration.tor_users import client_tor, start_on_tor, tor_user
from integration.users import User
from onionmsg.crypto.identity import Identity
from onionmsg.session.link import PARTIAL_CELL_TIMEOUT
from onionmsg.testnet import TestNet
from onionmsg.wire.cells import CELL_SIZE
from onionmsg.wire.messages import Ack, Hello


def test_a_hostile_contact_over_onion_services(
    tor_network: TestNet, tmp_path: Path, users: list[User]
) -> None:
    alice = tor_user("alice", tmp_path / "alice", client_tor(tor_network, "client1"))
    users.append(alice)
    start_on_tor(alice, alice.tor)
    mallory: Identity = identity_that_opens_sessions_with(alice.address)
    alice.cli("contacts", "add", mallory.onion_address, "--name", "mallory")
    socks = client_tor(tor_network, "client2").socks_port
    assert socks is not None

    def connect() -> HostilePeer:
        sock = socks5_connect(socks, f"{alice.address}.onion", 80, timeout=60)
        peer = HostilePeer(mallory, alice.address, sock)
        peer.handshake(timeout=60)
        peer.wait_for(Hello, timeout=60)
        peer.send(Hello())
        return peer

    def stored() -> list[str]:
        return [m["text"] for m in alice.messages() if m["contact"] == "mallory"]

    sender = Sender(mallory, alice.address)
    first = sender.envelope("over tor")
    peer = connect()
    peer.send(first)
    peer.wait_for(Ack, timeout=60)
    peer.close()
    # A length past the cap: the link closes; a replayed envelope: acknowledged, not stored.
    peer = connect()
    over_the_cap(peer, CAP_ABUSES[0])
    assert peer.closed_by_daemon(PATIENCE)
    peer = connect()
    peer.send(first)
    peer.wait_for(Ack, timeout=60)
    assert stored() == ["over tor"]
    # Half a cell, then silence: dropped after PARTIAL_CELL_TIMEOUT, not before.
    peer.send_raw(peer.cell(Hello())[: CELL_SIZE // 2])
    started = time.monotonic()
    assert not peer.closed_by_daemon(PARTIAL_CELL_TIMEOUT - 5)
    assert peer.closed_by_daemon(PARTIAL_CELL_TIMEOUT + PATIENCE - (time.monotonic() - started))
    assert alice.daemon is not None and alice.daemon.poll() is None
    peer = connect()
    peer.send(sender.envelope("still welcome"))
    peer.wait_for(Ack, timeout=60)
    assert stored() == ["over tor", "still welcome"]
