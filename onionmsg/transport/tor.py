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
* Per-contact **endpoint onions** (issue 7): ``add_endpoint`` publishes an onion service
  from a key the node keeps, with Tor v3 client authorisation (``Flags=V3Auth``,
  ``ClientAuthV3=``) for exactly one contact's X25519 key, forwarding to the same local
  listener as the identity onion (the handshake tells who is calling, whichever onion they
  came through).  ``add_client_auth`` gives our tor the key for a contact's endpoint.
  txtorcon has no v3 client-auth call, so these are raw control commands.  Endpoint
  onions live on our control connection like the identity onion; client-auth entries live
  in tor's memory only (never ``Flags=Permanent``: tor would write the key to disk
  unencrypted) and are removed when we stop.  Both are re-added whenever tor restarts.
* **Invisible mode**: ``set_identity_published(False)`` withdraws the identity onion
  (DEL_ONION) while the endpoint onions stay.
* **Proof of work** (tor >= 0.4.8): the identity onion is published with Tor's PoW defence
  (``PoWDefensesEnabled``); endpoint onions need none (only their one contact can even
  find them).
* Bootstrap and publication progress are reported to status listeners (the daemon's log,
  the node's subscribers).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import txtorcon
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredLock, maybeDeferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    UNIXClientEndpoint,
    clientFromString,
)
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from txtorcon.torcontrolprotocol import TorDisconnectError

from onionmsg.crypto.endpoint import X25519_KEY_SIZE, EndpointKey
from onionmsg.crypto.identity import Identity, normalize_onion_address
from onionmsg.errors import OnionmsgError
from onionmsg.store.db import Contact
from onionmsg.transport.base import reconnect

log = Logger()

ONION_PORT = 80  # the virtual port of every onionmsg onion service
MAX_STREAMS = 64  # per rendezvous circuit; a contact needs one
MIN_TOR_VERSION = (0, 4, 5)
# Every onion service costs its tor 6 introduction circuits kept open (3 for each of its
# two descriptors) and ~16 descriptor uploads (each its own circuit) every 1-2 hours:
# measured and explained in docs/architecture.md. 32 endpoints keep ~200 circuits open.
MAX_ENDPOINTS = 32
# Tor's onion-service proof of work (proposal 327) exists from 0.4.8 on.
POW_MIN_TOR_VERSION = (0, 4, 8)
# Introductions the identity onion lets through per second, and the bucket size. It only
# ever receives first-contact requests (human-paced) and our own loop link; tor's defaults
# (250/s, burst 2500) are sized for big sites and would let a flood build a rendezvous
# circuit per request at a rate no personal machine needs. See docs/architecture.md.
POW_QUEUE_RATE = 5
POW_QUEUE_BURST = 20


class TorError(OnionmsgError):
    """Tor could not be used."""


