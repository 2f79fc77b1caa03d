"""The I2P transport: links as I2P streams, through a router's SAM v3 bridge.

* One *session* per daemon (``SESSION CREATE STYLE=STREAM``) on a control connection that
  stays open: the session, and so our destination's presence on I2P, lives exactly as long
  as that connection. The destination's private key is generated once (``DEST GENERATE
  SIGNATURE_TYPE=7``, Ed25519) and kept in the encrypted store, so the destination is the
  same after every restart.
* Outgoing links: each is a fresh SAM connection doing ``STREAM CONNECT``; once the router
  answers OK, the socket *is* the stream and is handed to the link protocol.
* Incoming links: a few SAM connections wait in ``STREAM ACCEPT``; each accepted one names
  the caller's destination, then carries the stream. Accepting over SAM connections (rather
  than ``STREAM FORWARD`` to a local port) works wherever the SAM port is reachable, even
  through a relay into another network namespace.
* The caller's destination proves nothing: every link still runs the Noise handshake, so a
  peer's identity is proven exactly as over Tor.
* If the router goes away (i2pd restarts), the session is re-created with the same key,
  with backoff; status listeners see ``lost`` then ``ready``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from onionmsg.crypto.identity import Identity
from onionmsg.errors import OnionmsgError
from onionmsg.store.db import Contact
from onionmsg.transport.base import reconnect
from onionmsg.transport.sam import (
    SIGNATURE_TYPE_ED25519,
    Replied,
    SAMConnection,
    SAMError,
    SAMEvent,
    StreamData,
    StreamOpened,
    b32_address,
    public_destination,
)
from onionmsg.transport.tcp import EndpointError, parse_host_port

log = Logger()

DEFAULT_SAM = "127.0.0.1:7656"
ACCEPTORS = 2  # SAM connections waiting in STREAM ACCEPT at any time
CONNECT_TIMEOUT = 120.0  # a lease set lookup on the real network can take a while
ACCEPT_RETRY_DELAY = 1.0


class I2PError(OnionmsgError):
    """The I2P router could not be used."""


class KeyStore(TypingProtocol):
    """Where the destination's private key lives (the encrypted store)."""

    def i2p_private_key(self) -> str | None: ...

    def set_i2p_private_key(self, private_key: str) -> None: ...


@dataclass(frozen=True)
class I2POptions:
    """How to reach the router and how to build tunnels.

    ``tunnel_length`` is the hop count of each inbound and outbound tunnel (I2P's default is
    3; 0 is only for a private test router, where it is the only thing that works).
    """

    sam: str = DEFAULT_SAM
    tunnel_length: int = 3
    tunnel_quantity: int = 2

    def session_options(self) -> dict[str, str]:
        length, quantity = str(self.tunnel_length), str(self.tunnel_quantity)
        return {
            "inbound.length": length,
            "outbound.length": length,
            "inbound.quantity": quantity,
            "outbound.quantity": quantity,
            # i2pd 2.45.1 misparses the LeaseSet2 it publishes by default; the classic
            # LeaseSet works with every router version.
            "i2cp.leaseSetType": "1",
        }


def sam_endpoint(reactor: Any, text: str) -> IStreamClientEndpoint:
    """``HOST:PORT`` or ``unix:/PATH`` (a relay, e.g. into a network namespace)."""
    if text.startswith("unix:"):
        return UNIXClientEndpoint(reactor, text.removeprefix("unix:"), timeout=10)
    try:
        host, port = parse_host_port(text)
    except EndpointError:
        raise I2PError(f"{text[:80]!r} is not a SAM address: use HOST:PORT or unix:/PATH") from None
    return TCP4ClientEndpoint(reactor, host, port, timeout=10)


