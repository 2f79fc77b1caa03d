"""What a transport gives the node: a listener and a way to reach a contact.

tcp.py (development and tests), tor.py and i2p.py implement this, and multi.py combines
several of them into one; the node never knows which one it runs on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from twisted.internet.interfaces import IProtocolFactory, IReactorTime, IStreamClientEndpoint
from twisted.internet.task import deferLater

from onionmsg.crypto.endpoint import EndpointKey
from onionmsg.errors import OnionmsgError
from onionmsg.store.db import Contact

# Waits between attempts to get a lost router back (tor's control port, i2pd's SAM).
RECONNECT_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


async def reconnect(
    reactor: IReactorTime,
    *,
    connected: Callable[[], bool],
    stopping: Callable[[], bool],
    start_session: Callable[[], Awaitable[None]],
    back: Callable[[], None],
    failed: Callable[[OnionmsgError], None],
) -> None:
    """Try ``start_session`` after each of RECONNECT_DELAYS (then every last one) until it
    works or the transport stops; ``failed`` hears each clear failure on the way."""
    attempt = 0
    while not stopping() and not connected():
        delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
        await deferLater(reactor, delay, lambda: None)
        attempt += 1
        if stopping():
            return
        try:
            await start_session()
            back()
        except OnionmsgError as error:
            failed(error)


class Transport(Protocol):
    name: str

    async def listen(self, factory: IProtocolFactory) -> str:
        """Start accepting links; returns a description of where (for status output)."""
        ...

    def client_endpoint(self, contact: Contact) -> IStreamClientEndpoint | None:
        """How to reach this contact, or None if this transport cannot."""
        ...

    async def stop(self) -> None:
        """Stop listening and release what the transport holds."""
        ...

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot of the transport's state (tor bootstrap, reachability)."""
        ...

    def add_status_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener`` with a new ``status()`` whenever it changes in a way users see."""
        ...


@runtime_checkable
class EndpointTransport(Protocol):
    """A transport that can also publish per-contact endpoint onions with client
    authorisation and withdraw the identity onion (Tor: transport/tor.py)."""

    async def add_endpoint(self, key: EndpointKey, authorized_client_x25519_pub: bytes) -> str:
        """Publish an endpoint onion only the holder of the matching X25519 key can reach."""
        ...

    async def remove_endpoint(self, onion: str) -> None: ...

    async def add_client_auth(self, onion: str, x25519_private: bytes) -> None:
        """Let our dials reach a contact's endpoint onion."""
        ...

    async def remove_client_auth(self, onion: str) -> None: ...

    async def set_identity_published(self, published: bool) -> None:
        """Withdraw (False: invisible) or publish the identity onion."""
        ...

    def contact_endpoint(
        self, contact: Contact, endpoint_onion: str
    ) -> IStreamClientEndpoint | None:
        """How to reach a contact who gave us an endpoint onion: by that onion, never by
        the identity onion (transport/multi.py also tries the contact's other transports)."""
        ...
