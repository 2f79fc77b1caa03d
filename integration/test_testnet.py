"""The private Tor network: up, status, an onion service round trip, add_client, CLI, down."""

from __future__ import annotations

import json
import os
import shutil
import socket
import socketserver
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stem.control

from onionmsg import testnet
from onionmsg.testnet import TestNet, TestNetError

# SOCKS5 replies worth retrying while a fresh onion service propagates (tor's ExtendedErrors):
# general failure, host unreachable, TTL expired, descriptor not found, intro/rendezvous failed.
RETRY_SOCKS_REPLIES = {0x01, 0x04, 0x06, 0xF0, 0xF2, 0xF3}


class SocksError(Exception):
    def __init__(self, reply: int) -> None:
        super().__init__(f"SOCKS5 reply 0x{reply:02X}")
        self.reply = reply


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def socks5_connect(socks_port: int, host: str, port: int, timeout: float = 30) -> socket.socket:
    """A TCP connection to host:port through tor's SOCKS5 port (no authentication)."""
    sock = socket.create_connection(("127.0.0.1", socks_port), timeout=timeout)
    try:
        sock.sendall(b"\x05\x01\x00")
        if _recv_exact(sock, 2) != b"\x05\x00":
            raise ConnectionError("SOCKS5 method negotiation failed")
        name = host.encode("ascii")
        sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
        _version, reply, _reserved, address_type = _recv_exact(sock, 4)
        if reply != 0:
            raise SocksError(reply)
        address_size = {1: 4, 4: 16}.get(address_type) or _recv_exact(sock, 1)[0]
        _recv_exact(sock, address_size + 2)
        return sock
    except BaseException:
        sock.close()
        raise


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _client(status: dict[str, Any], name: str) -> dict[str, Any]:
    client: dict[str, Any] = status["clients"][name]
    return client


def test_up_reports_every_tor_alive_and_clients_bootstrapped(tor_network: TestNet) -> None:
    status: dict[str, Any] = tor_network.status()
    roles = [i["role"] for i in status["instances"]]
    assert roles.count("authority") == 3
    assert roles.count("relay") == 2
    assert roles.count("client") >= 2
    assert status["running"] is True
    assert status["scheduler"] == "Vanilla"
    for instance in status["instances"]:
        assert instance["alive"], instance
        os.kill(instance["pid"], 0)
        assert instance["control_port"]
    for name in ("client1", "client2"):
        client = _client(status, name)
        assert client["bootstrap"] == 100
        assert client["socks_port"] and client["control_port"]
    on_disk = json.loads((tor_network.directory / "testnet.json").read_text())
    assert {i["name"] for i in on_disk["instances"]} >= {"auth1", "relay1", "client1"}
    bootstrap = {
        i["name"]: i.get("bootstrap_s") for i in status["instances"] if i["role"] == "client"
    }
    print(
        f"\ntestnet timings: {status['timings']}, client bootstrap (s): {bootstrap}, "
        f"RSS total {status['rss_total_kib'] // 1024} MiB"
    )


