"""The Tor transport's pure parts, and its errors when tor cannot be used."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.task import Clock

from onionmsg.crypto.identity import Identity
from onionmsg.transport.tor import (
    TorError,
    TorOptions,
    TorStatus,
    TorTransport,
    control_endpoint,
    parse_bootstrap,
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
