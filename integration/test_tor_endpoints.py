"""TorTransport on the private Tor network: endpoint onions with v3 client authorisation,
invisible mode, proof of work on the identity onion, and all of it again after tor restarts.

The transports are driven directly from pytest-twisted (no daemon).  Each test uses its own
client tors (``svc*`` for the service, ``cli*`` for the contact) so restarting one never
disturbs another test; client1 is the stranger's tor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest_twisted
import stem
from stem.control import Controller
from stem.descriptor.hidden_service import HiddenServiceDescriptorV3
from twisted.internet import reactor
from twisted.internet.endpoints import connectProtocol
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from integration.test_testnet import RETRY_SOCKS_REPLIES, SocksError, socks5_connect
from integration.tor_users import client_tor
from onionmsg.crypto.endpoint import ClientAuthKey, EndpointKey
from onionmsg.crypto.identity import Identity
from onionmsg.session.link import Link, LinkEstablished, LinkEvent
from onionmsg.testnet import TestNet, TorInstance
from onionmsg.transport.stream import LinkProtocol
from onionmsg.transport.tor import TorOptions, TorTransport

SOCKS_MISSING_CLIENT_AUTH = 0xF4  # tor's ExtendedErrors: "onion service missing client auth"


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await sleep(0.1)


class Links:
    """Links that reached LinkEstablished, by the remote identity's address."""

    def __init__(self) -> None:
        self.established: list[str] = []
        self.protocols: list[LinkProtocol] = []

    def on_events(self, protocol: LinkProtocol, events: list[LinkEvent]) -> None:
        for event in events:
            if isinstance(event, LinkEstablished):
                self.established.append(event.remote_address)

    def responder(self, identity: Identity) -> Factory:
        def build() -> LinkProtocol:
            protocol = LinkProtocol(Link.responder(identity, reactor), self.on_events)
            self.protocols.append(protocol)
            return protocol

        return Factory.forProtocol(build)

    def close(self) -> None:
        for protocol in self.protocols:
            if protocol.transport is not None:
                protocol.transport.loseConnection()


async def start(tor: TorInstance, identity: Identity, links: Links, home: Path) -> TorTransport:
    options = TorOptions(data_dir=home, control=f"tcp:127.0.0.1:{tor.control_port}")
    transport = TorTransport(reactor, identity, options)
    await transport.listen(links.responder(identity))
    return transport


async def dial(
    transport: TorTransport, onion: str, me: Identity, them: Identity, links: Links
) -> LinkProtocol:
    """A link to ``them`` through ``onion``; retried while a fresh descriptor propagates."""
    deadline = time.monotonic() + 60
    while True:
        endpoint = transport.endpoint_for(onion)
        if endpoint is not None:
            link = Link.initiator(me, them.public_key, reactor)
            protocol = LinkProtocol(link, links.on_events)
            try:
                await connectProtocol(endpoint, protocol)
                links.protocols.append(protocol)
                return protocol
            except Exception:
                if time.monotonic() > deadline:
                    raise
        await sleep(0.5)


async def socks_reply(tor: TorInstance, onion: str) -> int:
    """0 if a stream to ``onion`` opens through ``tor``, else tor's SOCKS error; errors that
    only mean "the descriptor is still propagating" are retried for a while."""
    assert tor.socks_port is not None
    deadline = time.monotonic() + 60
    while True:
        try:
            sock = await deferToThread(socks5_connect, tor.socks_port, onion + ".onion", 80)
        except SocksError as error:
            if error.reply not in RETRY_SOCKS_REPLIES or time.monotonic() > deadline:
                return error.reply
            await sleep(0.25)
            continue
        sock.close()
        return 0


def service_descriptor(tor: TorInstance, onion: str) -> str | None:
    """The descriptor ``tor`` publishes for ``onion`` as a service, or None if it has none."""
    with Controller.from_port(address="127.0.0.1", port=tor.control_port) as controller:
        controller.authenticate()
        try:
            return str(controller.get_info(f"hs/service/desc/id/{onion}"))
        except stem.ControllerError:
            return None


def published_descriptor_lines(tor: TorInstance, onion: str) -> list[str]:
    """The decrypted inner layer of the descriptor ``tor`` published for ``onion``."""
    text = service_descriptor(tor, onion)
    assert text is not None, f"{tor.name} publishes no descriptor for {onion}"
    inner = HiddenServiceDescriptorV3.from_str(text).decrypt(onion)
    return str(inner).splitlines()


