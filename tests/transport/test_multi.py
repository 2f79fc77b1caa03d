"""MultiTransport with fake members: order, fallback, reachability, status, endpoint onions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from zope.interface import implementer

from onionmsg.cli import _parser
from onionmsg.crypto.endpoint import EndpointKey
from onionmsg.crypto.identity import Identity
from onionmsg.session.link import Link
from onionmsg.store.db import Contact
from onionmsg.transport.base import EndpointTransport, Transport
from onionmsg.transport.multi import (
    DIAL_TIMEOUT,
    FallbackEndpoint,
    MultiTransport,
    MultiTransportError,
    OnionMultiTransport,
    combine,
)
from onionmsg.transport.stream import LinkProtocol

ALICE = Identity(bytes([1]) * 32)
BOB = Identity(bytes([2]) * 32)


def contact(i2p: str | None = None, tcp: str | None = None) -> Contact:
    return Contact(1, BOB.onion_address, "bob", tcp, 0, i2p_destination=i2p)


def link_protocol() -> LinkProtocol:
    return LinkProtocol(Link.initiator(ALICE, BOB.public_key, Clock()), lambda _p, _e: None)


class SingleFactory(Factory[Any]):
    def __init__(self, protocol: IProtocol) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: Any) -> IProtocol | None:
        return self.protocol_instance


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """Connects, refuses, or hangs until the test fires ``pending``."""

    def __init__(self, log: list[str], name: str, outcome: str) -> None:
        self._log, self._name, self._outcome = log, name, outcome
        self.pending: Deferred[None] | None = None
        self.factory: IProtocolFactory | None = None

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        self._log.append(self._name)
        self.factory = factory
        if self._outcome == "refuse":
            return fail(ConnectionRefusedError(f"{self._name} refused"))
        if self._outcome == "hang":
            self.pending = Deferred()
            return Deferred()  # no canceller: cancel() errbacks with CancelledError
        protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
        assert protocol is not None
        return succeed(protocol)


class FakeMember:
    """A transport that reaches a contact when ``reaches(contact)``; dials go to ``log``."""

    def __init__(
        self, name: str, reaches: Callable[[Contact], bool], outcome: str, log: list[str]
    ) -> None:
        self.name = name
        self._reaches = reaches
        self.outcome = outcome
        self.log = log
        self.endpoints: list[FakeEndpoint] = []
        self.factory: IProtocolFactory | None = None
        self.stopped = False
        self.listen_error: Exception | None = None
        self._status: dict[str, Any] = {"state": "starting", "reachable": False}
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    async def listen(self, factory: IProtocolFactory) -> str:
        if self.listen_error is not None:
            raise self.listen_error
        self.factory = factory
        return f"{self.name} here"

    def client_endpoint(self, contact: Contact) -> IStreamClientEndpoint | None:
        if not self._reaches(contact):
            return None
        endpoint = FakeEndpoint(self.log, self.name, self.outcome)
        self.endpoints.append(endpoint)
        return endpoint

    async def stop(self) -> None:
        self.stopped = True

    def status(self) -> dict[str, Any]:
        return dict(self._status)

    def add_status_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(listener)

    def change(self, **status: Any) -> None:
        self._status.update(status)
        for listener in self._listeners:
            listener(self.status())


class FakeTor(FakeMember):
    """A member with Tor's extras (EndpointTransport)."""

    def __init__(self, outcome: str, log: list[str]) -> None:
        super().__init__("tor", lambda _c: True, outcome, log)
        self.calls: list[tuple[str, Any]] = []

    async def add_endpoint(self, key: EndpointKey, authorized_client_x25519_pub: bytes) -> str:
        self.calls.append(("add_endpoint", authorized_client_x25519_pub))
        return key.onion_address

    async def remove_endpoint(self, onion: str) -> None:
        self.calls.append(("remove_endpoint", onion))

    async def add_client_auth(self, onion: str, x25519_private: bytes) -> None:
        self.calls.append(("add_client_auth", onion))

    async def remove_client_auth(self, onion: str) -> None:
        self.calls.append(("remove_client_auth", onion))

    async def set_identity_published(self, published: bool) -> None:
        self.calls.append(("set_identity_published", published))

    def contact_endpoint(
        self, contact: Contact, endpoint_onion: str
    ) -> IStreamClientEndpoint | None:
        endpoint = FakeEndpoint(self.log, f"tor:{endpoint_onion}", self.outcome)
        self.endpoints.append(endpoint)
        return endpoint


def has_i2p(c: Contact) -> bool:
    return c.i2p_destination is not None


def has_tcp(c: Contact) -> bool:
    return c.tcp_endpoint is not None


def run(deferred: Deferred[Any]) -> Any:
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, "did not complete synchronously"
    return results[0]