@dataclass(frozen=True)
class I2PStatus:
    state: str = "starting"  # starting, connecting, creating session, ready, lost, stopped
    router_reachable: bool = False  # the SAM bridge answered HELLO
    sam_version: str = ""
    destination: str = ""  # our .b32.i2p address
    error: str | None = None

    @property
    def reachable(self) -> bool:
        # SESSION CREATE answers only once the router has our tunnels and lease set ready.
        return self.state == "ready"

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "router_reachable": self.router_reachable,
            "session_ready": self.reachable,
            "tunnels_ready": self.reachable,
            "reachable": self.reachable,
            "sam_version": self.sam_version,
            "destination": self.destination,
            "error": self.error,
        }


# -- SAM connections ------------------------------------------------------------------------


class _SAMControl(Protocol):
    """A SAM connection used for commands: ``await command(...)`` returns the reply."""

    def __init__(self) -> None:
        self.sam = SAMConnection()
        self._waiting: list[Deferred[Replied]] = []
        self.closed: Deferred[None] = Deferred()
        self._hello: Deferred[Replied] = Deferred()
        self._waiting.append(self._hello)

    async def ready(self) -> str:
        await self._hello
        return self.sam.version or ""

    async def command(self, verb: str, **options: str) -> Replied:
        if self.transport is None or self.closed.called:
            raise I2PError("the SAM connection is closed")
        self.sam.request(verb, **options)
        waiting: Deferred[Replied] = Deferred()
        self._waiting.append(waiting)
        self._flush()
        return await waiting

    def connectionMade(self) -> None:
        self._flush()

    def dataReceived(self, data: bytes) -> None:
        try:
            events = self.sam.receive_data(data)
        except SAMError as error:
            self._fail(error)
            return
        for event in events:
            if isinstance(event, Replied) and self._waiting:
                self._waiting.pop(0).callback(event)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._fail(I2PError("the I2P router closed the SAM connection"))
        if not self.closed.called:
            self.closed.callback(None)

    def _fail(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, []
        for deferred in waiting:
            deferred.errback(Failure(error))
        if self.transport is not None:
            self.transport.loseConnection()

    def _flush(self) -> None:
        out = self.sam.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)


