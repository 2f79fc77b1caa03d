"""Contact requests between real daemons (tcp transport: fast, same code paths as Tor)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.users import User, wait_for


@pytest.fixture
def three(tmp_path: Path) -> Iterator[tuple[User, User, User]]:
    people = tuple(User(name, tmp_path / name) for name in ("alice", "bob", "mallory"))
    try:
        for user in people:
            user.init("--no-passphrase")
            user.start_daemon("--transport", "tcp", "--listen", "127.0.0.1:0")
        yield people  # type: ignore[misc]
    finally:
        for user in people:
            if user.daemon is not None:
                user.daemon.kill()
                user.daemon.wait()


def requests(user: User) -> list[dict[str, object]]:
    out = user.cli("requests", "--json").stdout
    return [json.loads(line) for line in out.splitlines()]


def knock(stranger: User, target: User, note: str) -> None:
    stranger.cli(
        "contacts", "add", target.address, "--name", target.name,
        "--tcp", target.tcp_endpoint(), "--message", note,
    )  # fmt: skip


def test_a_request_is_shown_answered_and_becomes_a_conversation(
    three: tuple[User, User, User],
) -> None:
    alice, bob, _ = three
    added = alice.cli("contacts", "add", bob.address, "--tcp", bob.tcp_endpoint(), "--message",
                      "alice from the \x1b[1mconference\u202e")  # fmt: skip
    assert "messages wait until they accept" in added.stdout
    alice.cli("send", bob.address, "are you the bob I met?")
    (request,) = wait_for(lambda: requests(bob), 30, "bob to get alice's request")
    assert {"id", "address", "message", "time"} <= request.keys()
    assert request["address"] == alice.address
    assert request["message"] == "alice from the [1mconference"  # escapes removed
    # An unknown user's message is not shown as a message, and nothing is a contact yet.
    assert bob.messages() == [] and bob.contacts() == []
    human = bob.cli("requests").stdout
    assert alice.address in human and "conference" in human
    assert bob.status()["requests"] == 1

    accepted = bob.cli("requests", "accept", str(request["id"]), "--name", "alice").stdout
    assert "is a contact now" in accepted
    # Alice's node knocks again on its own (backoff); her next send makes it dial at once.
    alice.cli("send", bob.address, "hello again")
    wait_for(
        lambda: (
            [m["text"] for m in bob.messages() if m["direction"] == "in"]
            == ["are you the bob I met?", "hello again"]
        ),
        90,
        "alice's messages to arrive after acceptance",
    )
    bob.cli("send", "alice", "yes, hi!")
    wait_for(lambda: any(m["text"] == "yes, hi!" for m in alice.messages()), 30, "bob's reply")
    assert requests(bob) == []
    (bob_seen_by_alice,) = alice.contacts()
    assert bob_seen_by_alice["accepted"] is True


def test_reject_block_and_block_unknown(three: tuple[User, User, User]) -> None:
    alice, bob, mallory = three
    knock(mallory, bob, "let me in")
    (request,) = wait_for(lambda: requests(bob), 30, "mallory's request")
    assert "blocked" in bob.cli("requests", "block", str(request["id"])).stdout
    assert requests(bob) == []
    bob.cli("settings", "block-unknown", "on")
    assert bob.status()["block_unknown"] is True
    knock(alice, bob, "hello?")
    mallory.cli("send", bob.address, "still me")
    # Both keep knocking (alice's first dial is immediate); nothing reaches bob.
    wait_for(lambda: alice.contacts()[0]["connection"] != "dialing", 30, "alice's knock to end")
    assert requests(bob) == [] and bob.messages() == []
    bob.cli("settings", "block-unknown", "off")
    alice.cli("send", bob.address, "now?")  # dials at once
    (request,) = wait_for(lambda: requests(bob), 30, "alice's request once block-unknown is off")
    assert request["address"] == alice.address
    assert "rejected" in bob.cli("requests", "reject", str(request["id"])).stdout
    assert requests(bob) == []
    bad = bob.cli("requests", "accept", "999", check=False)
    assert bad.returncode == 1 and "no request 999" in bad.stderr


def test_blocking_a_contact_cuts_them_off(three: tuple[User, User, User]) -> None:
    alice, bob, _ = three
    alice.cli("contacts", "add", bob.address, "--name", "bob", "--tcp", bob.tcp_endpoint())
    bob.cli("contacts", "add", alice.address, "--name", "alice", "--tcp", alice.tcp_endpoint())
    wait_for(lambda: bob.contacts()[0]["online"], 30, "link")
    assert "blocked" in bob.cli("contacts", "block", "alice").stdout
    wait_for(lambda: not alice.contacts()[0]["online"], 30, "alice to see the link go")
    alice.cli("send", "bob", "blocked?")
    assert "blocked" in bob.cli("contacts", "list").stdout
    bob.cli("contacts", "unblock", "alice")
    wait_for(
        lambda: any(m["text"] == "blocked?" for m in bob.messages()), 60, "delivery after unblock"
    )