class TorCommandError(TorError):
    """Tor refused a control command (a 5xx reply); ``code`` is tor's status code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class EndpointLimitError(TorError):
    """The node asked for more endpoint onions than MAX_ENDPOINTS."""


class _TorGone(Exception):
    """The control connection closed while a command was pending (tor restarts or died)."""


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

    # starting, connecting, bootstrapping, publishing, reachable, hidden (invisible and no
    # endpoint onions: nothing to publish), lost
    state: str = "starting"
    bootstrap_percent: int = 0
    bootstrap_phase: str = ""
    uploads: int = 0  # descriptor uploads of any of our onions since tor (re)started
    error: str | None = None
    tor_version: str = ""
    identity_published: bool = True  # False in invisible mode
    pow: str = ""  # "on" or "unsupported" (tor older than 0.4.8); "" until tor answered
    endpoints: int = 0  # endpoint onions we keep
    endpoints_uploaded: int = 0  # of those, how many had a descriptor uploaded
    client_auth: int = 0  # contacts' endpoint onions our tor has a key for

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
            "identity_published": self.identity_published,
            "pow": self.pow,
            "endpoints": self.endpoints,
            "endpoints_uploaded": self.endpoints_uploaded,
            "client_auth": self.client_auth,
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


def supports_pow(version: tuple[int, ...]) -> bool:
    return version >= POW_MIN_TOR_VERSION


def client_auth_public_text(public_key: bytes) -> str:
    """``ClientAuthV3=`` form of an X25519 public key: base32, no padding (52 characters)."""
    _check_x25519(public_key, "public")
    return base64.b32encode(public_key).decode("ascii").rstrip("=")


def client_auth_private_text(private_key: bytes) -> str:
    """``ONION_CLIENT_AUTH_ADD`` form of an X25519 private key: ``x25519:`` + base64."""
    _check_x25519(private_key, "private")
    return "x25519:" + base64.b64encode(private_key).decode("ascii")


def _check_x25519(key: bytes, which: str) -> None:
    if not isinstance(key, bytes) or len(key) != X25519_KEY_SIZE:
        raise ValueError(f"an X25519 {which} key is {X25519_KEY_SIZE} bytes")


def add_onion_command(
    key_blob: str,
    local_port: int,
    *,
    client_auth_public: bytes | None = None,
    pow_defence: bool = False,
) -> str:
    """The ADD_ONION line for one of our onions (it contains the secret key: never log it).

    With ``client_auth_public``, only the holder of the matching X25519 private key can
    decrypt the descriptor (``V3Auth``: without it tor answers "No auth type specified").
    """
    flags = "Flags=V3Auth,DiscardPK" if client_auth_public is not None else "Flags=DiscardPK"
    parts = ["ADD_ONION", key_blob, flags, f"MaxStreams={MAX_STREAMS}"]
    if client_auth_public is not None:
        parts.append(f"ClientAuthV3={client_auth_public_text(client_auth_public)}")
    if pow_defence:
        parts += [
            "PoWDefensesEnabled=1",
            f"PoWQueueRate={POW_QUEUE_RATE}",
            f"PoWQueueBurst={POW_QUEUE_BURST}",
        ]
    parts.append(f"Port={ONION_PORT},127.0.0.1:{local_port}")
    return " ".join(parts)


def parse_service_id(reply: str) -> str:
    """The ServiceID of an ADD_ONION reply (``ServiceID=<56 base32>`` on its own line)."""
    match = re.search(r"^ServiceID=([a-z2-7]{56})$", reply, re.MULTILINE)
    if match is None:
        raise TorError("tor's answer to ADD_ONION has no v3 ServiceID")
    return match.group(1)


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
    """One control connection to one tor, and what we published on it."""

    tor: Any
    socks: IStreamClientEndpoint
    service_id: str = ""  # the identity onion, while it is published
    endpoints: set[str] = field(default_factory=set)
    client_auth: set[str] = field(default_factory=set)
    uploaded: set[str] = field(default_factory=set)  # onions with a descriptor uploaded
    listeners: list[tuple[str, Callable[[str], None]]] = field(default_factory=list)

    def published(self) -> set[str]:
        return self.endpoints | ({self.service_id} if self.service_id else set())


@dataclass(frozen=True)
class _Endpoint:
    key: EndpointKey
    client_auth_public: bytes


class TorTransport:
    """The Tor transport; see the module docstring.

    What the node asked for (identity published or not, endpoint onions, client-auth keys)
    is kept here and applied to every tor session, so a restarted tor gets all of it back.
    Changes to tor's state are serialised by one lock, so a restart that republishes
    everything and a call from the node never interleave.
    """

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
        self._lock = DeferredLock()
        self._pow = False
        self._identity_published = True
        self._endpoints: dict[str, _Endpoint] = {}
        self._client_auth: dict[str, bytes] = {}

    # -- Transport interface -----------------------------------------------------------------

    async def listen(self, factory: IProtocolFactory) -> str:
        # Tor forwards the onions' virtual port here; nothing else can reach it usefully,
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
        """The contact's identity onion (first contact, or a contact without an endpoint)."""
        return self.endpoint_for(contact.address)

    def contact_endpoint(
        self, contact: Contact, endpoint_onion: str
    ) -> IStreamClientEndpoint | None:
        """A contact's endpoint onion (for a contact who gave us one, the only way in)."""
        return self.endpoint_for(endpoint_onion)

    def endpoint_for(self, onion: str) -> IStreamClientEndpoint | None:
        """Any onion (a contact's endpoint onion, say), or None while tor (re)starts."""
        if self._session is None:
            return None  # tor is (re)starting: the connector backs off and retries
        endpoint: IStreamClientEndpoint = txtorcon.TorClientEndpoint(
            normalize_onion_address(onion) + ".onion",
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

    # -- endpoint onions, client authorisation, invisible mode -------------------------------

    async def add_endpoint(self, key: EndpointKey, authorized_client_x25519_pub: bytes) -> str:
        """Publish an endpoint onion that only the holder of the matching X25519 private key
        can reach; returns its address.  Idempotent; a different key for the same onion
        replaces the old authorisation.  While tor is (re)starting this only records the
        wish: the endpoint is published as soon as tor is back.

        Raises EndpointLimitError past MAX_ENDPOINTS, TorCommandError if tor refuses.
        """
        onion = key.onion_address
        client_auth_public_text(authorized_client_x25519_pub)  # validates
        wanted = _Endpoint(key, authorized_client_x25519_pub)
        async with self._changing() as session:
            previous = self._endpoints.get(onion)
            if previous == wanted:
                return onion
            if previous is None and len(self._endpoints) >= MAX_ENDPOINTS:
                raise EndpointLimitError(
                    f"already {MAX_ENDPOINTS} endpoint onions: remove one before adding another"
                )
            self._endpoints[onion] = wanted
            if session is not None:
                try:
                    with contextlib.suppress(_TorGone):  # published again when tor is back
                        if previous is not None:
                            await self._del_onion(session, onion)
                        await self._publish_endpoint(session, onion, wanted)
                except TorError:
                    del self._endpoints[onion]
                    raise
        return onion

    async def remove_endpoint(self, onion: str) -> None:
        """Withdraw an endpoint onion (no-op if we do not have it)."""
        onion = normalize_onion_address(onion)
        async with self._changing() as session:
            if self._endpoints.pop(onion, None) is not None and session is not None:
                with contextlib.suppress(_TorGone):  # a new session will not publish it
                    await self._del_onion(session, onion)

    async def add_client_auth(self, onion: str, x25519_private: bytes) -> None:
        """Give our tor the key to a contact's endpoint onion (kept in tor's memory only).

        Raises AddressError for a malformed onion, TorCommandError if tor refuses.
        """
        onion = normalize_onion_address(onion)
        client_auth_private_text(x25519_private)  # validates
        async with self._changing() as session:
            previous = self._client_auth.get(onion)
            if previous == x25519_private:
                return
            self._client_auth[onion] = x25519_private
            if session is not None:
                try:
                    with contextlib.suppress(_TorGone):  # added again when tor is back
                        await self._add_client_auth(session, onion, x25519_private)
                except TorError:
                    if previous is None:
                        del self._client_auth[onion]
                    else:
                        self._client_auth[onion] = previous
                    raise

    async def remove_client_auth(self, onion: str) -> None:
        """Make our tor forget the key to a contact's endpoint onion (no-op if unknown)."""
        onion = normalize_onion_address(onion)
        async with self._changing() as session:
            if self._client_auth.pop(onion, None) is not None and session is not None:
                with contextlib.suppress(_TorGone):  # a restarted tor has forgotten it
                    await self._remove_client_auth(session, onion)

    async def set_identity_published(self, published: bool) -> None:
        """Publish the identity onion (the default) or withdraw it: invisible mode.

        Invisible, nobody can send a new contact request or see whether we are online
        through the identity address; contacts still reach us through endpoint onions.
        HSDirs may serve the old descriptor for a while, but its introduction points are
        gone, so connection attempts fail.
        """
        async with self._changing() as session:
            self._identity_published = published
            self._set(identity_published=published)
            if session is None:
                return
            with contextlib.suppress(_TorGone):  # a new session follows the wish
                if published and not session.service_id:
                    await self._publish_identity(session)
                elif not published and session.service_id:
                    await self._del_onion(session, session.service_id)

    @property
    def endpoint_onions(self) -> frozenset[str]:
        """The endpoint onions we keep (published, or to be published once tor is back)."""
        return frozenset(self._endpoints)

    @contextlib.asynccontextmanager
    async def _changing(self) -> AsyncIterator[_Session | None]:
        """Hold the lock that serialises changes to tor's state; yields the live session."""
        await self._lock.acquire()
        try:
            yield self._session
        finally:
            self._refresh_state()
            self._lock.release()

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
            state="connecting",
            error=None,
            uploads=0,
            endpoints_uploaded=0,
            bootstrap_percent=0,
            bootstrap_phase="",
        )
        tor = await self._connect_tor()
        protocol = tor.protocol
        try:
            version = str(protocol.version or (await protocol.get_info("version"))["version"])
            parsed_version = parse_tor_version(version)
            if parsed_version < MIN_TOR_VERSION:
                minimum = ".".join(map(str, MIN_TOR_VERSION))
                raise TorError(f"tor {version} is too old: onionmsg needs {minimum} or newer")
            self._pow = supports_pow(parsed_version)
            self._set(tor_version=version, pow="on" if self._pow else "unsupported")
            if not self._pow:
                log.warn(
                    "tor {version} has no onion-service proof of work (0.4.8 or newer has): "
                    "the identity onion is published without it",
                    version=version,
                )
            listeners = (await protocol.get_info("net/listeners/socks"))["net/listeners/socks"]
            session = _Session(tor, socks_endpoint(self._reactor, listeners))
            await self._watch(session, "STATUS_CLIENT", self._on_status_client)
            await self._watch(session, "HS_DESC", lambda text: self._on_hs_desc(session, text))
            phase = (await protocol.get_info("status/bootstrap-phase"))["status/bootstrap-phase"]
            self._on_status_client(phase)
            await self._lock.acquire()
            try:
                await self._publish_all(session)
                self._session = session
            finally:
                self._refresh_state()
                self._lock.release()
        except _TorGone:
            raise TorError("tor closed the control connection while we published") from None
        except BaseException:
            protocol.transport.loseConnection()
            raise
        protocol.when_disconnected().addBoth(self._on_disconnected, session)

    async def _watch(self, session: _Session, event: str, callback: Callable[[str], None]) -> None:
        await session.tor.protocol.add_event_listener(event, callback)
        session.listeners.append((event, callback))

    async def _publish_all(self, session: _Session) -> None:
        """Everything the node asked for, on a fresh session (first start or tor restart)."""
        if self._identity_published:
            await self._publish_identity(session)
        for onion, endpoint in list(self._endpoints.items()):
            try:
                await self._publish_endpoint(session, onion, endpoint)
            except TorError as error:
                # One endpoint tor refuses must not keep the others (or us) offline.
                log.warn("could not publish an endpoint onion again: {error}", error=error)
        for onion, private_key in list(self._client_auth.items()):
            try:
                await self._add_client_auth(session, onion, private_key)
            except TorError as error:
                log.warn("could not give tor a contact's client-auth key: {error}", error=error)

    async def _command(self, session: _Session, command: str, what: str) -> str:
        """Send one control command; 5xx replies become TorCommandError (saying ``what``
        failed, never repeating the command: it may hold a key)."""
        try:
            reply = await session.tor.protocol.queue_command(command)
        except txtorcon.TorProtocolError as error:
            raise TorCommandError(
                f"tor refused to {what}: {error.code} {str(error.text).strip()}", int(error.code)
            ) from None
        except TorDisconnectError:
            raise _TorGone(what) from None
        return str(reply)

    async def _publish_identity(self, session: _Session) -> None:
        # The key goes to tor and nowhere else: txtorcon logs commands only in its debug
        # mode, which onionmsg never turns on.
        command = add_onion_command(
            self._identity.tor_key_blob(), self._local_port, pow_defence=self._pow
        )
        reply = await self._command(session, command, "create the onion service")
        if parse_service_id(reply) != self._identity.onion_address:
            raise TorError("tor published a different onion address than the identity's")
        session.service_id = self._identity.onion_address

    async def _publish_endpoint(self, session: _Session, onion: str, endpoint: _Endpoint) -> None:
        command = add_onion_command(
            endpoint.key.tor_key_blob(),
            self._local_port,
            client_auth_public=endpoint.client_auth_public,
        )
        reply = await self._command(session, command, "create an endpoint onion")
        if parse_service_id(reply) != onion:
            raise TorError("tor published a different onion address than the endpoint key's")
        session.endpoints.add(onion)

    async def _del_onion(self, session: _Session, onion: str) -> None:
        session.endpoints.discard(onion)
        session.uploaded.discard(onion)
        if session.service_id == onion:
            session.service_id = ""
        try:
            await self._command(session, f"DEL_ONION {onion}", "withdraw an onion")
        except TorCommandError as error:
            if error.code != 552:  # 552 Unknown Onion Service id: already gone
                raise

    async def _add_client_auth(self, session: _Session, onion: str, private_key: bytes) -> None:
        # A reply of 251 ("existed and replaced") is a success: txtorcon hands us 2xx alike.
        command = f"ONION_CLIENT_AUTH_ADD {onion} {client_auth_private_text(private_key)}"
        await self._command(session, command, "add a contact's client-auth key")
        session.client_auth.add(onion)

    async def _remove_client_auth(self, session: _Session, onion: str) -> None:
        session.client_auth.discard(onion)
        await self._command(
            session, f"ONION_CLIENT_AUTH_REMOVE {onion}", "remove a contact's client-auth key"
        )

    async def _close_session(self, session: _Session) -> None:
        protocol = session.tor.protocol
        try:
            for onion in sorted(session.published()):
                await protocol.queue_command(f"DEL_ONION {onion}")
            # Client-auth entries outlive our control connection: take them back.
            for onion in sorted(session.client_auth):
                await protocol.queue_command(f"ONION_CLIENT_AUTH_REMOVE {onion}")
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
        try:
            await reconnect(
                self._reactor,
                connected=lambda: self._session is not None,
                stopping=self._stopped,
                start_session=self._start_session,
                back=lambda: log.info("tor is back; the onion services are published again"),
                failed=lambda error: self._set(state="lost", error=str(error)),
            )
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
        if self._status.state in ("reachable", "hidden", "lost"):
            self._set(bootstrap_percent=percent, bootstrap_phase=summary)
        elif percent < 100:
            self._set(state="bootstrapping", bootstrap_percent=percent, bootstrap_phase=summary)
        else:
            self._set(state="publishing", bootstrap_percent=100, bootstrap_phase=summary)
            self._refresh_state()

    def _on_hs_desc(self, session: _Session, text: str) -> None:
        # "UPLOADED <address> <auth> <hsdir> ..." (control-spec 4.1.25)
        parts = text.split()
        if len(parts) < 2 or parts[1] not in session.published():
            return
        if parts[0] == "UPLOADED":
            session.uploaded.add(parts[1])
            self._set(uploads=self._status.uploads + 1, error=None)
            self._refresh_state(session)
        elif parts[0] == "FAILED" and not self._status.reachable:
            self._set(error="a descriptor upload failed; tor retries")

    def _refresh_state(self, session: _Session | None = None) -> None:
        """Derive the state and counts from what is published and uploaded right now."""
        session = session or self._session
        changes: dict[str, Any] = {
            "endpoints": len(self._endpoints),
            "client_auth": len(self._client_auth),
        }
        if session is not None:
            changes["endpoints_uploaded"] = len(session.uploaded & session.endpoints)
            bootstrapped = self._status.bootstrap_percent >= 100
            if self._status.state not in ("starting", "connecting", "lost") and bootstrapped:
                published = session.published()
                if not published:
                    changes["state"] = "hidden"
                elif published & session.uploaded:
                    changes["state"] = "reachable"
                else:
                    changes["state"] = "publishing"
        self._set(**changes)

    def _set(self, **changes: Any) -> None:
        old, new = self._status, replace(self._status, **changes)
        self._status = new

        # Report what a user cares about; descriptor re-uploads alone are not news.
        def news(s: TorStatus) -> tuple[object, ...]:
            return (
                s.state,
                s.bootstrap_percent,
                s.bootstrap_phase,
                s.error,
                s.identity_published,
                s.pow,
                s.endpoints,
                s.endpoints_uploaded,
                s.client_auth,
            )

        if news(old) != news(new):
            for listener in list(self._listeners):
                listener(new.as_dict())
