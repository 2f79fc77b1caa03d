"""A user restored from a backup talks with their contacts again, whichever side of the pair
opens ratchet sessions; and a second running instance of one identity is noticed."""

from __future__ import annotations

import random
from typing import Any

import nacl.pwhash
import pytest
from test_node import MemoryTransport, World, run, texts
from test_node import world as world  # the fixture

from onionmsg.backup import open_backup, restore_backup, seal_backup, take_backup
from onionmsg.cli import describe_status
from onionmsg.crypto.identity import Identity
from onionmsg.crypto.ratchet import is_initiator
from onionmsg.mix.scheduler import PROFILES, Profile
from onionmsg.node import Node
from onionmsg.store.db import Store
from onionmsg.store.keys import KeyParams

CHEAP = KeyParams(
    True, bytes(16), nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN
)


def now_ms(world: World) -> int:
    return int(world.clock.seconds() * 1000)


def restored_node(
    world: World, original: Node, name: str, cover: Profile = PROFILES["off"]
) -> Node:
    """Export ``original``'s store (with history) and start a node on a new store from it."""
    data = seal_backup(
        take_backup(original._store, history=True, now_ms=now_ms(world)), b"pw", CHEAP
    )
    backup = open_backup(data, b"pw")
    store = Store.create(world.tmp_path / f"{name}.db", bytes(32), backup.identity)
    restore_backup(store, backup, now_ms=now_ms(world))
    node = Node(
        store,
        MemoryTransport(world.network, backup.identity.onion_address),
        world.clock,
        wall_clock_ms=lambda: now_ms(world),
        cover=cover,
        cover_rngs=(random.Random(5), random.Random(6)),
    )
    world.events[name] = []
    node.subscribe(world.events[name].append)
    run(node.start())
    return node


@pytest.mark.parametrize(("alice_seed", "bob_seed"), [(1, 2), (2, 1)])
def test_contacts_reach_a_restored_user_again_both_ways(
    world: World, alice_seed: int, bob_seed: int
) -> None:
    # Once with alice (who is restored) as the pair's ratchet initiator, once as responder.
    alice, bob = world.node("alice", alice_seed), world.node("bob", bob_seed)
    alice_opens = is_initiator(alice.identity.public_key, bob.identity.public_key)
    alice.add_contact(bob.identity.onion_address, "bob", None)
    bob.add_contact(alice.identity.onion_address, "alice", None)
    world.settle()
    alice.send("bob", "before the backup")
    bob.send("alice", "seen before the backup")
    world.settle()
    # Alice's device dies; bob writes to her meanwhile, under the old session.
    run(alice.stop())
    world.settle(5)
    bob.send("alice", "while you were away")
    world.settle(5)
    restored = restored_node(world, alice, "restored")
    world.settle(70)  # bob's redial backoff may have reached a minute
    # Bob's message, sealed under the session alice lost, arrives under the new one.
    assert texts(restored, "in") == [
        ("seen before the backup", "received"),
        ("while you were away", "received"),
    ]
    assert texts(bob, "out")[-1] == ("while you were away", "delivered")
    restored.send("bob", "I am back")
    bob.send("alice", "welcome back")
    world.settle()
    assert texts(bob, "in") == [("before the backup", "received"), ("I am back", "received")]
    assert texts(restored, "in")[-1] == ("welcome back", "received")
    assert texts(restored, "out")[-1] == ("I am back", "delivered")
    # Exactly one side opened the new session: the pair's initiator.
    bob_contact = bob._store.contacts()[0]
    assert bob._store.outbox(bob_contact.id) == []
    assert restored.status()["twin"] is None
    assert alice_opens == is_initiator(restored.identity.public_key, bob.identity.public_key)


