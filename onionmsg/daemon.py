"""Running a node as a daemon: the store, the transport, the control socket, signals."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from onionmsg.config import Home
from onionmsg.control.api import control_factory
from onionmsg.crypto.identity import Identity
from onionmsg.errors import OnionmsgError
from onionmsg.mix.scheduler import DEFAULT_PROFILE, PROFILES, Profile
from onionmsg.node import Node
from onionmsg.store.db import Store
from onionmsg.store.keys import KeyParams
from onionmsg.transport.base import Transport
from onionmsg.transport.i2p import DEFAULT_SAM, I2POptions, I2PTransport
from onionmsg.transport.multi import combine
from onionmsg.transport.tcp import TCPTransport
from onionmsg.transport.tor import TorOptions, TorTransport

log = Logger()


class TransportUnavailable(OnionmsgError):
    """The chosen transport is not available."""


@dataclass(frozen=True)
class DaemonOptions:
    transport: str
    listen: str
    verbose: bool
    tor_control: str | None = None
    tor_password_file: Path | None = None
    tor_binary: str | None = None
    cover: Profile = PROFILES[DEFAULT_PROFILE]
    i2p_sam: str = DEFAULT_SAM
    i2p_tunnel_length: int = 3


def start_logging(stream: IO[str], verbose: bool) -> None:
    # Our own progress at info; the libraries' chatter ("Starting factory ...") only
    # from warnings up, unless -v asks for everything.
    predicate = LogLevelFilterPredicate(
        defaultLogLevel=LogLevel.debug if verbose else LogLevel.warn
    )
    predicate.setLogLevelForNamespace("onionmsg", LogLevel.debug if verbose else LogLevel.info)
    observer = FilteringLogObserver(textFileLogObserver(stream), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def make_transport(
    reactor: Any, home: Home, identity: Identity, options: DaemonOptions, store: Store
) -> Transport:
    """``options.transport`` is one name or a comma list in order of preference
    ("tor,i2p"): then the node listens on each and dials them in that order."""
    names = [name.strip() for name in options.transport.split(",")]
    if len(set(names)) != len(names):
        raise TransportUnavailable(f"--transport {options.transport}: a transport is named twice")
    return combine(
        reactor, [_make_one(name, reactor, home, identity, options, store) for name in names]
    )


def _make_one(
    name: str, reactor: Any, home: Home, identity: Identity, options: DaemonOptions, store: Store
) -> Transport:
    if name == "tcp":
        return TCPTransport(reactor, options.listen)
    if name == "tor":
        tor_options = TorOptions(
            data_dir=home.tor_dir,
            control=options.tor_control,
            password_file=options.tor_password_file,
            tor_binary=options.tor_binary,
        )
        transport = TorTransport(reactor, identity, tor_options)
        transport.add_status_listener(_report_tor_status)
        return transport
    if name == "i2p":
        i2p_options = I2POptions(sam=options.i2p_sam, tunnel_length=options.i2p_tunnel_length)
        i2p = I2PTransport(reactor, identity, store, i2p_options)
        i2p.add_status_listener(_report_i2p_status)
        return i2p
    raise TransportUnavailable(
        f"the {name} transport is not available in this version: "
        "use --transport tor, i2p or tcp, or a comma list of them (tor,i2p)"
    )


def _report_i2p_status(status: dict[str, Any]) -> None:
    line = f"i2p: {status['state']}"
    if status["destination"]:
        line += f" ({status['destination']})"
    if status["error"]:
        line += f"; {status['error']}"
    log.info("{line}", line=line)


def _report_tor_status(status: dict[str, Any]) -> None:
    # The daemon's progress on stderr (`status` and the UI show the same snapshot).
    line = f"tor: {status['state']}, bootstrap {status['bootstrap_percent']}%"
    if status["bootstrap_phase"]:
        line += f" ({status['bootstrap_phase']})"
    if status["error"]:
        line += f"; {status['error']}"
    log.info("{line}", line=line)


@dataclass
class RunningDaemon:
    """A started node with its control socket; ``stop()`` undoes everything ``start_daemon`` did."""

    node: Node
    listening: str
    socket_path: str
    _control: Any
    _store: Store
    _lock_fd: int

    async def stop(self) -> None:
        try:
            await self._control.stopListening()
        finally:
            try:
                await self.node.stop()
            finally:
                self._store.close()
                os.close(self._lock_fd)
                if os.path.exists(self.socket_path):
                    os.unlink(self.socket_path)


async def start_daemon(
    reactor: Any, home: Home, store: Store, options: DaemonOptions
) -> RunningDaemon:
    """Start the node and its control socket (for ``onionmsg daemon`` and the in-process UI).

    Raises OnionmsgError for a clear start-up failure, having closed what it opened.
    """
    lock_fd = home.lock()
    try:
        socket_path = home.socket_path_for_bind()
        node = Node(
            store,
            make_transport(reactor, home, store.identity(), options, store),
            reactor,
            passphrase_protected=KeyParams.load(home.keyfile_path).passphrase,
            cover=options.cover,
        )
    except BaseException:
        store.close()
        os.close(lock_fd)
        raise
    try:
        listening = await node.start()
        # Nobody else holds the lock, so a leftover socket is stale.
        if os.path.exists(socket_path):
            os.unlink(socket_path)
        control = await UNIXServerEndpoint(reactor, socket_path, mode=0o600).listen(
            control_factory(node)
        )
    except BaseException:
        try:
            await node.stop()
        finally:
            store.close()
            os.close(lock_fd)
            if os.path.exists(socket_path):
                os.unlink(socket_path)
        raise
    return RunningDaemon(node, listening, socket_path, control, store, lock_fd)


async def run_daemon(reactor: Any, home: Home, store: Store, options: DaemonOptions) -> None:
    """Run until SIGINT/SIGTERM; raises OnionmsgError for a clear start-up failure."""
    daemon = await start_daemon(reactor, home, store, options)
    print(
        f"onionmsg daemon for {daemon.node.identity.onion_address} on {daemon.listening}; "
        f"control socket {daemon.socket_path}",
        file=sys.stderr,
        flush=True,
    )
    stopped: Deferred[None] = Deferred()
    cleaned_up: Deferred[None] = Deferred()

    def on_shutdown() -> Deferred[None]:
        stopped.callback(None)
        return cleaned_up  # the reactor waits for this before it stops

    reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    try:
        await stopped
    finally:
        await daemon.stop()
    cleaned_up.callback(None)
