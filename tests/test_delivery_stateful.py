"""Delivery bookkeeping under Hypothesis: two real Nodes (real stores, in-memory network,
fake clock) while messages are sent, links cut, acknowledgements lost and the receiver
restarted from its store, in any order.

Invariants: the receiver stores each accepted message exactly once, in the order sent;
the sender's status of a message only moves forward (queued -> sent -> delivered), and
"delivered" only once the receiver has stored it. At the end, with the network left
alone, everything is delivered.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from test_node import MemoryTransport, World, run

from onionmsg.crypto.identity import Identity
from onionmsg.node import Node
from onionmsg.store.db import Store

RANK = {"queued": 0, "sent": 1, "delivered": 2}
KEY = bytes(32)


class DeliveryMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="onionmsg-delivery-"))
        self.world = World(self.home)
        self.alice = self.world.node("alice", 1)
        self.bob = self.world.node("bob", 2)
        self.alice.add_contact(self.bob.identity.onion_address, "bob", None)
        self.bob.add_contact(self.alice.identity.onion_address, "alice", None)
        self.world.settle()
        self.sent: list[str] = []
        self.status: dict[str, str] = {}  # message id -> the sender's last status

    def teardown(self) -> None:
        if hasattr(self, "world"):
            self.world.settle(90)  # the network left alone: the backoff redials
            self.check_statuses()
            assert self.incoming() == self.sent
            assert set(self.status.values()) <= {"delivered"}
            run(self.alice.stop())
            run(self.bob.stop())
            shutil.rmtree(self.home, ignore_errors=True)

    def incoming(self) -> list[str]:
        return [m["text"] for m in self.bob.messages() if m["direction"] == "in"]

    def open_pumps(self) -> list[object]:
        return [p for p in self.world.network.pumps if not p.clientIO.disconnected]

    # -- rules -------------------------------------------------------------------------------

    @rule()
    def send(self) -> None:
        text = f"m{len(self.sent)}"
        self.alice.send("bob", text)
        self.sent.append(text)

    @rule(seconds=st.sampled_from([0.2, 2.0, 20.0]))
    def let_time_pass(self, seconds: float) -> None:
        self.world.settle(seconds)

    @rule()
    def lose_the_acks(self) -> None:
        """Alice's cells reach bob, whose answers are lost with the link."""
        for pump in self.world.network.pumps:
            if pump.clientIO.disconnected:
                continue
            pump.pump()
            pump.clientIO.getOutBuffer()
            pump.serverIO.getOutBuffer()
            pump.clientIO.loseConnection()
            pump.serverIO.loseConnection()

    @rule()
    def cut_the_link(self) -> None:
        for pump in self.world.network.pumps:
            pump.clientIO.getOutBuffer()
            pump.serverIO.getOutBuffer()
            pump.clientIO.loseConnection()
            pump.serverIO.loseConnection()

    @rule()
    def restart_bob(self) -> None:
        """Bob's daemon stops and starts again from his store (what it committed stays)."""
        self.cut_the_link()  # a crash: nothing more reaches the old process
        self.world.network.pump()
        run(self.bob.stop())
        self.world.network.pumps.clear()
        self.bob._store.close()
        identity = Identity(bytes([2]) * 32)
        store = Store.open(self.home / "bob.db", KEY)
        self.bob = Node(
            store,
            MemoryTransport(self.world.network, identity.onion_address),
            self.world.clock,
            wall_clock_ms=lambda: int(self.world.clock.seconds() * 1000),
            cover_rngs=(random.Random(2), random.Random(102)),
        )
        run(self.bob.start())

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def each_message_is_stored_once_in_order(self) -> None:
        got = self.incoming()
        assert got == self.sent[: len(got)]

    @invariant()
    def check_statuses(self) -> None:
        stored = set(self.incoming())
        for message in self.alice.messages():
            before = self.status.get(message["id"], "queued")
            assert RANK[message["status"]] >= RANK[before], (before, message)
            self.status[message["id"]] = message["status"]
            if message["status"] == "delivered":
                assert message["text"] in stored


TestDeliveryMachine = DeliveryMachine.TestCase
TestDeliveryMachine.settings = settings(max_examples=30, stateful_step_count=12, deadline=None)
