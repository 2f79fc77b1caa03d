"""Several transports at once (``daemon --transport tor,i2p``): one Transport to the node.

* The node listens on every member; each inbound link is tagged with the member it came
  through (``LinkProtocol.transport_name``), so the node can say which transport a link uses.
* To reach a contact, the members that can (tor: always; i2p: the contact has a signed I2P
  destination; tcp: the contact has a tcp endpoint) are tried in the user's order of
  preference, one after the other: the next member is dialled only when the previous dial
  failed or took longer than DIAL_TIMEOUT. The link that connects is tagged the same way.
* Endpoint onions (EndpointTransport) exist only with a tor member: ``combine`` returns an
  OnionMultiTransport then, which forwards them to that member; without one the node sees
  no EndpointTransport and has no invisible mode, exactly as with i2p or tcp alone.
* ``status()`` holds each member's own snapshot under its name, plus a summary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from onionmsg.crypto.endpoint import EndpointKey
from onionmsg.errors import OnionmsgError
from onionmsg.store.db import Contact
from onionmsg.transport.base import EndpointTransport, Transport
from onionmsg.transport.stream import LinkProtocol

log = Logger()

# A dial still pending after this long is abandoned for the next member: a tor dial to an
# onion whose service is gone can hang for tor's SocksTimeout (2 min) otherwise.
DIAL_TIMEOUT = 60.0


class MultiTransportError(OnionmsgError):
    """No member could be used (start-up), or every member's dial failed."""


def _tag(protocol: object, name: str) -> None:
    if isinstance(protocol, LinkProtocol):
        protocol.transport_name = name


class _TaggingFactory(Factory[Any]):
    """The node's inbound factory as one member sees it: links are tagged with its name."""

    noisy = False

    def __init__(self, inner: IProtocolFactory, name: str) -> None:
        self._inner = inner
        self._name = name

    def buildProtocol(self, addr: IAddress | None) -> IProtocol | None:
        protocol = self._inner.buildProtocol(cast(IAddress, addr))
        _tag(protocol, self._name)
        return protocol

    def doStart(self) -> None:
        self._inner.doStart()

    def doStop(self) -> None:
        self._inner.doStop()


class _AttemptFactory(Factory[Any]):
    """One member's dial: once abandoned (timed out), a late connection gets no protocol,
    so the link is never handed two connections."""

    noisy = False

    def __init__(self, inner: IProtocolFactory) -> None:
        self._inner = inner
        self.abandoned = False

    def buildProtocol(self, addr: IAddress | None) -> IProtocol | None:
        return None if self.abandoned else self._inner.buildProtocol(cast(IAddress, addr))


@implementer(IStreamClientEndpoint)
class FallbackEndpoint:
    """Dial ``routes`` in order until one connects; the link is tagged with its name."""

    def __init__(
        self,
        clock: IReactorTime,
        routes: Sequence[tuple[str, IStreamClientEndpoint]],
        timeout: float = DIAL_TIMEOUT,
    ) -> None:
        self._clock = clock
        self.routes = list(routes)
        self._timeout = timeout

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: IProtocolFactory) -> IProtocol:
        errors: list[str] = []
        for name, endpoint in self.routes:
            attempt_factory = _AttemptFactory(factory)
            attempt: Deferred[IProtocol] = maybeDeferred(endpoint.connect, attempt_factory)
            timer = self._clock.callLater(self._timeout, attempt.cancel)
            try:
                protocol = await attempt
            except CancelledError:
                attempt_factory.abandoned = True
                if timer.active():
                    raise  # our caller cancelled, not the timer: stop trying
                errors.append(f"{name}: no connection after {self._timeout:.0f} s")
            except Exception as error:  # any member failure means: try the next one
                attempt_factory.abandoned = True
                errors.append(f"{name}: {error}")
            else:
                _tag(protocol, name)
                return protocol
            finally:
                if timer.active():
                    timer.cancel()
            log.debug("dial over {name} failed; trying the next transport", name=name)
        raise MultiTransportError("every transport failed: " + "; ".join(errors))


