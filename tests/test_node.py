"""Nodes wired together in memory (iosim) with a fake clock: delivery, dedup, duplicate links."""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.test.iosim import FakeTransport, IOPump, connect
from zope.interface import implementer

import onionmsg.node as node_module
from onionmsg.cli import describe_status
from onionmsg.contacts.contact_string import make_contact_string
from onionmsg.contacts.requests import Action, RequestError
from onionmsg.crypto.endpoint import ClientAuthKey, EndpointKey
from onionmsg.crypto.identity import Identity
from onionmsg.delivery.throttle import TokenBucket
from onionmsg.mix.scheduler import PROFILES, Profile
from onionmsg.node import Node
from onionmsg.store.db import Contact, Store
from onionmsg.transport.base import Transport
from onionmsg.transport.multi import MultiTransport, combine
from onionmsg.transport.sam import i2p_b64encode
from onionmsg.transport.stream import LinkProtocol
from onionmsg.wire.messages import Envelope, Message

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that completes without waiting on the reactor."""
    results: list[T] = []
    Deferred.fromCoroutine(coroutine).addCallback(results.append)
    assert results, "coroutine did not complete synchronously"
    return results[0]


class MemoryNetwork:
    def __init__(self) -> None:
        self.listeners: dict[str, IProtocolFactory] = {}
        self.authorized: dict[str, bytes] = {}  # endpoint onion -> client-auth public key
        self.pumps: list[IOPump] = []

    def pump(self) -> None:
        for _ in range(50):
            moved = False
            for pump in list(self.pumps):
                moved = pump.pump() or moved
            if not moved:
                return
        raise AssertionError("the network never went quiet")


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    def __init__(self, network: MemoryNetwork, address: str) -> None:
        self._network = network
        self._address = address

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        server_factory = self._network.listeners.get(self._address)
        if server_factory is None:
            return fail(ConnectionRefusedError())
        client = factory.buildProtocol(None)  # type: ignore[arg-type]
        server = server_factory.buildProtocol(None)  # type: ignore[arg-type]
        assert client is not None and server is not None
        pump = connect(
            server,
            FakeTransport(server, isServer=True),
            client,
            FakeTransport(client, isServer=False),
            greet=False,
        )
        self._network.pumps.append(pump)
        return succeed(client)


class MemoryTransport:
    name = "memory"

    def __init__(self, network: MemoryNetwork, address: str) -> None:
        self._network = network
        self._address = address

    async def listen(self, factory: IProtocolFactory) -> str:
        self._network.listeners[self._address] = factory
        return "memory"

    def client_endpoint(self, contact: Contact) -> IStreamClientEndpoint | None:
        return MemoryEndpoint(self._network, contact.address)

    async def stop(self) -> None:
        self._network.listeners.pop(self._address, None)

    def status(self) -> dict[str, Any]:
        return {}

    def add_status_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        pass


class OnionMemoryTransport(MemoryTransport):
    """MemoryTransport with Tor's extras: endpoint onions that only a dialler holding the
    authorised X25519 key reaches, and a withdrawable identity onion."""

    def __init__(self, network: MemoryNetwork, address: str) -> None:
        super().__init__(network, address)
        self.client_keys: dict[str, bytes] = {}
        self.endpoints: set[str] = set()
        self._factory: IProtocolFactory | None = None
        self.down = False  # tor is gone: nothing to dial with (TorTransport returns None)

    def client_endpoint(self, contact: Contact) -> IStreamClientEndpoint | None:
        return None if self.down else super().client_endpoint(contact)

    async def listen(self, factory: IProtocolFactory) -> str:
        self._factory = factory
        return await super().listen(factory)

    async def add_endpoint(self, key: EndpointKey, authorized_client_x25519_pub: bytes) -> str:
        assert self._factory is not None
        self._network.listeners[key.onion_address] = self._factory
        self._network.authorized[key.onion_address] = authorized_client_x25519_pub
        self.endpoints.add(key.onion_address)
        return key.onion_address

    async def remove_endpoint(self, onion: str) -> None:
        self._network.listeners.pop(onion, None)
        self.endpoints.discard(onion)

    async def add_client_auth(self, onion: str, x25519_private: bytes) -> None:
        self.client_keys[onion] = x25519_private

    async def remove_client_auth(self, onion: str) -> None:
        self.client_keys.pop(onion, None)

    async def set_identity_published(self, published: bool) -> None:
        assert self._factory is not None
        if published:
            self._network.listeners[self._address] = self._factory
        else:
            self._network.listeners.pop(self._address, None)

    def contact_endpoint(
        self, contact: Contact, endpoint_onion: str
    ) -> IStreamClientEndpoint | None:
        return self.endpoint_for(endpoint_onion)

    def endpoint_for(self, onion: str) -> IStreamClientEndpoint | None:
        if self.down:
            return None
        key = self.client_keys.get(onion)
        if key is None or ClientAuthKey(key).public != self._network.authorized.get(onion):
            return MemoryEndpoint(self._network, "no descriptor for us")  # tor: SOCKS 0xF4
        return MemoryEndpoint(self._network, onion)


class I2PMemoryTransport(MemoryTransport):
    """An I2P stand-in: reaches a contact only by the destination its contact string gave."""

    name = "i2p"

    def __init__(self, network: MemoryNetwork, address: str) -> None:
        super().__init__(network, "i2p:" + memory_destination(address))

    def client_endpoint(self, contact: Contact) -> IStreamClientEndpoint | None:
        if contact.i2p_destination is None:
            return None
        return MemoryEndpoint(self._network, "i2p:" + contact.i2p_destination)


def memory_destination(onion_address: str) -> str:
    """A well-formed I2P destination for a test identity (key bytes from its address)."""
    key = onion_address.encode("ascii")[:32] * 8
    return i2p_b64encode(key + bytes(128) + b"\x05\x00\x04\x00\x07\x00\x00")


def tor_and_i2p(network: MemoryNetwork, address: str) -> Transport:
    tor = OnionMemoryTransport(network, address)
    tor.name = "tor"
    return combine(Clock(), [tor, I2PMemoryTransport(network, address)])


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = Clock()
        self.network = MemoryNetwork()
        self.events: dict[str, list[dict[str, Any]]] = {}

    def node(
        self,
        name: str,
        seed: int,
        cover: Profile = PROFILES["off"],
        transport: Callable[[MemoryNetwork, str], Transport] | None = None,
    ) -> Node:
        identity = Identity(bytes([seed]) * 32)
        store = Store.create(self.tmp_path / f"{name}.db", bytes(32), identity)
        node = Node(
            store,
            (transport or MemoryTransport)(self.network, identity.onion_address),
            self.clock,
            wall_clock_ms=lambda: int(self.clock.seconds() * 1000),
            cover=cover,
            cover_rngs=(random.Random(seed), random.Random(seed + 100)),
        )
        self.events[name] = []
        node.subscribe(self.events[name].append)
        run(node.start())
        return node

    def settle(self, seconds: float = 5.0) -> None:
        for _ in range(int(seconds * 10)):
            self.network.pump()
            self.clock.advance(0.1)
        self.network.pump()


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def texts(node: Node, direction: str) -> list[tuple[str, str]]:
    return [(m["text"], m["status"]) for m in node.messages() if m["direction"] == direction]


def test_message_is_delivered_and_acknowledged(world: World) -> None:
    alice, bob = world.node("alice", 1), world.node("bob", 2)
    alice.add_contact(bob.identity.onion_address, "bob", None)
    bob.add_contact(alice.identity.onion_address, "alice", None)
    world.settle()
    assert [c["online"] for c in alice.contacts()] == [True]
    sent = alice.send("bob", "hello")
    assert sent["status"] == "sent"  # the link is up: it leaves at once
    world.settle()
    assert texts(alice, "out") == [("hello", "delivered")]
    assert texts(bob, "in") == [("hello", "received")]
    statuses = [e["status"] for e in world.events["alice"] if e.get("event") == "message"]
    assert statuses == ["sent", "delivered"]


def test_simultaneous_dials_leave_one_link_on_both_sides(world: World) -> None:
    alice, bob = world.node("alice", 1), world.node("bob", 2)
    # Both know each other before either dials, so both dial at once.
    alice.add_contact(bob.identity.onion_address, "bob", None)
    bob.add_contact(alice.identity.onion_address, "alice", None)
    world.settle()
    open_pumps = [p for p in world.network.pumps if not p.clientIO.disconnected]
    assert len(open_pumps) == 1
    alice.send("bob", "one")
    bob.send("alice", "two")
    world.settle()
    assert texts(bob, "in") == [("one", "received")]
    assert texts(alice, "in") == [("two", "received")]


def test_lost_ack_means_redelivery_but_no_duplicate(world: World) -> None:
    alice, bob = world.node("alice", 1), world.node("bob", 2)
    alice.add_contact(bob.identity.onion_address, "bob", None)
    bob.add_contact(alice.identity.onion_address, "alice", None)
    world.settle()
    (pump,) = [p for p in world.network.pumps if not p.clientIO.disconnected]
    alice.send("bob", "once")
    pump.pump()  # alice's cells reach bob, bob stores and writes his Ack ...
    pump.clientIO.getOutBuffer()  # ... which is lost with the link
    pump.serverIO.getOutBuffer()
    assert texts(bob, "in") == [("once", "received")]
    pump.clientIO.loseConnection()
    pump.serverIO.loseConnection()
    world.settle(10)
    assert texts(alice, "out") == [("once", "delivered")]
    assert texts(bob, "in") == [("once", "received")]


@pytest.mark.parametrize(("alice_seed", "bob_seed"), [(1, 2), (2, 1)])
def test_messages_wait_for_an_offline_contact(world: World, alice_seed: int, bob_seed: int) -> None:
    # Run once with alice as the pair's ratchet initiator and once as the responder, whose
    # messages must wait for bob's SessionStart before they can be encrypted.
    alice = world.node("alice", alice_seed)
    bob_identity = Identity(bytes([bob_seed]) * 32)
    alice.add_contact(bob_identity.onion_address, "bob", None)
    for i in range(3):
        alice.send("bob", f"m{i}")
    world.settle(30)
    assert {status for _, status in texts(alice, "out")} == {"queued"}
    world.events["alice"].clear()
    bob = world.node("bob", bob_seed)
    bob.add_contact(alice.identity.onion_address, "alice", None)
    world.settle(70)  # alice's backoff may have reached a minute
    assert texts(bob, "in") == [(f"m{i}", "received") for i in range(3)]
    assert {status for _, status in texts(alice, "out")} == {"delivered"}
    statuses = [e["status"] for e in world.events["alice"] if e.get("event") == "message"]
    assert statuses == ["sent"] * 3 + ["delivered"] * 3
    # Both now hold the same session and keep talking both ways.
    bob.send("alice", "reply")
    alice.send("bob", "and again")
    world.settle()
    assert texts(alice, "in") == [("reply", "received")]
    assert texts(bob, "in")[-1] == ("and again", "received")


def test_a_stranger_becomes_a_pending_request_never_a_conversation(world: World) -> None:
    alice, mallory = world.node("alice", 1), world.node("mallory", 3)
    mallory.add_contact(alice.identity.onion_address, "alice", None, "hi, it's \x1b[31mM")
    mallory.send("alice", "let me in")
    world.settle()
    assert alice.messages() == [] and alice.contacts() == []
    (request,) = alice.requests()
    assert request["address"] == mallory.identity.onion_address
    assert request["message"] == "hi, it's [31mM"
    assert request["state"] == "pending"
    (event,) = [e for e in world.events["alice"] if e["event"] == "request"]
    assert (event["id"], event["address"], event["message"]) == (
        request["id"],
        request["address"],
        request["message"],
    )
    # Mallory's message waits; the link was closed; nothing tells Mallory what alice did.
    assert texts(mallory, "out") in ([("let me in", "queued")], [("let me in", "sent")])
    assert mallory.contacts()[0]["accepted"] is False
    # Knocking again refreshes the one request, silently.
    world.settle(120)
    assert len(alice.requests()) == 1
    assert len([e for e in world.events["alice"] if e["event"] == "request"]) == 1


def test_accepting_a_request_starts_the_conversation(world: World) -> None:
    alice, bob = world.node("alice", 1), world.node("bob", 2)
    bob.add_contact(alice.identity.onion_address, "alice", None, "bob from the conference")
    bob.send("alice", "hello alice")
    world.settle()
    (request,) = alice.requests()
    contact = alice.answer_request(request["id"], Action.ACCEPT, name="bob")
    assert contact["accepted"] is True and contact["name"] == "bob"
    world.settle(130)  # bob's node redials within its backoff
    assert alice.requests() == []
    assert texts(alice, "in") == [("hello alice", "received")]
    assert texts(bob, "out") == [("hello alice", "delivered")]
    assert bob.contacts()[0]["accepted"] is True
    alice.send("bob", "welcome")
    world.settle()
    assert texts(bob, "in") == [("welcome", "received")]


def test_rejected_and_blocked_strangers_are_dropped_silently(world: World) -> None:
    alice, mallory, eve = world.node("alice", 1), world.node("mallory", 3), world.node("eve", 4)
    for stranger in (mallory, eve):
        stranger.add_contact(alice.identity.onion_address, "alice", None, "knock")
    world.settle()
    by_address = {r["address"]: r for r in alice.requests()}
    alice.answer_request(by_address[mallory.identity.onion_address]["id"], Action.REJECT)
    alice.answer_request(by_address[eve.identity.onion_address]["id"], Action.BLOCK)
    events_before = len(world.events["alice"])
    world.settle(600)  # both keep knocking
    assert alice.requests() == []
    assert len(world.events["alice"]) == events_before
    with pytest.raises(RequestError):
        alice.answer_request(by_address[eve.identity.onion_address]["id"], Action.ACCEPT)


def test_block_unknown_refuses_every_stranger_but_not_contacts(world: World) -> None:
    alice, bob, mallory = world.node("alice", 1), world.node("bob", 2), world.node("mallory", 3)
    alice.set_block_unknown(True)
    assert alice.status()["block_unknown"] is True
    alice.add_contact(bob.identity.onion_address, "bob", None)
    bob.add_contact(alice.identity.onion_address, "alice", None)
    mallory.add_contact(alice.identity.onion_address, "alice", None, "knock")
    bob.send("alice", "still here")
    world.settle(10)
    assert alice.requests() == []
    assert texts(alice, "in") == [("still here", "received")]


def test_a_blocked_contact_is_cut_off_until_unblocked(world: World) -> None:
    alice, bob = world.node("alice", 1), world.node("bob", 2)
    alice.add_contact(bob.identity.onion_address, "bob", None)
    bob.add_contact(alice.identity.onion_address, "alice", None)
    world.settle()
    assert alice.contacts()[0]["online"]
    snapshot = alice.block("bob")
    assert snapshot["blocked"] is True and snapshot["online"] is False
    bob.send("alice", "are you there?")
    world.settle(200)
    assert texts(alice, "in") == [] and alice.requests() == []
    assert alice.contacts()[0]["online"] is False
    alice.unblock("bob")
    world.settle(130)
    assert texts(alice, "in") == [("are you there?", "received")]


def test_pending_requests_are_bounded(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module, "MAX_PENDING", 3)
    monkeypatch.setattr(node_module, "request_gate", lambda clock: TokenBucket(clock, 99, 1.0))
    alice = world.node("alice", 1)
    strangers = [world.node(f"s{i}", 10 + i) for i in range(5)]
    for i, stranger in enumerate(strangers):
        stranger.add_contact(alice.identity.onion_address, "alice", None, f"note {i}")
        world.settle(1)
    kept = [r["message"] for r in alice.requests()]
    assert len(kept) == 3 and "note 4" in kept  # the oldest went (and knock again)


def test_expiring_messages_are_deleted_on_both_sides(world: World) -> None:
    alice, bob = world.node("alice", 1), world.node("bob", 2)
    alice.add_contact(bob.identity.onion_address, "bob", None)
    bob.add_contact(alice.identity.onion_address, "alice", None)
    world.settle()
    alice.send("bob", "kept")
    alice.set_expiry("bob", 60)
    alice.send("bob", "gone in a minute")
    world.settle(2)
    assert [t for t, _ in texts(bob, "in")] == ["kept", "gone in a minute"]
    assert bob.messages()[-1]["expires"] is not None
    world.settle(30)
    assert len(bob.messages()) == 2
    world.settle(40)
    assert [t for t, _ in texts(bob, "in")] == ["kept"]
    assert [t for t, _ in texts(alice, "out")] == ["kept"]
    deleted = [e for e in world.events["bob"] if e.get("event") == "deleted"]
    assert len(deleted) == 1


def test_durations() -> None:
    from onionmsg.cli import parse_duration

    assert parse_duration("off") == 0
    assert parse_duration("90") == 90
    assert parse_duration("10m") == 600
    assert parse_duration("7d") == 7 * 86400
    with pytest.raises(argparse.ArgumentTypeError, match="duration"):
        parse_duration("soon")


def test_unacknowledged_envelopes_are_resent_on_a_live_link(world: World) -> None:
    alice, bob = world.node("alice", 1), world.node("bob", 2)
    alice.add_contact(bob.identity.onion_address, "bob", None)
    bob.add_contact(alice.identity.onion_address, "alice", None)
    world.settle()
    original = bob._on_envelope
    dropped: list[bytes] = []

    def drop_once(peer: Any, protocol: Any, envelope: Any) -> None:
        if not dropped:
            dropped.append(envelope.message_id)  # as if bob could not open it
            return
        original(peer, protocol, envelope)

    bob._on_envelope = drop_once  # type: ignore[method-assign]
    alice.send("bob", "eventually")
    world.settle(5)
    assert dropped and texts(bob, "in") == []
    assert texts(alice, "out") == [("eventually", "sent")]
    world.settle(20)  # the first retry falls due after ~15 s, on the same link
    assert texts(bob, "in") == [("eventually", "received")]
    assert texts(alice, "out") == [("eventually", "delivered")]
    assert len([p for p in world.network.pumps if not p.clientIO.disconnected]) == 1


def test_with_cover_traffic_cells_leave_only_in_slots(world: World) -> None:
    ticks = Profile("ticks", payload_rate=2.0, loop_rate=0.0, constant=True)
    alice, bob = world.node("alice", 1, ticks), world.node("bob", 2, ticks)
    alice.add_contact(bob.identity.onion_address, "bob", None)
    bob.add_contact(alice.identity.onion_address, "alice", None)
    world.settle(3)
    (pump,) = [p for p in world.network.pumps if not p.clientIO.disconnected]
    client_is_alice = pump.client.link.remote_address == bob.identity.onion_address
    alice_io = pump.clientIO if client_is_alice else pump.serverIO
    assert isinstance(alice.status()["cover"]["bytes_per_day"], int)
    world.network.pump()
    alice.send("bob", "in a slot")
    assert alice_io.stream == []  # nothing written outside the schedule
    assert alice.status()["cover"]["queued_cells"] == 1
    world.settle(2)
    assert texts(bob, "in") == [("in a slot", "received")]
    assert texts(alice, "out") == [("in a slot", "delivered")]
    sent = alice.status()["cover"]["sent_cells"]
    assert sent["real"] >= 1 and sent["drop"] >= 4  # idle slots carried drop cells
    alice.set_cover(PROFILES["off"])
    alice.send("bob", "at once")
    assert alice_io.stream != []


def test_only_the_initiator_queues_a_session_start(world: World) -> None:
    from onionmsg.crypto.ratchet import is_initiator

    one, two = world.node("one", 1), world.node("two", 2)
    one.add_contact(two.identity.onion_address, "two", None)
    two.add_contact(one.identity.onion_address, "one", None)
    for node, other in ((one, two), (two, one)):
        contact = node._store.find_contact(other.identity.onion_address)
        assert contact is not None
        queued = len(node._store.outbox(contact.id))
        assert queued == (
            1 if is_initiator(node.identity.public_key, other.identity.public_key) else 0
        )
    world.settle()
    for node in (one, two):
        contact = node._store.contacts()[0]
        assert node._store.outbox(contact.id) == []  # the SessionStart was acknowledged
        assert node._store.ratchet_state(contact.id) is not None  # both hold the session


def test_loop_cells_travel_to_our_own_address_and_come_back(world: World) -> None:
    loops = Profile("loops", payload_rate=0.0, loop_rate=2.0)
    alice = world.node("alice", 1, loops)
    world.settle(10)
    cover = alice.status()["cover"]
    assert cover["loop_link"] is True
    assert cover["sent_cells"]["loop"] > 10
    # Every loop cell written came back (the in-memory network loses nothing).
    assert cover["loop_returned"] == cover["loop_written"] > 10
    assert alice.contacts() == []  # the loop link is not a contact
    alice.set_cover(PROFILES["off"])
    world.settle(2)
    assert alice.status()["cover"]["loop_link"] is False


def test_people_read_the_cover_profile_its_cost_and_wait_in_status(world: World) -> None:
    alice = world.node("alice", 1, PROFILES["standard"])
    text = describe_status(alice.status())
    assert "cover:     standard: 1 cell every 5 s, loop 1 cell every 60 s" in text
    assert "18.6 MB/day; mean extra wait 5 s" in text
    assert "queue:     0 cells" in text
    alice.set_cover(PROFILES["off"])
    assert "cover:     off: cells leave at once, no cover traffic" in describe_status(
        alice.status()
    )


def test_a_flooding_contact_is_throttled_and_nothing_is_lost(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "INBOUND_BURST", 10)
    monkeypatch.setattr(node_module, "INBOUND_PER_SECOND", 1)
    alice, bob = world.node("alice", 1), world.node("bob", 2)
    alice.add_contact(bob.identity.onion_address, "bob", None)
    bob.add_contact(alice.identity.onion_address, "alice", None)
    world.settle()
    for i in range(40):
        bob.send("alice", f"flood {i}")
    world.settle(1)
    assert len(texts(alice, "in")) <= 10 + 2  # the burst, then about one a second
    world.settle(900)  # the unacknowledged rest comes again, within the rate
    assert [t for t, _ in texts(alice, "in")] == [f"flood {i}" for i in range(40)]
    assert {s for _, s in texts(bob, "out")} == {"delivered"}


def test_rename_remove_and_search_through_the_control_api(world: World) -> None:
    from onionmsg.control.api import RequestError, _dispatch

    alice, bob = world.node("alice", 1), world.node("bob", 2)
    _dispatch(alice, "contacts.add", {"address": bob.identity.onion_address, "name": "bob"})
    bob.add_contact(alice.identity.onion_address, "alice", None)
    world.settle()
    alice.send("bob", "Meet at the Old Bridge")
    bob.send("alice", "the old bridge? OK")
    alice.send("bob", "unrelated")
    world.settle()
    renamed = _dispatch(alice, "contacts.rename", {"contact": "bob", "name": "Robert"})
    assert renamed["name"] == "Robert" and renamed["online"] is True
    assert world.events["alice"][-1] == {"event": "contact", **renamed}
    found = _dispatch(alice, "messages.search", {"query": "OLD BRIDGE"})
    assert [(m["contact"], m["text"]) for m in found] == [
        ("Robert", "Meet at the Old Bridge"),
        ("Robert", "the old bridge? OK"),
    ]
    newest = _dispatch(alice, "messages.search", {"query": "bridge", "limit": 1})
    assert [m["text"] for m in newest] == ["the old bridge? OK"]
    with pytest.raises(RequestError):
        _dispatch(alice, "messages.search", {"query": 5})
    removed = _dispatch(alice, "contacts.remove", {"contact": "Robert"})
    assert removed == {
        "event": "contact_removed",
        "name": "Robert",
        "address": bob.identity.onion_address,
    }
    assert world.events["alice"][-1] == removed
    assert alice.contacts() == [] and alice.messages() == []
    world.settle()
    # The link went with the contact, and bob's redials are refused.
    assert [c["online"] for c in bob.contacts()] == [False]
    assert alice.status()["online"] == 0


def test_contacts_move_to_private_endpoint_onions_and_survive_invisibility(world: World) -> None:
    alice = world.node("alice", 1, transport=OnionMemoryTransport)
    bob = world.node("bob", 2, transport=OnionMemoryTransport)
    mallory = world.node("mallory", 3, transport=OnionMemoryTransport)
    alice.add_contact(bob.identity.onion_address, "bob", None)
    bob.add_contact(alice.identity.onion_address, "alice", None)
    world.settle()
    alice_tor, bob_tor = alice._transport, bob._transport
    assert isinstance(alice_tor, OnionMemoryTransport)
    assert isinstance(bob_tor, OnionMemoryTransport)
    # Each published one endpoint for the other, and holds the key to the other's.
    assert len(alice_tor.endpoints) == len(bob_tor.endpoints) == 1
    assert set(bob_tor.client_keys) == alice_tor.endpoints
    assert set(alice_tor.client_keys) == bob_tor.endpoints
    # Alice goes invisible: strangers cannot reach her at all; bob still can.
    assert alice.set_invisible(True) == {"invisible": True}
    world.settle()
    assert alice.status()["invisible"] is True
    mallory.add_contact(alice.identity.onion_address, "alice", None, "hello?")
    bob.block("alice")
    bob.unblock("alice")  # bob's link goes and comes back: through alice's endpoint only
    bob.send("alice", "through the back door")
    world.settle(10)
    assert texts(alice, "in") == [("through the back door", "received")]
    assert alice.requests() == []
    # Removing bob withdraws his endpoint and forgets the key to his.
    alice.remove_contact("bob")
    world.settle()
    assert alice_tor.endpoints == set() and alice_tor.client_keys == {}


def test_with_tor_and_i2p_a_contact_is_reached_over_i2p_when_tor_fails(world: World) -> None:
    alice = world.node("alice", 1, transport=tor_and_i2p)
    bob = world.node("bob", 2, transport=tor_and_i2p)
    for me, them in ((alice, bob), (bob, alice)):
        card = make_contact_string(them.identity, memory_destination(them.identity.onion_address))
        me.add_contact(card, "bob" if them is bob else "alice", None)
    world.settle()
    assert [(c["online"], c["transport"]) for c in alice.contacts()] == [(True, "tor")]
    bob_tor = cast(MultiTransport, bob._transport).members[0]
    assert isinstance(bob_tor, OnionMemoryTransport) and bob_tor.endpoints  # endpoints swapped
    # Bob's tor goes away: his onions vanish and the link over tor with them.
    bob_tor.down = True
    for onion in [bob.identity.onion_address, *bob_tor.endpoints]:
        world.network.listeners.pop(onion)
    for pump in world.network.pumps:
        pump.clientIO.loseConnection()
        pump.serverIO.loseConnection()
    world.settle(10)
    # Alice dialled bob's endpoint onion (never his identity onion), then his destination.
    assert [(c["online"], c["transport"]) for c in alice.contacts()] == [(True, "i2p")]
    assert [c["transport"] for c in bob.contacts()] == ["i2p"]
    alice.send("bob", "over i2p")
    world.settle()
    assert texts(alice, "out") == [("over i2p", "delivered")]
    assert texts(bob, "in") == [("over i2p", "received")]
    text = describe_status(alice.status())
    assert "network:   tor: " in text and "           i2p: " in text


def test_a_resend_skips_envelopes_still_in_flight(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = world.node("alice", 1), world.node("bob", 2)
    alice.add_contact(bob.identity.onion_address, "bob", None)
    bob.add_contact(alice.identity.onion_address, "alice", None)
    world.settle()
    original = bob._on_envelope
    held: list[Any] = []  # bob sits on everything: nothing is acknowledged

    def hold(peer: Any, protocol: Any, envelope: Any) -> None:
        held.append((peer, protocol, envelope))

    bob._on_envelope = hold  # type: ignore[method-assign]
    sent: list[bytes] = []
    send = LinkProtocol.send

    def count(self: LinkProtocol, message: Message) -> int:
        if isinstance(message, Envelope):
            sent.append(message.message_id)
        return send(self, message)

    monkeypatch.setattr(LinkProtocol, "send", count)
    alice.send("bob", "first")
    world.settle(10)
    # In flight when the retry for "first" falls due (15 s ± 25 %): sent 10 s after it.
    alice.send("bob", "second")
    world.settle(10)
    first, second = sent[0], sent[1]
    assert sent.count(first) == 2  # resent once its retry fell due
    assert sent.count(second) == 1  # not resent: it had only just left
    bob._on_envelope = original  # type: ignore[method-assign]