def client_auth_onions(tor: TorInstance) -> set[str]:
    """Onions ``tor`` holds a client-auth key for (ONION_CLIENT_AUTH_VIEW)."""
    with Controller.from_port(address="127.0.0.1", port=tor.control_port) as controller:
        controller.authenticate()
        reply = controller.msg("ONION_CLIENT_AUTH_VIEW")
    return {line.split()[1] for _, _, line in reply.content() if line.startswith("CLIENT ")}


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_endpoint_needs_the_client_key_and_invisible_mode_keeps_it(
    tor_network: TestNet, tmp_path: Path
) -> None:
    service_tor = client_tor(tor_network, "svc1")
    contact_tor = client_tor(tor_network, "cli1")
    stranger_tor = client_tor(tor_network, "client1")
    alice, bob = Identity.generate(), Identity.generate()
    alice_links, bob_links = Links(), Links()
    alice_tor = await start(service_tor, alice, alice_links, tmp_path / "alice")
    bob_tor = await start(contact_tor, bob, bob_links, tmp_path / "bob")
    try:
        endpoint_key, bob_auth = EndpointKey.generate(), ClientAuthKey.generate()
        endpoint = await alice_tor.add_endpoint(endpoint_key, bob_auth.public)
        assert endpoint == endpoint_key.onion_address != alice.onion_address
        assert await alice_tor.add_endpoint(endpoint_key, bob_auth.public) == endpoint
        await until(lambda: alice_tor.status()["endpoints_uploaded"] == 1, 60, "endpoint upload")
        assert alice_tor.status()["endpoints"] == 1

        # A stranger reaches the identity onion, but not the endpoint: no key, no descriptor.
        assert await socks_reply(stranger_tor, alice.onion_address) == 0
        assert await socks_reply(stranger_tor, endpoint) == SOCKS_MISSING_CLIENT_AUTH

        # The contact, holding the key, completes a link to alice through the endpoint.
        await bob_tor.add_client_auth(endpoint, bob_auth.private)
        assert bob_tor.status()["client_auth"] == 1
        await dial(bob_tor, endpoint, bob, alice, bob_links)
        await until(lambda: bob.onion_address in alice_links.established, 30, "alice's link")
        assert alice.onion_address in bob_links.established

        # Invisible: the identity onion is gone, the endpoint still carries new links.
        await alice_tor.set_identity_published(False)
        status = alice_tor.status()
        assert status["identity_published"] is False and status["state"] == "reachable"
        assert await socks_reply(stranger_tor, alice.onion_address) != 0
        bob_links.established.clear()
        alice_links.established.clear()
        await dial(bob_tor, endpoint, bob, alice, bob_links)
        await until(lambda: bob.onion_address in alice_links.established, 30, "link, invisible")

        # Without endpoints an invisible user has nothing published.
        await alice_tor.remove_endpoint(endpoint)
        assert alice_tor.status()["state"] == "hidden"
        assert alice_tor.status()["endpoints"] == 0
        await bob_tor.remove_client_auth(endpoint)
        assert endpoint not in client_auth_onions(contact_tor)
    finally:
        alice_links.close()
        bob_links.close()
        await alice_tor.stop()
        await bob_tor.stop()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_identity_onion_advertises_proof_of_work(
    tor_network: TestNet, tmp_path: Path
) -> None:
    service_tor = client_tor(tor_network, "svc1")
    alice = Identity.generate()
    links = Links()
    alice_tor = await start(service_tor, alice, links, tmp_path / "alice")
    try:
        await until(lambda: alice_tor.status()["reachable"], 60, "the identity onion's upload")
        assert alice_tor.status()["pow"] == "on"
        pow_lines = [
            line
            for line in published_descriptor_lines(service_tor, alice.onion_address)
            if line.startswith("pow-params ")
        ]
        assert len(pow_lines) == 1, pow_lines
        _, pow_type, _seed, suggested_effort, _expiration = pow_lines[0].split()
        assert pow_type == "v1" and int(suggested_effort) >= 0
    finally:
        await alice_tor.stop()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_tor_restarts_republish_endpoints_and_client_auth(
    tor_network: TestNet, tmp_path: Path
) -> None:
    service_tor = client_tor(tor_network, "svc2")
    contact_tor = client_tor(tor_network, "cli2")
    alice, bob = Identity.generate(), Identity.generate()
    alice_links, bob_links = Links(), Links()
    alice_tor = await start(service_tor, alice, alice_links, tmp_path / "alice")
    bob_tor = await start(contact_tor, bob, bob_links, tmp_path / "bob")
    alice_states: list[str] = []
    alice_tor.add_status_listener(lambda status: alice_states.append(status["state"]))
    try:
        endpoint_key, bob_auth = EndpointKey.generate(), ClientAuthKey.generate()
        endpoint = await alice_tor.add_endpoint(endpoint_key, bob_auth.public)
        await alice_tor.set_identity_published(False)
        await bob_tor.add_client_auth(endpoint, bob_auth.private)
        await until(lambda: alice_tor.status()["endpoints_uploaded"] == 1, 60, "endpoint upload")

        # The service's tor dies (SIGKILL) and comes back: the endpoint is published again,
        # and the identity stays withdrawn.
        await deferToThread(tor_network.restart_client, "svc2")
        await until(lambda: "lost" in alice_states, 30, "alice to notice her tor died")
        await until(lambda: alice_tor.status()["endpoints_uploaded"] == 1, 60, "re-upload")
        status = alice_tor.status()
        assert status["state"] == "reachable" and status["identity_published"] is False
        assert service_descriptor(service_tor, endpoint) is not None
        assert service_descriptor(service_tor, alice.onion_address) is None

        # The contact's tor dies and comes back: it gets the client-auth key again.
        await deferToThread(tor_network.restart_client, "cli2")
        await until(lambda: endpoint in client_auth_onions(contact_tor), 30, "the key again")
        await dial(bob_tor, endpoint, bob, alice, bob_links)
        await until(lambda: bob.onion_address in alice_links.established, 30, "alice's link")
    finally:
        alice_links.close()
        bob_links.close()
        await alice_tor.stop()
        await bob_tor.stop()
    # Stopping takes the client-auth key back out of the contact's tor.
    assert endpoint not in client_auth_onions(contact_tor)