def test_onion_service_on_one_client_is_reachable_from_another(
    tor_network: TestNet, echo_port: int
) -> None:
    status: dict[str, Any] = tor_network.status()
    alice, bob = _client(status, "client1"), _client(status, "client2")
    uploaded = threading.Event()
    service_id: list[str] = []

    def on_hs_desc(event: Any) -> None:
        if event.action == "UPLOADED" and service_id and event.address == service_id[0]:
            uploaded.set()

    with stem.control.Controller.from_port(port=alice["control_port"]) as controller:
        controller.authenticate()
        controller.add_event_listener(on_hs_desc, stem.control.EventType.HS_DESC)
        started = time.monotonic()
        response = controller.create_ephemeral_hidden_service(
            {80: f"127.0.0.1:{echo_port}"},
            key_type="NEW",
            key_content="ED25519-V3",
            await_publication=False,
        )
        service_id.append(response.service_id)
        assert uploaded.wait(60), "the onion service descriptor was never uploaded"
        published = time.monotonic() - started

        onion = f"{service_id[0]}.onion"
        replies: list[int] = []
        deadline = time.monotonic() + 60
        while True:
            try:
                sock = socks5_connect(bob["socks_port"], onion, 80)
                break
            except SocksError as e:
                replies.append(e.reply)
                if e.reply not in RETRY_SOCKS_REPLIES or time.monotonic() > deadline:
                    raise
                time.sleep(0.25)
        reachable = time.monotonic() - started
        with sock:
            sock.sendall(b"hello through tor\n")
            assert _recv_exact(sock, 18) == b"hello through tor\n"
            round_trips = []
            for i in range(50):
                message = f"ping {i:04d}".encode()
                before = time.perf_counter()
                sock.sendall(message)
                assert _recv_exact(sock, len(message)) == message
                round_trips.append(time.perf_counter() - before)
        controller.remove_ephemeral_hidden_service(service_id[0])
    print(
        f"\nonion: descriptor uploaded after {published:.1f} s, reachable after "
        f"{reachable:.1f} s (SOCKS replies before: {[hex(r) for r in replies]}), "
        f"median round trip {statistics.median(round_trips) * 1000:.2f} ms"
    )


def test_add_client_and_restart_client(tor_network: TestNet) -> None:
    started = time.monotonic()
    extra = tor_network.add_client("extra1")
    elapsed = time.monotonic() - started
    assert extra.role == "client" and extra.socks_port is not None
    status: dict[str, Any] = tor_network.status()
    client = _client(status, "extra1")
    assert client["alive"] and client["bootstrap"] == 100
    assert client["socks_port"] == extra.socks_port
    assert client["control_port"] == extra.control_port
    with pytest.raises(TestNetError, match="already has a tor named"):
        tor_network.add_client("extra1")

    started = time.monotonic()
    restarted = tor_network.restart_client("extra1")
    restart_elapsed = time.monotonic() - started
    assert restarted.pid != extra.pid
    assert (restarted.control_port, restarted.socks_port) == (extra.control_port, extra.socks_port)
    with pytest.raises(ProcessLookupError):
        os.kill(extra.pid, 0)
    assert _client(tor_network.status(), "extra1")["bootstrap"] == 100
    print(
        f"\nadd_client bootstrapped in {elapsed:.1f} s, restart_client in {restart_elapsed:.1f} s"
    )


def test_cli_up_status_and_down_from_another_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "net"
    args = ["--dir", str(directory)]
    pids: list[int] = []
    try:
        code = testnet.main(
            ["up", *args, "--clients", "1", "--relays", "1", "--owner-pid", str(os.getpid())]
        )
        out, err = capsys.readouterr()
        assert code == 0, err
        status = json.loads(out)
        client = status["clients"]["client1"]
        assert isinstance(client["control_port"], int) and isinstance(client["socks_port"], int)
        assert client["bootstrap"] == 100
        pids = [i["pid"] for i in status["instances"]]
        assert len(pids) == 5
        assert testnet.main(["status", *args, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["running"] is True
        assert testnet.main(["up", *args]) == 1
        assert "already running" in capsys.readouterr().err
        # down from a different Python process than the one that ran up()
        subprocess.run(
            [sys.executable, "-m", "onionmsg.testnet", "down", *args],
            check=True,
            capture_output=True,
            timeout=60,
        )
    finally:
        TestNet(directory).down()  # idempotent; also reaps our (now dead) child processes
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert testnet.main(["status", *args]) == 1
    capsys.readouterr()


def test_cli_errors() -> None:
    assert testnet.main(["frobnicate"]) == 2
    assert testnet.main(["up", "--clients", "-1"]) == 2
    assert testnet.main(["status", "--dir", "/nonexistent/onionmsg-testnet"]) == 1


def test_missing_tor_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(TestNetError, match="tor is not installed"):
        TestNet(tmp_path).up()
