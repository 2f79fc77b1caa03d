"""A hostile contact against a real daemon over tcp (issue 9, "Hostile peers").

The hostile peer (integration/hostile_peer.py) is a contact the daemon knows: it completes
a real handshake with its own identity, opens a real ratchet session, and then sends what
an honest client never would. Each test checks that the daemon refuses it, that the
refusal costs only the hostile link, and that the next honest message still gets through.
Timings are printed (pytest -s) and reported in docs/performance.md, not asserted here.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.hostile_peer import HostilePeer, Sender, identity_that_opens_sessions_with
from integration.test_limits import rss_kib
from integration.users import User, wait_for
from onionmsg.control.client import ControlClient
from onionmsg.crypto.identity import Identity
from onionmsg.node import INBOUND_BURST, INBOUND_PER_SECOND
from onionmsg.session.link import HANDSHAKE_TIMEOUT, PARTIAL_CELL_TIMEOUT
from onionmsg.wire.cells import CELL_SIZE, INNER_SIZE, MAX_BODY, CellKind
from onionmsg.wire.messages import MAX_MESSAGE_SIZE, Ack, ContactRequest, Envelope, Hello

# How long the daemon may take to close a link it refused (it does so at once; this is
# only the test's patience on a loaded machine).
PATIENCE = 10.0


@dataclasses.dataclass
class Setup:
    bob: User
    mallory: Identity
    host: str
    port: int

    def connect(self, identity: Identity | None = None) -> HostilePeer:
        """A new link from mallory (or ``identity``), greeted both ways."""
        peer = HostilePeer.connect(identity or self.mallory, self.bob.address, self.host, self.port)
        peer.handshake()
        peer.wait_for(Hello)
        peer.send(Hello())
        return peer

    def stored_from(self, name: str) -> list[str]:
        return [m["text"] for m in self.bob.messages() if m["contact"] == name]

    def online(self, name: str) -> bool:
        return any(c["name"] == name and c["online"] for c in self.bob.contacts())


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    bob = User("bob", tmp_path / "bob")
    bob.init("--no-passphrase")
    mallory = identity_that_opens_sessions_with(bob.address)
    try:
        bob.start_daemon("--transport", "tcp", "--listen", "127.0.0.1:0")
        bob.cli("contacts", "add", mallory.onion_address, "--name", "mallory")
        host, port = bob.tcp_endpoint().rsplit(":", 1)
        yield Setup(bob, mallory, host, int(port))
    finally:
        if bob.daemon is not None:
            bob.daemon.kill()
            bob.daemon.wait()


def inner(kind: CellKind, body: bytes) -> bytes:
    """A cell plaintext as cells.py lays it out, whatever the body claims."""
    header = struct.pack(">BH", kind, len(body))
    return header + body + bytes(INNER_SIZE - len(header) - len(body))


def begin(total: int, data: bytes) -> bytes:
    return inner(CellKind.BEGIN, struct.pack(">I", total) + data)


def over_the_cap(peer: HostilePeer, how: str) -> None:
    if how == "claims 4 GiB":
        peer.send_inner(begin(2**32 - 1, b"\x00" * (MAX_BODY - 4)))
    elif how == "claims the cap + 1":
        peer.send_inner(begin(MAX_MESSAGE_SIZE + 1, b"\x00" * (MAX_BODY - 4)))
    elif how == "more fragments than claimed":
        # Claims the cap, then sends full fragments past it: the last one overflows.
        peer.send_inner(begin(MAX_MESSAGE_SIZE, b"\x00" * (MAX_BODY - 4)))
        for _ in range(MAX_MESSAGE_SIZE // MAX_BODY + 1):
            peer.send_inner(inner(CellKind.CONTINUE, b"\x00" * MAX_BODY))
    elif how == "a fragment without a message":
        peer.send_inner(inner(CellKind.CONTINUE, b"\x00" * MAX_BODY))
    else:
        raise AssertionError(how)


CAP_ABUSES = [
    "claims 4 GiB",
    "claims the cap + 1",
    "more fragments than claimed",
    "a fragment without a message",
]


def test_lengths_and_fragment_counts_past_the_cap_close_the_link_without_allocating(
    setup: Setup,
) -> None:
    sender = Sender(setup.mallory, setup.bob.address)
    peer = setup.connect()
    peer.send(sender.envelope("warm-up"))  # every code path loaded before the baseline
    peer.wait_for(Ack)
    peer.close()
    assert setup.bob.daemon is not None
    pid = setup.bob.daemon.pid
    rss_before = rss_kib(pid)
    attempts = 50
    for how in CAP_ABUSES:
        for _ in range(attempts):
            peer = setup.connect()
            over_the_cap(peer, how)
            assert peer.closed_by_daemon(PATIENCE), f"{how}: the link stayed open"
            peer.close()
    # 50 claims of 4 GiB alone would be 200 GiB; what is left is a few MiB of noise.
    grown = rss_kib(pid) - rss_before
    assert grown < 16 * 1024, f"RSS grew by {grown} KiB"
    peer = setup.connect()
    peer.send(sender.envelope("still here"))
    peer.wait_for(Ack)
    assert setup.stored_from("mallory") == ["warm-up", "still here"]


def test_a_contact_that_stalls_mid_cell_is_dropped_and_an_idle_one_is_not(
    setup: Setup,
) -> None:
    quiet = identity_that_opens_sessions_with(setup.bob.address)
    setup.bob.cli("contacts", "add", quiet.onion_address, "--name", "quiet")
    idle = setup.connect(quiet)  # cover traffic is off: this link carries nothing now
    staller = setup.connect()
    wait_for(lambda: setup.online("mallory") and setup.online("quiet"), 10, "both online")
    staller.send_raw(staller.cell(Hello())[: CELL_SIZE // 2])  # half a cell, then silence
    started = time.monotonic()
    assert not staller.closed_by_daemon(PARTIAL_CELL_TIMEOUT - 5)
    assert staller.closed_by_daemon(PARTIAL_CELL_TIMEOUT + PATIENCE - (time.monotonic() - started))
    wait_for(lambda: not setup.online("mallory"), 10, "mallory shown offline")
    # The idle contact's link, as old, is untouched and still carries messages.
    assert not idle.closed_by_daemon(0.1)
    assert setup.online("quiet")
    idle.send(Sender(quiet, setup.bob.address).envelope("I was only quiet"))
    idle.wait_for(Ack)
    assert setup.stored_from("quiet") == ["I was only quiet"]


def test_a_contact_flooding_1000_messages_a_second_is_throttled_and_status_still_answers(
    setup: Setup,
) -> None:
    flood_seconds, rate = 2, 1000
    sender = Sender(setup.mallory, setup.bob.address)
    envelopes = list(sender.envelopes(flood_seconds * rate, "flood"))
    peer = setup.connect()
    cells = [peer.cell(envelope) for envelope in envelopes]
    latencies: list[float] = []
    done = threading.Event()

    def ask_status() -> None:
        # A generous client timeout is the only bound asserted: the daemon must answer.
        with ControlClient(setup.bob.home / "control.sock", timeout=PATIENCE) as client:
            while not done.is_set():
                asked = time.monotonic()
                assert client.call("status")["address"] == setup.bob.address
                latencies.append(time.monotonic() - asked)
                time.sleep(0.05)

    asker = threading.Thread(target=ask_status)
    asker.start()
    started = time.monotonic()
    try:
        for i, cell in enumerate(cells):
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
            peer.send_raw(cell)
        sent_for = time.monotonic() - started
        peer.drain()  # until the daemon has worked through what it read
    finally:
        done.set()
        asker.join()
    elapsed = time.monotonic() - started
    acked = {ack.message_id for ack in peer.of_type(Ack)}
    print(
        f"\nflood: {len(cells)} envelopes in {sent_for:.2f} s, {len(acked)} accepted; "
        f"status answered {len(latencies)} times, max {max(latencies) * 1000:.1f} ms"
    )
    assert len(latencies) >= 10
    assert INBOUND_BURST <= len(acked) <= INBOUND_BURST + INBOUND_PER_SECOND * elapsed
    assert acked <= {e.message_id for e in envelopes}
    # Each accepted envelope is stored exactly once; the rest cost no storage.
    stored = setup.stored_from("mallory")
    assert len(stored) == len(set(stored)) == len(acked)
    # The daemon is still itself: a later message from the contact gets through.
    peer.send(sender.envelope("after the flood"))
    wait_for(lambda: "after the flood" in setup.stored_from("mallory"), 30, "delivery")


def test_a_ratchet_counter_jump_of_a_million_is_refused_and_changes_nothing(
    setup: Setup,
) -> None:
    sender = Sender(setup.mallory, setup.bob.address)
    peer = setup.connect()
    before = sender.envelope("before")
    peer.send(before)
    peer.wait_for(Ack)
    honest = sender.envelope("after")
    forgeries = [
        # The same chain, a million messages ahead.
        dataclasses.replace(honest, message_id=os.urandom(16), chain_length=10**6),
        # A new ratchet key whose previous chain claims a million unread messages.
        dataclasses.replace(
            honest,
            message_id=os.urandom(16),
            ratchet_public=os.urandom(32),
            previous_chain_length=10**6,
        ),
        # The largest counters the schema allows.
        dataclasses.replace(
            honest,
            message_id=os.urandom(16),
            previous_chain_length=2**32 - 1,
            chain_length=2**32 - 1,
        ),
    ]
    for forged in forgeries:
        peer.send(forged)
    peer.send(honest)  # the next valid message decrypts: the session did not move
    peer.wait_for(Ack, 2)
    assert not peer.closed_by_daemon(0.5)  # no link error, and no further Ack comes
    assert [a.message_id for a in peer.of_type(Ack)] == [before.message_id, honest.message_id]
    assert setup.stored_from("mallory") == ["before", "after"]


def test_replayed_envelopes_cells_and_handshakes_are_refused_without_a_trace(
    setup: Setup,
) -> None:
    sender = Sender(setup.mallory, setup.bob.address)
    first = setup.connect()
    recorded = first.recorded
    assert recorded is not None
    captured = sender.envelope("once")
    first.send(captured)
    first.wait_for(Ack)
    first.close()
    wait_for(lambda: not setup.online("mallory"), PATIENCE, "the first link gone")

    # A recorded handshake replayed on a new connection makes no link: the daemon answers
    # with a fresh ephemeral key, so the replayed third cell fails, and it hangs up at once.
    replay = HostilePeer.connect(setup.mallory, setup.bob.address, setup.host, setup.port)
    replay.send_raw(recorded.first)
    replay.send_raw(recorded.third)
    assert replay.closed_by_daemon(HANDSHAKE_TIMEOUT / 2), "closed by failure, not the timeout"
    assert len(replay.raw_received) == CELL_SIZE  # its second cell, and nothing after
    assert replay.raw_received != recorded.second  # made with a fresh ephemeral key
    assert not setup.online("mallory")

    second = setup.connect()
    second.send(captured)  # the same envelope on a new link: a redelivery, acknowledged
    second.send(Envelope(os.urandom(16), *dataclasses.astuple(captured)[1:]))  # other id
    after = sender.envelope("after the replays")
    second.send(after)
    second.wait_for(Ack, 2)
    assert not second.closed_by_daemon(0.5)  # (and no further Ack comes)
    assert [a.message_id for a in second.of_type(Ack)] == [captured.message_id, after.message_id]
    assert setup.stored_from("mallory") == ["once", "after the replays"]

    # A cell replayed within a link fails its nonce: the daemon closes that link.
    cell = second.cell(Hello())
    second.send_raw(cell + cell)
    assert second.closed_by_daemon(PATIENCE)
    assert setup.stored_from("mallory") == ["once", "after the replays"]


def test_a_stranger_gets_the_handshake_and_not_one_byte_more(setup: Setup) -> None:
    """Pre-authentication bytes (checklist item 12): the same for every stranger, whatever
    we decide (pending, block-unknown): no greeting, no name, no status; then a close."""
    received = []
    for block_unknown in ("off", "on"):
        setup.bob.cli("settings", "block-unknown", block_unknown)
        peer = HostilePeer.connect(Identity.generate(), setup.bob.address, setup.host, setup.port)
        peer.handshake()
        after_handshake = len(peer.raw_received)
        peer.send(ContactRequest("hello?"))
        assert peer.closed_by_daemon(PATIENCE)
        assert len(peer.raw_received) == after_handshake
        received.append(after_handshake)
    assert received[0] == received[1] == CELL_SIZE  # one handshake cell, that is all
    requests = setup.bob.cli("requests", "--json").stdout.splitlines()
    assert len(requests) == 1  # the first stranger's; block-unknown dropped the second
