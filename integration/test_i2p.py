"""Real onionmsg daemons over I2P: one private i2pd (loopback-only namespace), SAM v3.

i2pd answers SESSION CREATE only on its 20 s readiness poll, so the router and the two
users are shared by the module and sessions are created in parallel.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import connectProtocol

from integration.i2p_users import i2p_options, needs_i2pd
from integration.users import User, wait_for
from onionmsg.contacts.contact_string import parse_contact_string
from onionmsg.i2ptestnet import I2PRouter
from onionmsg.transport.i2p import I2PError, _SAMControl, sam_endpoint
from onionmsg.transport.sam import SAMReplyError, b32_address

pytestmark = needs_i2pd


def start_on_i2p(users: list[User], router: I2PRouter) -> None:
    """Start the daemons together: each waits ~20 s for its session."""

    def start(user: User) -> None:
        user.start_daemon("--transport", "i2p", *i2p_options(router))

    with ThreadPoolExecutor(len(users)) as pool:
        list(pool.map(start, users))


@pytest.fixture(scope="module")
def pair(router: I2PRouter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[User]]:
    home = tmp_path_factory.mktemp("users")
    people = [User(name, home / name) for name in ("alice", "bob")]
    for person in people:
        person.init("--no-passphrase")
    try:
        start_on_i2p(people, router)
        yield people
    finally:
        for person in people:
            if person.daemon is not None:
                person.daemon.kill()
                person.daemon.wait()


def delivered(user: User, text: str) -> bool:
    return any(m["text"] == text and m["status"] == "delivered" for m in user.messages())


def received(user: User, text: str) -> bool:
    return any(m["text"] == text and m["direction"] == "in" for m in user.messages())


def network_state_is(user: User, state: str) -> bool:
    return bool(user.status()["network"]["state"] == state)


def network_state_is_not(user: User, state: str) -> bool:
    return not network_state_is(user, state)


def exchange(alice: User, bob: User, tag: str, timeout: float = 60) -> None:
    alice.cli("send", "bob", f"{tag}: alice to bob")
    bob.cli("send", "alice", f"{tag}: bob to alice")
    for sender, recipient in ((alice, bob), (bob, alice)):
        text = f"{tag}: {sender.name} to {recipient.name}"
        wait_for(partial(delivered, sender, text), timeout, f"'{text}' delivered")
        assert received(recipient, text)


def test_two_users_who_share_contact_strings_talk_over_i2p(pair: list[User]) -> None:
    alice, bob = pair
    strings = {u.name: u.cli("address", "--contact").stdout.strip() for u in pair}
    cards = {name: parse_contact_string(text) for name, text in strings.items()}
    for user in pair:
        status = user.status()
        assert status["transport"] == "i2p"
        assert status["network"]["state"] == "ready"
        assert status["network"]["router_reachable"] and status["network"]["tunnels_ready"]
        destination = cards[user.name].i2p_destination
        assert destination is not None and cards[user.name].address == user.address
        assert status["listening"] == f"i2p {b32_address(destination)}"
        assert status["contact"] == strings[user.name]
    alice.cli("contacts", "add", strings["bob"], "--name", "bob")
    bob.cli("contacts", "add", strings["alice"], "--name", "alice")
    (bob_record,) = alice.contacts()
    bob_destination = cards["bob"].i2p_destination
    assert bob_destination is not None
    assert bob_record["i2p"] == b32_address(bob_destination)
    exchange(alice, bob, "first")


def test_a_forged_contact_string_is_refused(pair: list[User]) -> None:
    alice, bob = pair
    genuine = bob.cli("address", "--contact").stdout.strip()
    own = alice.cli("address", "--contact").stdout.strip()
    # Bob's address with Alice's destination: whoever holds that destination is not Bob.
    forged = genuine.split("&i2p=")[0] + "&i2p=" + own.split("&i2p=")[1].split("&sig=")[0]
    forged += "&sig=" + genuine.split("&sig=")[1]
    result = alice.cli("contacts", "add", forged, "--name", "not-bob", check=False)
    assert result.returncode == 1
    assert "signature does not verify" in result.stderr


def test_i2pd_restart_keeps_the_destination_and_messages_flow(
    pair: list[User], router: I2PRouter
) -> None:
    alice, bob = pair
    before = {u.name: u.status()["contact"] for u in pair}
    router.restart()
    for user in pair:
        # "lost" lasts ~1 s (then "connecting", "creating session"): a poll can miss it.
        wait_for(partial(network_state_is_not, user, "ready"), 30, f"{user.name}'s session lost")
    for user in pair:
        wait_for(partial(network_state_is, user, "ready"), 90, f"{user.name}'s new session")
    assert {u.name: u.status()["contact"] for u in pair} == before
    # Dials that failed while the router was down have pushed the redial backoff up (to
    # 60 s at most), so allow for one full backoff step.
    exchange(alice, bob, "after restart", timeout=120)


def test_the_destination_is_kept_in_the_store(pair: list[User]) -> None:
    alice = pair[0]
    online = alice.cli("address", "--contact").stdout.strip()
    alice.stop_daemon()
    offline = alice.cli("address", "--contact").stdout.strip()  # read from the store
    assert offline == online and parse_contact_string(offline).i2p_destination is not None


def test_an_unreachable_sam_port_is_a_clear_error(tmp_path: Path) -> None:
    user = User("carol", tmp_path / "carol")
    user.init("--no-passphrase")
    result = user.cli(
        "daemon", "--transport", "i2p", "--i2p-sam", f"unix:{tmp_path}/nothing", check=False
    )
    assert result.returncode == 1
    assert "cannot reach the I2P router's SAM port" in result.stderr


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_sam_errors_from_the_real_router_name_the_result(router: I2PRouter) -> None:
    control = _SAMControl()
    await connectProtocol(sam_endpoint(reactor, router.sam), control)
    assert await control.ready() == "3.1"
    generated = await control.command("DEST GENERATE", SIGNATURE_TYPE="7")
    with pytest.raises(SAMReplyError) as raised:
        await control.command(
            "STREAM CONNECT", ID="no-such-session", DESTINATION=generated.reply.values["PUB"]
        )
    assert raised.value.result == "INVALID_ID"
    assert "STREAM CONNECT" in str(raised.value) and "INVALID_ID" in str(raised.value)
    # The router closes a connection after an error; later commands fail clearly.
    await control.closed
    with pytest.raises(I2PError, match="closed"):
        await control.command("NAMING LOOKUP", NAME="ME")
