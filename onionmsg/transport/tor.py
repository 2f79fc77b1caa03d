"""The Tor transport: the only module that talks to tor.

* Getting a tor (as magic-wormhole's tor_manager does): ``--tor-control ENDPOINT`` connects
  to a running tor's control port (cookie or password auth), ``--tor-control auto`` tries
  the usual control ports in order, and otherwise a private tor is launched with a
  persistent DataDirectory under the user's home.
* The user's onion service is created with ADD_ONION from the identity key (so the
  published address is the identity's address), ``Flags=DiscardPK`` and ``MaxStreams``.
  It is bound to our control connection, so it disappears when the daemon does, and it
  is re-created whenever tor restarts or the control connection drops.
* Outgoing links go through tor's SOCKS port with txtorcon's TorClientEndpoint. Every
  contact is a different onion service, and tor never shares a rendezvous circuit
  between two onion services, so streams to two contacts never share a circuit.
* Bootstrap and publication progress are reported to status listeners (the daemon's log,
  the node's subscribers).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import txtorcon
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    UNIXClientEndpoint,
    clientFromString,
)
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from onionmsg.crypto.identity import Identity
from onionmsg.errors import OnionmsgError
from onionmsg.store.db import Contact

log = Logger()

ONION_PORT = 80  # the virtual port of every onionmsg onion service
MAX_STREAMS = 64  # per rendezvous circuit; a contact needs one
MIN_TOR_VERSION = (0, 4, 5)
RECONNECT_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


class TorError(OnionmsgError):
    """Tor could not be used."""


@dataclass(frozen=True)
class TorOptions:
    """How to get a tor. ``control=None`` launches one; ``"auto"`` tries the usual ports."""

    data_dir: Path
    control: str | None = None
    password_file: Path | None = None
    tor_binary: str | None = None


@dataclass(frozen=True)
class TorStatus:
    """An immutable snapshot for the daemon's status, the UI and logs."""

    state: str = "starting"  # starting, connecting, bootstrapping, publishing, reachable, lost
    bootstrap_percent: int = 0
    bootstrap_phase: str = ""
    uploads: int = 0
    error: str | None = None
    tor_version: str = ""

    @property
    def reachable(self) -> bool:
        return self.state == "reachable"

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "bootstrap_percent": self.bootstrap_percent,
            "bootstrap_phase": self.bootstrap_phase,
            "reachable": self.reachable,
            "descriptor_uploads": self.uploads,
            "error": self.error,
            "tor_version": self.tor_version,
        }


_BOOTSTRAP = re.compile(r'PROGRESS=(\d+).*?SUMMARY="([^"]*)"')


def parse_bootstrap(text: str) -> tuple[int, str] | None:
    """(percent, summary) from a ``status/bootstrap-phase`` line or a BOOTSTRAP event."""
    match = _BOOTSTRAP.search(text)
    if match is None:
        return None
    return int(match.group(1)), match.group(2)


