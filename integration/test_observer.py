"""Issue 5's observer: can someone watching what a node hands to tor tell when its user talks?

Alice runs on the private Tor network with Bob as her contact. We capture her writes to tor
(integration/observer.py) while she is (a) idle and (b) sending Bob a message every 1.5
seconds, and ask a two-sample Kolmogorov-Smirnov test whether (a) and (b) differ: on the
gaps between writes and on the writes counted per second, plus the set of write sizes.

With cover traffic on, the test must not tell them apart (p > 0.05, one size). Alice's
schedule is seeded (integration/seeded_daemon.py) and both windows are fixed stretches of
it, so the verdict is the same on every run: under the null hypothesis an unseeded run
would fail 5 % of the time by definition. With cover traffic off the same test must tell
them apart (p < 0.01): that is what shows the test can fail.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from scipy.stats import ks_2samp

from integration.observer import Observer, Write, counts_per_second, gaps
from integration.tor_users import befriend, client_tor, delivered, start_on_tor, tor_user
from integration.users import User, wait_for
from onionmsg.control.client import ControlClient
from onionmsg.testnet import TestNet
from onionmsg.wire.cells import CELL_SIZE

# 2 payload cells/s and a loop cell every 2 s: ~60 writes in a 25-second window.
COVER = ("--cover-rate", "2", "--loop-rate", "0.5")
SEED = 5
WINDOW = 25.0
SETTLE = 30.0  # seconds after the schedule starts: links and the loop link are up
MESSAGE_EVERY = 1.5


def _alice_and_bob(tor_network: TestNet, tmp_path: Path, users: list[User]) -> tuple[User, float]:
    """Alice (seeded schedule) and Bob, contacts, linked; returns Alice and her anchor."""
    alice = tor_user("alice", tmp_path / "alice", client_tor(tor_network, "client1"))
    bob = tor_user("bob", tmp_path / "bob", client_tor(tor_network, "client2"))
    users.extend([alice, bob])
    anchor = tmp_path / "anchor"
    start_on_tor(
        alice, alice.tor, *COVER, launcher=("integration.seeded_daemon", str(SEED), str(anchor))
    )
    start_on_tor(bob, bob.tor, *COVER)
    befriend(alice, bob)
    wait_for(lambda: alice.contacts()[0]["online"], 60, "alice linked to bob")
    wait_for(lambda: alice.status()["cover"]["loop_link"], 60, "alice's loop link")
    return alice, float(anchor.read_text())


def _send_every(client: ControlClient, start: float, end: float, prefix: str) -> list[str]:
    """Send Bob a message every MESSAGE_EVERY seconds from ``start`` until ``end``."""
    texts: list[str] = []
    at = start + MESSAGE_EVERY / 2
    while at < end:
        time.sleep(max(0.0, at - time.time()))
        texts.append(f"{prefix} {len(texts)}")
        client.call("send", contact="bob", text=texts[-1])
        at += MESSAGE_EVERY
    time.sleep(max(0.0, end - time.time()))
    return texts


def _report(name: str, idle: list[Write], busy: list[Write], start: float) -> tuple[float, float]:
    idle_start, busy_start = start, start + WINDOW
    gap_p = ks_2samp(gaps(idle), gaps(busy)).pvalue if idle and busy else 0.0
    count_p = ks_2samp(
        counts_per_second(idle, idle_start, idle_start + WINDOW),
        counts_per_second(busy, busy_start, busy_start + WINDOW),
    ).pvalue
    print(
        f"{name}: idle {len(idle)} writes, busy {len(busy)} writes; "
        f"KS p (gaps) = {gap_p:.3g}, KS p (per-second counts) = {count_p:.3g}; "
        f"sizes {sorted({w.size for w in idle + busy})}"
    )
    return float(gap_p), float(count_p)


def test_an_observer_of_the_tor_boundary_cannot_tell_chatting_from_idle_under_cover(
    tor_network: TestNet, tmp_path: Path, users: list[User]
) -> None:
    alice, anchor = _alice_and_bob(tor_network, tmp_path, users)
    assert alice.daemon is not None
    client = ControlClient(alice.home / "control.sock")
    start = anchor + SETTLE
    assert time.time() < start, "links took too long: the windows would miss their stretch"
    with Observer(alice.daemon.pid, alice.tor.control_port, tmp_path) as observer:
        time.sleep(max(0.0, start + WINDOW - time.time()))  # (a) idle
        texts = _send_every(client, start + WINDOW, start + 2 * WINDOW, "under cover")  # (b)
    idle = observer.writes(start, start + WINDOW)
    busy = observer.writes(start + WINDOW, start + 2 * WINDOW)
    for text in texts:  # the busy window really carried the messages
        wait_for(partial(delivered, alice, text), 60, f"{text!r} delivered")
    gap_p, count_p = _report("cover on", idle, busy, start)
    assert len(idle) > 30 and len(busy) > 30
    assert {w.size for w in idle + busy} == {CELL_SIZE}
    assert gap_p > 0.05
    assert count_p > 0.05

    # The same observer and test, cover traffic off: now it must see the conversation.
    client.call("cover.set", profile="off")
    start = time.time() + 2  # past the cells already under way
    with Observer(alice.daemon.pid, alice.tor.control_port, tmp_path) as observer:
        time.sleep(max(0.0, start + WINDOW - time.time()))  # (a) idle
        texts = _send_every(client, start + WINDOW, start + 2 * WINDOW, "in the open")  # (b)
    idle = observer.writes(start, start + WINDOW)
    busy = observer.writes(start + WINDOW, start + 2 * WINDOW)
    for text in texts:
        wait_for(partial(delivered, alice, text), 60, f"{text!r} delivered")
    _, count_p = _report("cover off", idle, busy, start)
    assert idle == []  # idle and silent: the plainest tell of all
    assert len(busy) == len(texts)  # one cell per message, each when it is sent
    assert count_p < 0.01