class MultiTransport:
    """The members, in the user's order of preference."""

    def __init__(self, clock: IReactorTime, members: Sequence[Transport]) -> None:
        names = [member.name for member in members]
        if len(members) < 2 or len(set(names)) != len(names):
            raise ValueError(f"a MultiTransport needs two or more different members: {names}")
        self._clock = clock
        self.members = list(members)
        self.name = ",".join(names)

    async def listen(self, factory: IProtocolFactory) -> str:
        """Listen on every member at once (i2pd takes ~20 s to create a session, tor to
        publish); if any fails, the others are stopped again and its error is raised."""
        starting = [
            Deferred.fromCoroutine(member.listen(_TaggingFactory(factory, member.name)))
            for member in self.members
        ]
        listening: list[str] = []
        errors: list[Exception] = []
        for started in starting:  # all run at once; each is awaited to the end
            try:
                listening.append(await started)
            except Exception as error:
                errors.append(error)
        if errors:
            for member in self.members:
                try:
                    await member.stop()
                except Exception as error:  # the start-up error is the one to report
                    log.warn("stopping {name} failed: {error}", name=member.name, error=error)
            raise errors[0]
        return ", ".join(listening)

    def client_endpoint(self, contact: Contact) -> IStreamClientEndpoint | None:
        return self._fallback(
            [(member.name, member.client_endpoint(contact)) for member in self.members]
        )

    def _fallback(
        self, candidates: Sequence[tuple[str, IStreamClientEndpoint | None]]
    ) -> IStreamClientEndpoint | None:
        routes = [(name, endpoint) for name, endpoint in candidates if endpoint is not None]
        if not routes:
            return None  # no member can reach this contact now: the connector backs off
        return FallbackEndpoint(self._clock, routes)

    async def stop(self) -> None:
        errors: list[BaseException] = []
        for member in self.members:
            try:
                await member.stop()
            except Exception as error:
                errors.append(error)
        if errors:
            raise errors[0]

    def status(self) -> dict[str, Any]:
        """Each member's snapshot under its name; ``reachable`` if any member is (contacts
        can reach us); ``state`` sums the members up for one-line displays."""
        statuses = {member.name: member.status() for member in self.members}
        return {
            "state": ", ".join(
                f"{name} {status.get('state', '?')}" for name, status in statuses.items()
            ),
            "reachable": any(status.get("reachable") is True for status in statuses.values()),
            "transports": statuses,
        }

    def add_status_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        for member in self.members:
            member.add_status_listener(lambda _status: listener(self.status()))


class OnionMultiTransport(MultiTransport):
    """A MultiTransport with a tor member: endpoint onions and invisible mode go to it."""

    def __init__(self, clock: IReactorTime, members: Sequence[Transport]) -> None:
        super().__init__(clock, members)
        onions = [m for m in members if isinstance(m, EndpointTransport)]
        if len(onions) != 1:
            raise ValueError("an OnionMultiTransport needs exactly one EndpointTransport member")
        self._onions: EndpointTransport = onions[0]
        self._onion_member: Transport = onions[0]

    async def add_endpoint(self, key: EndpointKey, authorized_client_x25519_pub: bytes) -> str:
        return await self._onions.add_endpoint(key, authorized_client_x25519_pub)

    async def remove_endpoint(self, onion: str) -> None:
        await self._onions.remove_endpoint(onion)

    async def add_client_auth(self, onion: str, x25519_private: bytes) -> None:
        await self._onions.add_client_auth(onion, x25519_private)

    async def remove_client_auth(self, onion: str) -> None:
        await self._onions.remove_client_auth(onion)

    async def set_identity_published(self, published: bool) -> None:
        await self._onions.set_identity_published(published)

    def contact_endpoint(
        self, contact: Contact, endpoint_onion: str
    ) -> IStreamClientEndpoint | None:
        """The contact's endpoint onion in the tor member's place (never their identity
        onion), the other members as they would reach the contact anyway."""
        return self._fallback(
            [
                (
                    member.name,
                    self._onions.contact_endpoint(contact, endpoint_onion)
                    if member is self._onion_member
                    else member.client_endpoint(contact),
                )
                for member in self.members
            ]
        )


def combine(clock: IReactorTime, members: Sequence[Transport]) -> Transport:
    """One transport for the node: the member itself if there is one, else a composite
    that is an EndpointTransport exactly when a member is."""
    if len(members) == 1:
        return members[0]
    onions = [member for member in members if isinstance(member, EndpointTransport)]
    if len(onions) > 1:
        raise ValueError("at most one member may publish endpoint onions")
    if onions:
        return OnionMultiTransport(clock, members)
    return MultiTransport(clock, members)
