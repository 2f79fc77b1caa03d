"""What a transport gives the node: a listener and a way to reach a contact.

tcp.py (development and tests), tor.py and i2p.py implement this; the node never
knows which one it runs on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint

from onionmsg.store.db import Contact


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