def dial(transport: Transport, target: Contact) -> tuple[LinkProtocol, Any]:
    endpoint = transport.client_endpoint(target)
    assert endpoint is not None
    protocol = link_protocol()
    return protocol, run(endpoint.connect(SingleFactory(protocol)))


def test_the_first_transport_that_can_reach_the_contact_is_used() -> None:
    log: list[str] = []
    tor = FakeTor("connect", log)
    i2p = FakeMember("i2p", has_i2p, "connect", log)
    multi = combine(Clock(), [tor, i2p])
    protocol, result = dial(multi, contact(i2p="DEST"))
    assert result is protocol and protocol.transport_name == "tor"
    assert log == ["tor"]  # i2p is not dialled when tor connects
    reordered = combine(Clock(), [i2p, tor])
    protocol, _ = dial(reordered, contact(i2p="DEST"))
    assert protocol.transport_name == "i2p" and log == ["tor", "i2p"]


def test_a_failed_dial_falls_back_to_the_next_transport() -> None:
    log: list[str] = []
    multi = combine(Clock(), [FakeTor("refuse", log), FakeMember("i2p", has_i2p, "connect", log)])
    protocol, result = dial(multi, contact(i2p="DEST"))
    assert result is protocol and protocol.transport_name == "i2p"
    assert log == ["tor", "i2p"]


def test_a_transport_that_cannot_reach_the_contact_is_not_dialled() -> None:
    log: list[str] = []
    i2p = FakeMember("i2p", has_i2p, "connect", log)
    tcp = FakeMember("tcp", has_tcp, "connect", log)
    multi = combine(Clock(), [i2p, tcp, FakeTor("refuse", log)])
    result = dial(multi, contact(tcp="127.0.0.1:1"))[1]
    assert isinstance(result, LinkProtocol) and result.transport_name == "tcp"
    assert log == ["tcp"] and not i2p.endpoints
    # Nothing can reach a contact with neither: the node's connector backs off.
    assert combine(Clock(), [i2p, tcp]).client_endpoint(contact()) is None


def test_when_every_transport_fails_the_error_names_each() -> None:
    log: list[str] = []
    multi = combine(Clock(), [FakeTor("refuse", log), FakeMember("i2p", has_i2p, "refuse", log)])
    failure = dial(multi, contact(i2p="DEST"))[1]
    assert failure.check(MultiTransportError)
    message = failure.getErrorMessage()
    assert message.startswith("every transport failed: tor: Connection was refused")
    assert "tor refused" in message and "; i2p: " in message and "i2p refused" in message


def test_a_hanging_dial_is_abandoned_for_the_next_transport_after_the_timeout() -> None:
    log: list[str] = []
    clock = Clock()
    tor = FakeTor("hang", log)
    multi = combine(clock, [tor, FakeMember("i2p", has_i2p, "connect", log)])
    endpoint = multi.client_endpoint(contact(i2p="DEST"))
    assert endpoint is not None
    protocol = link_protocol()
    results: list[Any] = []
    endpoint.connect(SingleFactory(protocol)).addBoth(results.append)
    clock.advance(DIAL_TIMEOUT - 1)
    assert results == [] and log == ["tor"]
    clock.advance(1)
    assert results == [protocol] and protocol.transport_name == "i2p"
    # A tor connection that turns up late gets no protocol: the link has its connection.
    late_factory = tor.endpoints[0].factory
    assert late_factory is not None and late_factory.buildProtocol(None) is None  # type: ignore[arg-type]
    assert clock.getDelayedCalls() == []


def test_cancelling_the_dial_stops_the_fallback() -> None:
    log: list[str] = []
    clock = Clock()
    multi = combine(clock, [FakeTor("hang", log), FakeMember("i2p", has_i2p, "connect", log)])
    endpoint = multi.client_endpoint(contact(i2p="DEST"))
    assert endpoint is not None
    results: list[Any] = []
    dialling = endpoint.connect(SingleFactory(link_protocol()))
    dialling.addBoth(results.append)
    dialling.cancel()
    assert len(results) == 1 and results[0].check(CancelledError)
    assert log == ["tor"] and clock.getDelayedCalls() == []


def test_every_member_listens_and_inbound_links_are_tagged() -> None:
    log: list[str] = []
    tor, i2p = FakeTor("connect", log), FakeMember("i2p", has_i2p, "connect", log)
    multi = combine(Clock(), [tor, i2p])
    built = link_protocol()
    listening = run(Deferred.fromCoroutine(multi.listen(SingleFactory(built))))
    assert listening == "tor here, i2p here"
    assert i2p.factory is not None
    inbound: Any = i2p.factory.buildProtocol(None)  # type: ignore[arg-type]
    assert inbound is built and built.transport_name == "i2p"
    assert multi.name == "tor,i2p"