def test_an_undelivered_message_in_the_backup_is_sent_after_the_restore(world: World) -> None:
    alice = world.node("alice", 2)  # the responder: its message waits for bob's session
    bob_identity = Identity(bytes([1]) * 32)
    alice.add_contact(bob_identity.onion_address, "bob", None)
    alice.send("bob", "queued before the backup")
    world.settle(2)
    run(alice.stop())
    restored = restored_node(world, alice, "restored")
    bob = world.node("bob", 1)
    bob.add_contact(restored.identity.onion_address, "alice", None)
    world.settle(70)
    assert texts(bob, "in") == [("queued before the backup", "received")]
    assert texts(restored, "out") == [("queued before the backup", "delivered")]


def test_a_contact_asking_for_a_session_while_ours_is_on_its_way_changes_nothing(
    world: World,
) -> None:
    """A new pair: the responder asks for a session when the link comes up, but the
    initiator's SessionStart is already on its way; no second session is opened."""
    one, two = world.node("one", 1), world.node("two", 2)
    one_opens = is_initiator(one.identity.public_key, two.identity.public_key)
    opener, other = (one, two) if one_opens else (two, one)
    asked: list[object] = []
    restarted: list[object] = []
    on_request, restart = opener._on_session_request, opener._restart_session

    def spy_request(peer: Any) -> None:
        asked.append(peer)
        on_request(peer)

    def spy_restart(peer: Any, ratchet: Any) -> None:
        restarted.append(peer)
        restart(peer, ratchet)

    opener._on_session_request = spy_request  # type: ignore[method-assign]
    opener._restart_session = spy_restart  # type: ignore[method-assign]
    # The responder has something to send before any session exists: it asks.
    other.add_contact(opener.identity.onion_address, "opener", None)
    other.send("opener", "hello")
    opener.add_contact(other.identity.onion_address, "other", None)
    world.settle(70)
    assert texts(opener, "in") == [("hello", "received")]
    assert len(asked) >= 1 and restarted == []


@pytest.mark.parametrize(("alice_seed", "bob_seed"), [(1, 2), (2, 1)])
def test_a_restored_user_with_nothing_pending_can_write_first(
    world: World, alice_seed: int, bob_seed: int
) -> None:
    alice, bob = world.node("alice", alice_seed), world.node("bob", bob_seed)
    alice.add_contact(bob.identity.onion_address, "bob", None)
    bob.add_contact(alice.identity.onion_address, "alice", None)
    world.settle()
    alice.send("bob", "hi")
    world.settle()
    run(alice.stop())
    restored = restored_node(world, alice, "restored")
    world.settle(70)  # linked again; nobody has anything queued
    restored.send("bob", "first words after the restore")
    world.settle()
    assert texts(bob, "in") == [("hi", "received"), ("first words after the restore", "received")]
    bob.send("alice", "answer")
    world.settle()
    assert texts(restored, "in") == [("answer", "received")]


def test_a_second_running_instance_of_the_identity_is_noticed(world: World) -> None:
    loops = Profile("loops", payload_rate=0.0, loop_rate=1.0)
    alice = world.node("alice", 1, loops)
    world.settle(5)
    assert alice.status()["cover"]["loop_link"] is True
    assert alice.status()["twin"] is None  # our own loop link is not a twin
    # The same backup started elsewhere: it publishes our address too (here it takes over
    # the address, as the last descriptor uploaded wins in tor's directories).
    twin = restored_node(world, alice, "twin", loops)
    world.settle(5)
    assert alice.status()["twin"] is None and twin.status()["twin"] is None
    # A network blip: both redial their loop link, and alice's dial reaches the twin.
    for pump in list(world.network.pumps):
        pump.clientIO.loseConnection()
        pump.serverIO.loseConnection()
    world.settle(10)
    noticed = twin.status()["twin"]
    assert noticed is not None and noticed["links"] >= 1
    assert any(e.get("event") == "twin" for e in world.events["twin"])
    assert "another running instance" in describe_status(twin.status())
    assert alice.status()["twin"] is None  # its own dials only reached the twin