def parse_tor_version(text: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
    if match is None:
        raise TorError(f"cannot understand tor's version {text[:40]!r}")
    return tuple(int(part) for part in match.groups())


def control_endpoint(reactor: Any, text: str) -> IStreamClientEndpoint:
    """``tcp:HOST:PORT``, ``unix:/path`` or any Twisted client endpoint string."""
    if text.startswith("unix:") and "path=" not in text:
        return UNIXClientEndpoint(reactor, text.removeprefix("unix:"))
    try:
        endpoint: IStreamClientEndpoint = clientFromString(reactor, text)
    except (ValueError, TypeError, KeyError) as error:
        raise TorError(f"{text[:80]!r} is not a control endpoint ({error})") from None
    return endpoint


def socks_endpoint(reactor: Any, listeners: str) -> IStreamClientEndpoint:
    """The first SOCKS listener from ``GETINFO net/listeners/socks``."""
    for item in listeners.split():
        item = item.strip('"')
        if item.startswith("unix:"):
            return UNIXClientEndpoint(reactor, item.removeprefix("unix:"))
        host, _, port = item.rpartition(":")
        if host and port.isdigit():
            return TCP4ClientEndpoint(reactor, host.strip("[]"), int(port))
    raise TorError("tor has no SOCKS port: onionmsg needs one to reach contacts")


@dataclass
class _Session:
    """One control connection to one tor, with our onion service on it."""

    tor: Any
    socks: IStreamClientEndpoint
    service_id: str = ""
    listeners: list[tuple[str, Callable[[str], None]]] = field(default_factory=list)


class TorTransport:
    name = "tor"

    def __init__(
        self,
        reactor: Any,
        identity: Identity,
        options: TorOptions,
    ) -> None:
        self._reactor = reactor
        self._identity = identity
        self._options = options
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._status = TorStatus()
        self._port: IListeningPort | None = None
        self._local_port = 0
        self._session: _Session | None = None
        self._stopping = False
        self._reconnecting = False

    # -- Transport interface -----------------------------------------------------------------

    async def listen(self, factory: IProtocolFactory) -> str:
        # Tor forwards the onion's virtual port here; nothing else can reach it usefully,
        # and every link still has to pass the handshake.
        endpoint = TCP4ServerEndpoint(self._reactor, 0, interface="127.0.0.1")
        self._port = await endpoint.listen(factory)
        address = self._port.getHost()
        assert isinstance(address, IPv4Address)
        self._local_port = address.port
        try:
            await self._start_session()
        except BaseException:
            await maybeDeferred(self._port.stopListening)
            raise
        return f"tor {self._identity.onion_address}.onion"

    def client_endpoint(self, contact: Contact) -> IStreamClientEndpoint | None:
        if self._session is None:
            return None  # tor is (re)starting: the connector backs off and retries
        endpoint: IStreamClientEndpoint = txtorcon.TorClientEndpoint(
            contact.address + ".onion",
            ONION_PORT,
            socks_endpoint=self._session.socks,
            reactor=self._reactor,
        )
        return endpoint

    async def stop(self) -> None:
        self._stopping = True
        session, self._session = self._session, None
        if session is not None:
            await self._close_session(session)
        if self._port is not None:
            await maybeDeferred(self._port.stopListening)
            self._port = None

    def status(self) -> dict[str, Any]:
        return self._status.as_dict()

    def add_status_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(listener)

    # -- getting a tor -----------------------------------------------------------------------

    async def _connect_tor(self) -> Any:
        options = self._options
        if options.control is None:
            return await self._launch_tor()
        password_function = None
        if options.password_file is not None:
            password = options.password_file.read_text().splitlines()[0]

            def password_function() -> str:
                return password

        try:
            if options.control == "auto":
                return await txtorcon.connect(self._reactor, password_function=password_function)
            endpoint = control_endpoint(self._reactor, options.control)
            return await txtorcon.connect(
                self._reactor, endpoint, password_function=password_function
            )
        except TorError:
            raise
        except Exception as error:
            where = (
                "any of the usual control ports" if options.control == "auto" else (options.control)
            )
            raise TorError(f"cannot use tor's control port at {where}: {error}") from None

    async def _launch_tor(self) -> Any:
        found = self._options.tor_binary or txtorcon.util.find_tor_binary()
        binary = os.fsdecode(found) if found else None
        if binary is None:
            raise TorError(
                "tor is not installed: install it (e.g. 'apt-get install tor') or use "
                "--tor-control to reach a running tor"
            )
        data_dir = self._options.data_dir
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

        def progress(percent: float, tag: str, summary: str) -> None:
            self._set(
                state="bootstrapping", bootstrap_percent=int(percent), bootstrap_phase=summary
            )

        try:
            return await txtorcon.launch(
                self._reactor,
                progress_updates=progress,
                data_directory=str(data_dir),
                tor_binary=binary,
                kill_on_stderr=False,
            )
        except Exception as error:
            raise TorError(f"could not launch tor ({binary}): {error}") from None

    # -- one session -------------------------------------------------------------------------

    async def _start_session(self) -> None:
        self._set(
            state="connecting", error=None, uploads=0, bootstrap_percent=0, bootstrap_phase=""
        )
        tor = await self._connect_tor()
        protocol = tor.protocol
        try:
            version = str(protocol.version or (await protocol.get_info("version"))["version"])
            if parse_tor_version(version) < MIN_TOR_VERSION:
                minimum = ".".join(map(str, MIN_TOR_VERSION))
                raise TorError(f"tor {version} is too old: onionmsg needs {minimum} or newer")
            self._set(tor_version=version)
            listeners = (await protocol.get_info("net/listeners/socks"))["net/listeners/socks"]
            session = _Session(tor, socks_endpoint(self._reactor, listeners))
            await self._watch(session, "STATUS_CLIENT", self._on_status_client)
            await self._watch(session, "HS_DESC", self._on_hs_desc)
            phase = (await protocol.get_info("status/bootstrap-phase"))["status/bootstrap-phase"]
            self._on_status_client(phase)
            await self._publish(session)
        except BaseException:
            protocol.transport.loseConnection()
            raise
        self._session = session
        protocol.when_disconnected().addBoth(self._on_disconnected, session)

    async def _watch(self, session: _Session, event: str, callback: Callable[[str], None]) -> None:
        await session.tor.protocol.add_event_listener(event, callback)
        session.listeners.append((event, callback))

    async def _publish(self, session: _Session) -> None:
        # The key goes to tor and nowhere else: txtorcon logs commands only in its debug
        # mode, which onionmsg never turns on.
        command = (
            f"ADD_ONION {self._identity.tor_key_blob()} Flags=DiscardPK "
            f"MaxStreams={MAX_STREAMS} Port={ONION_PORT},127.0.0.1:{self._local_port}"
        )
        try:
            reply = await session.tor.protocol.queue_command(command)
        except Exception as error:
            raise TorError(f"tor refused to create the onion service: {error}") from None
        match = re.search(r"ServiceID=([a-z2-7]{56})", str(reply))
        if match is None or match.group(1) != self._identity.onion_address:
            raise TorError("tor published a different onion address than the identity's")
        session.service_id = match.group(1)
        if self._status.state != "bootstrapping" or self._status.bootstrap_percent >= 100:
            self._set(state="publishing")

    async def _close_session(self, session: _Session) -> None:
        protocol = session.tor.protocol
        try:
            if session.service_id:
                await protocol.queue_command(f"DEL_ONION {session.service_id}")
            for event, callback in session.listeners:
                await protocol.remove_event_listener(event, callback)
        except Exception:  # tor may already be gone; nothing left to undo then
            log.debug("tor went away while closing the session")
        if self._options.control is None:
            try:
                await session.tor.quit()
            except Exception:
                log.debug("launched tor already stopped")
        else:
            protocol.transport.loseConnection()

    def _on_disconnected(self, _result: object, session: _Session) -> None:
        if self._session is session:
            self._session = None
        if self._stopping:
            return
        self._set(state="lost", error="lost the connection to tor; reconnecting")
        log.warn("lost the connection to tor; reconnecting")
        if not self._reconnecting:
            self._reconnecting = True
            Deferred.fromCoroutine(self._reconnect()).addErrback(self._reconnect_failed)

    async def _reconnect(self) -> None:
        attempt = 0
        try:
            while not self._stopping and self._session is None:
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                await deferLater(self._reactor, delay, lambda: None)
                attempt += 1
                if self._stopped():
                    return
                try:
                    await self._start_session()
                    log.info("tor is back; the onion service is published again")
                except OnionmsgError as error:
                    self._set(state="lost", error=str(error))
        finally:
            self._reconnecting = False

    def _stopped(self) -> bool:
        return self._stopping

    def _reconnect_failed(self, failure: Failure) -> None:
        log.failure("reconnecting to tor failed", failure)

    # -- events ------------------------------------------------------------------------------

    def _on_status_client(self, text: str) -> None:
        parsed = parse_bootstrap(text)
        if parsed is None:
            return
        percent, summary = parsed
        if self._status.state in ("reachable", "lost"):
            self._set(bootstrap_percent=percent, bootstrap_phase=summary)
        elif percent < 100:
            self._set(state="bootstrapping", bootstrap_percent=percent, bootstrap_phase=summary)
        else:
            self._set(state="publishing", bootstrap_percent=100, bootstrap_phase=summary)

    def _on_hs_desc(self, text: str) -> None:
        # "UPLOADED <address> <auth> <hsdir> ..." (control-spec 4.1.25)
        parts = text.split()
        if len(parts) < 2 or parts[1] != self._identity.onion_address:
            return
        if parts[0] == "UPLOADED":
            self._set(state="reachable", uploads=self._status.uploads + 1, error=None)
        elif parts[0] == "FAILED" and not self._status.reachable:
            self._set(error="a descriptor upload failed; tor retries")

    def _set(self, **changes: Any) -> None:
        old, new = self._status, replace(self._status, **changes)
        self._status = new

        # Report what a user cares about; descriptor re-uploads alone are not news.
        def news(s: TorStatus) -> tuple[object, ...]:
            return (s.state, s.bootstrap_percent, s.bootstrap_phase, s.error)

        if news(old) != news(new):
            for listener in list(self._listeners):
                listener(new.as_dict())
