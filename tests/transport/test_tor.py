"""The Tor transport's pure parts, and its errors when tor cannot be used."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.bindings
import nacl.public
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.task import Clock
from txtorcon.torcontrolprotocol import TorDisconnectError, TorProtocolError

from onionmsg.crypto.endpoint import ClientAuthKey, EndpointKey
from onionmsg.crypto.identity import Identity, onion_address_from_public_key
from onionmsg.errors import AddressError
from onionmsg.transport import tor as tor_module
from onionmsg.transport.base import RECONNECT_DELAYS
from onionmsg.transport.tor import (
    MAX_STREAMS,
    POW_QUEUE_BURST,
    POW_QUEUE_RATE,
    EndpointLimitError,
    TorCommandError,
    TorError,
    TorOptions,
    TorStatus,
    TorTransport,
    add_onion_command,
    client_auth_private_text,
    client_auth_public_text,
    control_endpoint,
    parse_bootstrap,
    parse_service_id,
    parse_tor_version,
    socks_endpoint,
)


def test_parse_bootstrap_phase_and_event() -> None:
    phase = 'NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"'
    assert parse_bootstrap(phase) == (100, "Done")
    event = (
        "NOTICE BOOTSTRAP PROGRESS=45 TAG=requesting_descriptors "
        'SUMMARY="Asking for relay descriptors"'
    )
    assert parse_bootstrap(event) == (45, "Asking for relay descriptors")
    assert parse_bootstrap("NOTICE CIRCUIT_ESTABLISHED") is None


def test_parse_tor_version() -> None:
    assert parse_tor_version("0.4.9.11 (git-abc)") == (0, 4, 9)
    assert parse_tor_version("0.3.5.7") < (0, 4, 5)
    with pytest.raises(TorError):
        parse_tor_version("garbage")


def test_socks_listeners() -> None:
    clock = Clock()
    endpoint = socks_endpoint(clock, '"127.0.0.1:9050" "[::1]:9050"')
    assert isinstance(endpoint, TCP4ClientEndpoint)
    assert (endpoint._host, endpoint._port) == ("127.0.0.1", 9050)
    assert isinstance(socks_endpoint(clock, '"unix:/run/tor/socks"'), UNIXClientEndpoint)
    with pytest.raises(TorError, match="no SOCKS port"):
        socks_endpoint(clock, "")


def test_control_endpoints() -> None:
    from twisted.internet import reactor

    assert isinstance(control_endpoint(reactor, "tcp:127.0.0.1:9051"), TCP4ClientEndpoint)
    assert isinstance(control_endpoint(reactor, "unix:/run/tor/control"), UNIXClientEndpoint)
    with pytest.raises(TorError, match="not a control endpoint"):
        control_endpoint(reactor, "bogus:thing")


def test_status_snapshot() -> None:
    status = TorStatus(state="reachable", bootstrap_percent=100, uploads=3)
    assert status.reachable
    assert status.as_dict()["reachable"] is True
    assert not TorStatus(state="publishing").reachable


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_launch_without_tor_is_a_clear_error(tmp_path: Path) -> None:
    from twisted.internet import reactor

    options = TorOptions(data_dir=tmp_path / "tor", tor_binary="/nonexistent/tor")
    transport = TorTransport(reactor, Identity.generate(), options)
    with pytest.raises(TorError, match="could not launch tor"):
        await transport._launch_tor()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_unreachable_control_port_is_a_clear_error(tmp_path: Path) -> None:
    from twisted.internet import reactor

    options = TorOptions(data_dir=tmp_path / "tor", control="tcp:127.0.0.1:1")
    transport = TorTransport(reactor, Identity.generate(), options)
    with pytest.raises(TorError, match=r"cannot use tor.s control port at tcp:127\.0\.0\.1:1"):
        await transport._connect_tor()


# -- endpoint onions, client auth, invisible mode, PoW: against a scripted tor -----------------


def test_client_auth_encodings_are_the_forms_tor_takes() -> None:
    key = ClientAuthKey.generate()
    public = client_auth_public_text(key.public)
    assert len(public) == 52 and "=" not in public and public == public.upper()
    assert base64.b32decode(public + "====") == key.public
    private = client_auth_private_text(key.private)
    assert private.startswith("x25519:") and len(private) == len("x25519:") + 44
    assert base64.b64decode(private.removeprefix("x25519:")) == key.private
    # The public half is the one tor derives from the private half (X25519 base point).
    assert key.public == bytes(nacl.public.PrivateKey(key.private).public_key)
    for wrong in (b"", b"\x00" * 31, b"\x00" * 33):
        with pytest.raises(ValueError):
            client_auth_public_text(wrong)
        with pytest.raises(ValueError):
            client_auth_private_text(wrong)


def test_endpoint_keys_are_onion_keys_but_not_identities() -> None:
    seed = bytes(range(32))
    endpoint, identity = EndpointKey(seed), Identity(seed)
    assert endpoint.onion_address == identity.onion_address
    assert endpoint.tor_key_blob() == identity.tor_key_blob()
    assert len({endpoint, identity}) == 2 and not isinstance(endpoint, Identity)
    assert seed.hex() not in repr(endpoint) and endpoint.onion_address in repr(endpoint)
    auth = ClientAuthKey.generate()
    assert auth.private.hex() not in repr(auth)
    assert EndpointKey.generate().onion_address != EndpointKey.generate().onion_address


def test_add_onion_commands() -> None:
    identity, endpoint = Identity(bytes(32)), EndpointKey(bytes([1]) * 32)
    auth = ClientAuthKey(bytes([2]) * 32)
    assert add_onion_command(identity.tor_key_blob(), 4242, pow_defence=True) == (
        f"ADD_ONION {identity.tor_key_blob()} Flags=DiscardPK MaxStreams={MAX_STREAMS} "
        f"PoWDefensesEnabled=1 PoWQueueRate={POW_QUEUE_RATE} PoWQueueBurst={POW_QUEUE_BURST} "
        "Port=80,127.0.0.1:4242"
    )
    assert add_onion_command(identity.tor_key_blob(), 4242) == (
        f"ADD_ONION {identity.tor_key_blob()} Flags=DiscardPK MaxStreams={MAX_STREAMS} "
        "Port=80,127.0.0.1:4242"
    )
    command = add_onion_command(endpoint.tor_key_blob(), 4242, client_auth_public=auth.public)
    assert command == (
        f"ADD_ONION {endpoint.tor_key_blob()} Flags=V3Auth,DiscardPK MaxStreams={MAX_STREAMS} "
        f"ClientAuthV3={client_auth_public_text(auth.public)} Port=80,127.0.0.1:4242"
    )


def test_parse_service_id() -> None:
    onion = Identity(bytes(32)).onion_address
    assert parse_service_id(f"ServiceID={onion}\nClientAuthV3=ABC\n") == onion
    with pytest.raises(TorError, match="no v3 ServiceID"):
        parse_service_id("ServiceID=abcdefghijklmnop\n")  # a v2 id


def _onion_of_key_blob(blob: str) -> str:
    """What tor does with an ADD_ONION key: the public key is the expanded key's scalar
    times the base point (an independent check of ``tor_key_blob``)."""
    expanded = base64.b64decode(blob.removeprefix("ED25519-V3:"))
    public = nacl.bindings.crypto_scalarmult_ed25519_base_noclamp(expanded[:32])
    return onion_address_from_public_key(public)


class FakeTorControl:
    """Answers control commands roughly as tor 0.4.9 does, and records them."""

    def __init__(self, version: str = "0.4.9.11") -> None:
        self.version = version
        self.commands: list[str] = []
        self.onions: set[str] = set()
        self.client_auth: dict[str, str] = {}
        self.refuse: dict[str, tuple[int, str]] = {}  # command word -> (code, text)
        self.vanish_on: str | None = None  # command word that finds the connection gone
        self.events: dict[str, Callable[[str], None]] = {}
        self.transport = self
        self._disconnected: Deferred[None] = Deferred()

    # what TorTransport uses of txtorcon's TorControlProtocol
    async def get_info(self, key: str) -> dict[str, str]:
        answers = {
            "net/listeners/socks": '"127.0.0.1:9050"',
            "status/bootstrap-phase": 'NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"',
        }
        return {key: answers[key]}

    def add_event_listener(self, event: str, callback: Callable[[str], None]) -> Deferred[None]:
        self.events[event] = callback
        return succeed(None)

    def remove_event_listener(self, event: str, callback: object) -> Deferred[None]:
        self.events.pop(event, None)
        return succeed(None)

    def when_disconnected(self) -> Deferred[None]:
        return self._disconnected

    def loseConnection(self) -> None:
        if not self._disconnected.called:
            self._disconnected.callback(None)

    def queue_command(self, command: str) -> Deferred[str]:
        self.commands.append(command)
        word, *args = command.split()
        if word == self.vanish_on:
            self.loseConnection()
            return fail(TorDisconnectError(text="Tor connection terminated", error=None))
        if word in self.refuse:
            code, text = self.refuse[word]
            return fail(TorProtocolError(code, text))
        if word == "ADD_ONION":
            onion = _onion_of_key_blob(args[0])
            if onion in self.onions:
                return fail(TorProtocolError(550, "Onion address collision"))
            self.onions.add(onion)
            return succeed(f"ServiceID={onion}\n")
        if word == "DEL_ONION":
            if args[0] not in self.onions:
                return fail(TorProtocolError(552, "Unknown Onion Service id"))
            self.onions.discard(args[0])
            return succeed("")
        if word == "ONION_CLIENT_AUTH_ADD":
            self.client_auth[args[0]] = args[1]
            return succeed("")
        if word == "ONION_CLIENT_AUTH_REMOVE":
            self.client_auth.pop(args[0], None)
            return succeed("")
        raise AssertionError(f"unexpected command {word}")

    def sent(self, word: str) -> list[str]:
        return [c for c in self.commands if c.split()[0] == word]

    def upload(self, onion: str) -> None:
        self.events["HS_DESC"](f"UPLOADED {onion} UNKNOWN $AAAA hsdir-id")


class FakeTor:
    def __init__(self, protocol: FakeTorControl) -> None:
        self.protocol = protocol


class Harness:
    """A TorTransport on a Clock, getting its tors from a list of fakes."""

    def __init__(self, *fakes: FakeTorControl) -> None:
        self.clock = Clock()
        self.identity = Identity.generate()
        options = TorOptions(data_dir=Path("/nonexistent"), control="tcp:127.0.0.1:9051")
        self.transport = TorTransport(self.clock, self.identity, options)
        self.transport._local_port = 4242  # as listen() would set it
        self.fakes = list(fakes)
        self.events: list[dict[str, Any]] = []
        self.transport.add_status_listener(self.events.append)

        async def connect() -> FakeTor:
            return FakeTor(self.fakes.pop(0))

        self.transport._connect_tor = connect  # type: ignore[method-assign]

    async def start(self) -> None:
        await self.transport._start_session()

    def status(self) -> dict[str, Any]:
        return self.transport.status()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_identity_onion_gets_pow_when_tor_has_it() -> None:
    tor = FakeTorControl("0.4.9.11")
    harness = Harness(tor)
    await harness.start()
    (command,) = tor.sent("ADD_ONION")
    assert f"PoWDefensesEnabled=1 PoWQueueRate={POW_QUEUE_RATE}" in command
    assert harness.status()["pow"] == "on"
    assert harness.status()["state"] == "publishing"
    tor.upload(harness.identity.onion_address)
    assert harness.status()["state"] == "reachable"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_older_tor_publishes_without_pow_and_says_so() -> None:
    tor = FakeTorControl("0.4.7.16")
    harness = Harness(tor)
    await harness.start()
    (command,) = tor.sent("ADD_ONION")
    assert "PoW" not in command
    assert harness.status()["pow"] == "unsupported"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_endpoints_and_client_auth_reach_tor() -> None:
    tor = FakeTorControl()
    harness = Harness(tor)
    await harness.start()
    transport = harness.transport
    key, auth = EndpointKey.generate(), ClientAuthKey.generate()
    onion = await transport.add_endpoint(key, auth.public)
    assert onion == key.onion_address and onion in tor.onions
    command = tor.sent("ADD_ONION")[-1]
    assert "Flags=V3Auth,DiscardPK" in command and "PoW" not in command
    assert f"ClientAuthV3={client_auth_public_text(auth.public)}" in command
    assert await transport.add_endpoint(key, auth.public) == onion  # idempotent: no command
    assert len(tor.sent("ADD_ONION")) == 2
    other = ClientAuthKey.generate()  # a new key for the same endpoint replaces the old
    await transport.add_endpoint(key, other.public)
    assert tor.sent("DEL_ONION") == [f"DEL_ONION {onion}"]
    assert client_auth_public_text(other.public) in tor.sent("ADD_ONION")[-1]
    assert transport.endpoint_onions == {onion}

    contact_endpoint = EndpointKey.generate().onion_address
    await transport.add_client_auth(contact_endpoint + ".onion", auth.private)
    assert tor.client_auth == {contact_endpoint: client_auth_private_text(auth.private)}
    status = harness.status()
    assert (status["endpoints"], status["client_auth"]) == (1, 1)
    tor.upload(onion)
    assert harness.status()["endpoints_uploaded"] == 1

    await transport.remove_endpoint(onion)
    await transport.remove_client_auth(contact_endpoint)
    await transport.remove_endpoint(onion)  # no-op
    assert onion not in tor.onions and tor.client_auth == {}
    assert (harness.status()["endpoints"], harness.status()["client_auth"]) == (0, 0)
    with pytest.raises(AddressError):
        await transport.add_client_auth("not-an-onion", auth.private)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_refusals_are_clear_errors_that_leave_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tor = FakeTorControl()
    harness = Harness(tor)
    await harness.start()
    transport = harness.transport
    auth = ClientAuthKey.generate()
    tor.refuse["ONION_CLIENT_AUTH_ADD"] = (512, "Failed to decode x25519 private key")
    onion = EndpointKey.generate().onion_address
    with pytest.raises(TorCommandError, match="refused to add a contact's client-auth key: 512"):
        await transport.add_client_auth(onion, auth.private)
    assert harness.status()["client_auth"] == 0
    tor.refuse["ADD_ONION"] = (512, "Too many onion services")
    with pytest.raises(TorCommandError) as refused:
        await transport.add_endpoint(EndpointKey.generate(), auth.public)
    assert refused.value.code == 512
    assert "ED25519-V3" not in str(refused.value)  # never echoes the key
    assert transport.endpoint_onions == frozenset()
    del tor.refuse["ADD_ONION"]

    monkeypatch.setattr(tor_module, "MAX_ENDPOINTS", 2)
    keys = [EndpointKey.generate() for _ in range(3)]
    await transport.add_endpoint(keys[0], auth.public)
    await transport.add_endpoint(keys[1], auth.public)
    with pytest.raises(EndpointLimitError):
        await transport.add_endpoint(keys[2], auth.public)
    await transport.add_endpoint(keys[1], ClientAuthKey.generate().public)  # a change is fine
    assert len(transport.endpoint_onions) == 2


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_invisible_mode_withdraws_only_the_identity() -> None:
    tor = FakeTorControl()
    harness = Harness(tor)
    await harness.start()
    transport, identity = harness.transport, harness.identity.onion_address
    endpoint = await transport.add_endpoint(EndpointKey.generate(), bytes(32))
    tor.upload(identity)
    await transport.set_identity_published(False)
    assert tor.onions == {endpoint}
    status = harness.status()
    assert status["identity_published"] is False and status["state"] == "publishing"
    tor.upload(identity)  # a late event for the withdrawn onion changes nothing
    assert harness.status()["state"] == "publishing"
    tor.upload(endpoint)
    assert harness.status()["state"] == "reachable"
    await transport.remove_endpoint(endpoint)
    assert harness.status()["state"] == "hidden" and tor.onions == set()
    await transport.set_identity_published(True)
    assert tor.onions == {identity} and harness.status()["state"] == "publishing"
    assert any(e["identity_published"] is False for e in harness.events)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_a_new_tor_gets_everything_back() -> None:
    first, second = FakeTorControl(), FakeTorControl()
    harness = Harness(first, second)
    await harness.start()
    transport = harness.transport
    endpoint = await transport.add_endpoint(EndpointKey.generate(), bytes(32))
    contact_endpoint = EndpointKey.generate().onion_address
    await transport.add_client_auth(contact_endpoint, bytes([7]) * 32)
    await transport.set_identity_published(False)

    first.loseConnection()  # tor died
    assert harness.status()["state"] == "lost"
    assert transport.endpoint_for(contact_endpoint) is None
    # Asked for while tor is away: recorded, published when it is back.
    late = await transport.add_endpoint(EndpointKey.generate(), bytes(32))
    harness.clock.advance(RECONNECT_DELAYS[0])
    assert second.onions == {endpoint, late}  # the identity stays withdrawn
    assert second.client_auth == {contact_endpoint: client_auth_private_text(bytes([7]) * 32)}
    assert transport.endpoint_for(contact_endpoint) is not None
    assert harness.status()["state"] == "publishing"
    second.upload(late)
    assert harness.status()["state"] == "reachable"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_tor_vanishing_mid_command_is_not_an_error() -> None:
    first, second = FakeTorControl(), FakeTorControl()
    harness = Harness(first, second)
    await harness.start()
    first.vanish_on = "ADD_ONION"
    key = EndpointKey.generate()
    assert await harness.transport.add_endpoint(key, bytes(32)) == key.onion_address
    harness.clock.advance(RECONNECT_DELAYS[0])
    assert key.onion_address in second.onions


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_stop_takes_back_what_it_gave_tor() -> None:
    tor = FakeTorControl()
    harness = Harness(tor)
    await harness.start()
    transport = harness.transport
    endpoint = await transport.add_endpoint(EndpointKey.generate(), bytes(32))
    contact_endpoint = EndpointKey.generate().onion_address
    await transport.add_client_auth(contact_endpoint, bytes(32))
    await transport.stop()
    assert tor.onions == set() and tor.client_auth == {}
    assert f"DEL_ONION {endpoint}" in tor.commands
    assert tor._disconnected.called