class _SAMStream(Protocol):
    """A SAM connection that becomes one stream (CONNECT or ACCEPT), then carries a link.

    ``on_open(peer)`` returns the protocol that gets the stream's bytes (or None to drop
    it); ``on_error`` hears why the stream never opened.
    """

    def __init__(
        self,
        verb: str,
        options: dict[str, str],
        on_open: Callable[[str | None, _SAMStream], IProtocol | None],
        on_error: Callable[[Exception], None],
    ) -> None:
        self.sam = SAMConnection()
        self._verb = verb
        self._options = options
        self._on_open = on_open
        self._on_error = on_error
        self._inner: IProtocol | None = None
        self._done = False

    def connectionMade(self) -> None:
        self._flush()

    def dataReceived(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.dataReceived(data)
            return
        try:
            events = self.sam.receive_data(data)
            for event in events:
                self._on_event(event)
                if self.transport is None:
                    return
        except SAMError as error:
            self._error(error)

    def _on_event(self, event: SAMEvent) -> None:
        if isinstance(event, Replied) and event.command == "HELLO VERSION":
            # i2pd reads the HELLO on its own: the command waits for its answer.
            self.sam.request(self._verb, **self._options)
            self._flush()
        elif isinstance(event, StreamOpened):
            self._done = True
            self._inner = self._on_open(event.peer, self)
            assert self.transport is not None  # bytes arrive only on a live connection
            if self._inner is None:
                self.transport.loseConnection()
            else:
                self._inner.makeConnection(self.transport)
        elif isinstance(event, StreamData) and self._inner is not None:
            self._inner.dataReceived(event.data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._inner is not None:
            self._inner.connectionLost(reason)  # type: ignore[arg-type]
        elif not self._done:
            self._error(I2PError(f"the I2P router closed the connection during {self._verb}"))

    def _error(self, error: Exception) -> None:
        if self._done:
            return
        self._done = True
        self._on_error(error)
        if self.transport is not None:
            self.transport.loseConnection()

    def _flush(self) -> None:
        out = self.sam.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)


@implementer(IAddress)
@dataclass(frozen=True)
class I2PAddress:
    destination: str


@implementer(IStreamClientEndpoint)
class SAMStreamEndpoint:
    """Dial an I2P destination: STREAM CONNECT on a fresh SAM connection."""

    def __init__(self, reactor: Any, sam: IStreamClientEndpoint, session_id: str, destination: str):
        self._reactor = reactor
        self._sam = sam
        self._session_id = session_id
        self._destination = destination

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        result: Deferred[IProtocol] = Deferred()

        def opened(_peer: str | None, stream: _SAMStream) -> IProtocol | None:
            protocol = factory.buildProtocol(I2PAddress(self._destination))
            if protocol is None:
                return None
            timeout.cancel()
            result.callback(protocol)
            return protocol

        def failed(error: Exception) -> None:
            if timeout.active():
                timeout.cancel()
            if not result.called:
                result.errback(Failure(error))

        stream = _SAMStream(
            "STREAM CONNECT",
            {"ID": self._session_id, "DESTINATION": self._destination, "SILENT": "false"},
            opened,
            failed,
        )

        def too_slow() -> None:
            stream._error(I2PError(f"no I2P stream after {CONNECT_TIMEOUT:.0f} s"))

        timeout = self._reactor.callLater(CONNECT_TIMEOUT, too_slow)
        connecting = connectProtocol(self._sam, stream)

        def not_connected(failure: Failure) -> None:
            failed(I2PError(f"cannot reach the I2P router's SAM port: {failure.getErrorMessage()}"))

        connecting.addErrback(not_connected)
        return result


# -- the transport --------------------------------------------------------------------------


class I2PTransport:
    name = "i2p"

    def __init__(
        self, reactor: Any, identity: Identity, keys: KeyStore, options: I2POptions
    ) -> None:
        self._reactor = reactor
        self._identity = identity
        self._keys = keys
        self._options = options
        self._sam = sam_endpoint(reactor, options.sam)
        self._status = I2PStatus()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._factory: IProtocolFactory | None = None
        self._control: _SAMControl | None = None
        self._session_id = ""
        self._destination = ""
        self._acceptors: set[_SAMStream] = set()
        self._stopping = False
        self._reconnecting = False

    # -- Transport interface -----------------------------------------------------------------

    async def listen(self, factory: IProtocolFactory) -> str:
        self._factory = factory
        await self._start_session()
        return f"i2p {self._status.destination}"

    def client_endpoint(self, contact: Contact) -> IStreamClientEndpoint | None:
        # i2pd refuses a stream from a session to itself, so no loop link over I2P.
        if self._control is None or contact.i2p_destination is None:
            return None
        if contact.i2p_destination == self._destination:
            return None
        return SAMStreamEndpoint(
            self._reactor, self._sam, self._session_id, contact.i2p_destination
        )

    async def stop(self) -> None:
        self._stopping = True
        for acceptor in list(self._acceptors):
            if acceptor.transport is not None:
                acceptor.transport.loseConnection()
        control, self._control = self._control, None
        if control is not None and control.transport is not None:
            control.transport.loseConnection()
            await control.closed
        self._set(state="stopped")

    def status(self) -> dict[str, Any]:
        return self._status.as_dict()

    def add_status_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(listener)

    @property
    def destination(self) -> str:
        """Our public destination (base64), once the session exists."""
        return self._destination

    # -- the session -------------------------------------------------------------------------

    async def _connect(self) -> _SAMControl:
        control = _SAMControl()
        try:
            await connectProtocol(self._sam, control)
        except (ConnectError, OSError) as error:
            raise I2PError(
                f"cannot reach the I2P router's SAM port at {self._options.sam}: {error}"
            ) from None
        try:
            version = await control.ready()
        except BaseException:
            if control.transport is not None:
                control.transport.loseConnection()
            raise
        self._set(router_reachable=True, sam_version=version)
        return control

    async def _private_key(self) -> str:
        key = self._keys.i2p_private_key()
        if key is not None:
            return key
        control = await self._connect()
        try:
            reply = await control.command(
                "DEST GENERATE", SIGNATURE_TYPE=str(SIGNATURE_TYPE_ED25519)
            )
        finally:
            if control.transport is not None:
                control.transport.loseConnection()
        key = reply.reply.values["PRIV"]
        public_destination(key)  # refuse to store something that is no key
        self._keys.set_i2p_private_key(key)
        log.info("created this user's I2P destination")
        return key

    async def _start_session(self) -> None:
        self._set(state="connecting", error=None)
        try:
            private_key = await self._private_key()
            destination = public_destination(private_key)
            control = await self._connect()
        except SAMError as error:
            raise I2PError(str(error)) from None
        session_id = "onionmsg-" + secrets.token_hex(6)
        self._set(state="creating session", destination=b32_address(destination))
        try:
            await control.command(
                "SESSION CREATE",
                STYLE="STREAM",
                ID=session_id,
                DESTINATION=private_key,
                SIGNATURE_TYPE=str(SIGNATURE_TYPE_ED25519),
                **self._options.session_options(),
            )
        except SAMError as error:
            if control.transport is not None:
                control.transport.loseConnection()
            raise I2PError(str(error)) from None
        except BaseException:
            if control.transport is not None:
                control.transport.loseConnection()
            raise
        self._control, self._session_id, self._destination = control, session_id, destination
        control.closed.addCallback(self._on_session_lost, control)
        for _ in range(ACCEPTORS):
            self._accept()
        self._set(state="ready", error=None)

    def _on_session_lost(self, _result: object, control: _SAMControl) -> None:
        if self._control is control:
            self._control = None
        if self._stopping:
            return
        self._set(state="lost", router_reachable=False, error="lost the I2P router; reconnecting")
        log.warn("lost the connection to the I2P router; reconnecting")
        if not self._reconnecting:
            self._reconnecting = True
            Deferred.fromCoroutine(self._reconnect()).addErrback(self._reconnect_failed)

    async def _reconnect(self) -> None:
        try:
            await reconnect(
                self._reactor,
                connected=lambda: self._control is not None,
                stopping=self._stopped,
                start_session=self._start_session,
                back=lambda: log.info("the I2P router is back; our destination is online again"),
                failed=lambda error: self._set(state="lost", error=str(error)),
            )
        finally:
            self._reconnecting = False

    def _stopped(self) -> bool:
        return self._stopping

    def _reconnect_failed(self, failure: Failure) -> None:
        log.failure("reconnecting to the I2P router failed", failure)

    # -- accepting ---------------------------------------------------------------------------

    def _accept(self) -> None:
        """Keep one more SAM connection waiting for an incoming stream."""
        control = self._control
        if control is None or self._stopping or self._factory is None:
            return
        factory = self._factory

        def opened(peer: str | None, stream: _SAMStream) -> IProtocol | None:
            self._acceptors.discard(stream)
            self._accept()
            return factory.buildProtocol(I2PAddress(peer or ""))

        def failed(error: Exception) -> None:
            self._acceptors.discard(stream)
            if self._stopping or self._control is not control:
                return  # the session is gone; a new one brings its own acceptors
            log.warn("waiting for I2P streams failed ({error}); retrying", error=error)
            self._reactor.callLater(ACCEPT_RETRY_DELAY, self._accept)

        stream = _SAMStream(
            "STREAM ACCEPT", {"ID": self._session_id, "SILENT": "false"}, opened, failed
        )
        self._acceptors.add(stream)
        connectProtocol(self._sam, stream).addErrback(
            lambda failure: failed(I2PError(failure.getErrorMessage()))
        )

    # -- status ------------------------------------------------------------------------------

    def _set(self, **changes: Any) -> None:
        old, new = self._status, replace(self._status, **changes)
        self._status = new
        if old != new:
            for listener in list(self._listeners):
                listener(new.as_dict())
