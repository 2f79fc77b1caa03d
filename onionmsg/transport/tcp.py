"""Plain TCP on loopback: the development transport (no anonymity whatsoever)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorTCP,
    IStreamClientEndpoint,
)

from onionmsg.errors import OnionmsgError
from onionmsg.store.db import Contact


class EndpointError(OnionmsgError, ValueError):
    """A HOST:PORT endpoint is malformed."""


def parse_host_port(text: str, *, allow_any_port: bool = False) -> tuple[str, int]:
    """HOST:PORT; port 0 ("any free port") only where we listen."""
    host, sep, port_text = text.rpartition(":")
    lowest = 0 if allow_any_port else 1
    if not sep or not host or not port_text.isdigit() or not lowest <= int(port_text) < 65536:
        raise EndpointError(f"{text[:80]!r} is not HOST:PORT (for example 127.0.0.1:7001)")
    return host, int(port_text)


class TCPTransport:
    name = "tcp"

    def __init__(self, reactor: IReactorTCP, listen: str) -> None:
        self._reactor = reactor
        self._host, self._port = parse_host_port(listen, allow_any_port=True)
        self._listening: IListeningPort | None = None

    async def listen(self, factory: IProtocolFactory) -> str:
        endpoint = TCP4ServerEndpoint(self._reactor, self._port, interface=self._host)
        self._listening = await endpoint.listen(factory)
        address = self._listening.getHost()
        assert isinstance(address, IPv4Address)
        return f"tcp {address.host}:{address.port}"

    def client_endpoint(self, contact: Contact) -> IStreamClientEndpoint | None:
        if contact.tcp_endpoint is None:
            return None
        host, port = parse_host_port(contact.tcp_endpoint)
        return TCP4ClientEndpoint(self._reactor, host, port, timeout=30)

    def add_status_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """A tcp listener has no progress to report."""

    def status(self) -> dict[str, Any]:
        return {"state": "listening" if self._listening is not None else "stopped"}

    async def stop(self) -> None:
        if self._listening is not None:
            await maybeDeferred(self._listening.stopListening)
            self._listening = None