def test_one_member_failing_to_start_stops_the_others_and_its_error_is_raised() -> None:
    log: list[str] = []
    tor, i2p = FakeTor("connect", log), FakeMember("i2p", has_i2p, "connect", log)
    i2p.listen_error = MultiTransportError("no SAM bridge")
    failure = run(Deferred.fromCoroutine(combine(Clock(), [tor, i2p]).listen(Factory())))
    assert failure.getErrorMessage() == "no SAM bridge"
    assert tor.stopped and i2p.stopped


def test_status_holds_each_members_status_under_its_name_and_listeners_hear_changes() -> None:
    log: list[str] = []
    tor, i2p = FakeTor("connect", log), FakeMember("i2p", has_i2p, "connect", log)
    multi = combine(Clock(), [tor, i2p])
    heard: list[dict[str, Any]] = []
    multi.add_status_listener(heard.append)
    assert multi.status() == {
        "state": "tor starting, i2p starting",
        "reachable": False,
        "transports": {
            "tor": {"state": "starting", "reachable": False},
            "i2p": {"state": "starting", "reachable": False},
        },
    }
    i2p.change(state="ready", reachable=True)
    assert heard[-1]["reachable"] is True  # contacts can reach us over one of them
    assert heard[-1]["state"] == "tor starting, i2p ready"
    assert heard[-1]["transports"]["i2p"] == {"state": "ready", "reachable": True}


def test_endpoint_onions_exist_only_with_a_tor_member() -> None:
    log: list[str] = []
    tor = FakeTor("connect", log)
    i2p, tcp = FakeMember("i2p", has_i2p, "connect", log), FakeMember("tcp", has_tcp, "x", log)
    with_tor = combine(Clock(), [i2p, tor])
    assert isinstance(with_tor, OnionMultiTransport) and isinstance(with_tor, EndpointTransport)
    without = combine(Clock(), [i2p, tcp])
    assert isinstance(without, MultiTransport) and not isinstance(without, EndpointTransport)
    assert combine(Clock(), [tor]) is tor  # one transport needs no composite


def test_endpoint_onion_calls_are_forwarded_to_the_tor_member() -> None:
    log: list[str] = []
    tor = FakeTor("connect", log)
    multi = combine(Clock(), [FakeMember("i2p", has_i2p, "connect", log), tor])
    assert isinstance(multi, EndpointTransport)
    key = EndpointKey.generate()
    assert run(Deferred.fromCoroutine(multi.add_endpoint(key, b"k" * 32))) == key.onion_address
    run(Deferred.fromCoroutine(multi.remove_endpoint("e1")))
    run(Deferred.fromCoroutine(multi.add_client_auth("e2", b"p" * 32)))
    run(Deferred.fromCoroutine(multi.remove_client_auth("e2")))
    run(Deferred.fromCoroutine(multi.set_identity_published(False)))
    assert tor.calls == [
        ("add_endpoint", b"k" * 32),
        ("remove_endpoint", "e1"),
        ("add_client_auth", "e2"),
        ("remove_client_auth", "e2"),
        ("set_identity_published", False),
    ]


def test_a_contacts_endpoint_onion_takes_tors_place_and_the_others_stay_as_fallback() -> None:
    log: list[str] = []
    tor = FakeTor("refuse", log)
    multi = combine(Clock(), [tor, FakeMember("i2p", has_i2p, "connect", log)])
    assert isinstance(multi, EndpointTransport)
    endpoint: Any = multi.contact_endpoint(contact(i2p="DEST"), "endpointonion")
    assert isinstance(endpoint, FallbackEndpoint)
    assert [name for name, _ in endpoint.routes] == ["tor", "i2p"]
    protocol = link_protocol()
    assert run(endpoint.connect(SingleFactory(protocol))) is protocol
    assert log == ["tor:endpointonion", "i2p"]  # never bob's identity onion
    assert protocol.transport_name == "i2p"


def test_a_composite_needs_two_different_members() -> None:
    log: list[str] = []
    i2p = FakeMember("i2p", has_i2p, "connect", log)
    with pytest.raises(ValueError):
        MultiTransport(Clock(), [i2p])
    with pytest.raises(ValueError):
        MultiTransport(Clock(), [i2p, FakeMember("i2p", has_i2p, "connect", log)])


def test_the_daemon_takes_a_list_of_known_transports_each_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = _parser()
    assert parser.parse_args(["daemon", "--transport", "i2p,tor"]).transport == "i2p,tor"
    for wrong in ("tor,tor", "tor,onion", "tor,"):
        with pytest.raises(SystemExit):
            parser.parse_args(["daemon", "--transport", wrong])
        assert "use tor, i2p or tcp, or several" in capsys.readouterr().err
