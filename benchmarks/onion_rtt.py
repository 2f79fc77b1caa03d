"""Onion round trips on the private Tor network: a raw echo vs. onionmsg message -> ack.

    .venv/bin/python benchmarks/onion_rtt.py [--messages N] [--no-netns]

By default everything runs in a fresh network namespace that has only loopback, with
TCP quick-ACKs on the loopback routes: on a network this small, relay-to-relay TCP
connections otherwise hit the Nagle/delayed-ACK interaction on a third to a half of the
circuits, which adds ~88 ms to a round trip and makes the comparison noise (measured
while building the test network; see docs/performance.md).

In one run, on one private network (3 authorities, 2 relays, 2 clients on 127.0.0.1):

1. raw: a small echo over one onion-service stream (client2 -> onion on client1), N times;
2. onionmsg: alice (on client1) sends N messages to bob (on client2); each is timed from
   the control API's ``send`` to the ``delivered`` event (bob stored it, fsync'd, acked);
3. start-up: time from ``onionmsg daemon`` to "reachable" (descriptor uploaded).

Prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from stem.control import Controller

from onionmsg.control.client import ControlClient
from onionmsg.testnet import TestNet, TorInstance
from onionmsg.wire.cells import CELL_SIZE


def socks5_connect(socks_port: int, host: str, port: int, timeout: float = 60) -> socket.socket:
    """Connect through tor's SOCKS port, retrying while the descriptor is not yet found."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.create_connection(("127.0.0.1", socks_port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Twisted does
        sock.sendall(b"\x05\x01\x00")
        assert sock.recv(2) == b"\x05\x00"
        name = host.encode()
        sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", port))
        reply = sock.recv(10)
        if reply[1] == 0:
            return sock
        sock.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"SOCKS error 0x{reply[1]:02x}")
        time.sleep(0.5)


def echo_server() -> int:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=lambda c=conn: _echo(c), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return int(server.getsockname()[1])


def _echo(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)


def raw_rtts(service_tor: TorInstance, client_tor: TorInstance, n: int) -> list[float]:
    port = echo_server()
    with Controller.from_port(address="127.0.0.1", port=service_tor.control_port) as controller:
        controller.authenticate()
        service = controller.create_ephemeral_hidden_service(
            {80: f"127.0.0.1:{port}"}, await_publication=True
        )
        assert client_tor.socks_port is not None
        sock = socks5_connect(client_tor.socks_port, service.service_id + ".onion", 80)
        rtts = []
        payload = b"x" * CELL_SIZE  # the size of one onionmsg cell
        with sock:
            for _ in range(n + 5):
                start = time.perf_counter()
                sock.sendall(payload)
                received = b""
                while len(received) < len(payload):
                    received += sock.recv(4096)
                rtts.append(time.perf_counter() - start)
        controller.remove_ephemeral_hidden_service(service.service_id)
    return rtts[5:]  # the first round trips warm the circuit


class Daemon:
    def __init__(self, home: Path, *transport: str) -> None:
        self.home = home
        subprocess.run(
            [sys.executable, "-m", "onionmsg", "--home", str(home), "init", "--no-passphrase"],
            check=True,
            capture_output=True,
        )
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "onionmsg",
                "--home",
                str(home),
                "daemon",
                "--cover",
                "off",
                *transport,
            ],
            stderr=open(home / "daemon.stderr", "wb"),  # noqa: SIM115
        )
        self.reachable_after = self._wait_reachable()

    @classmethod
    def on_tor(cls, home: Path, tor: TorInstance) -> Daemon:
        control = f"tcp:127.0.0.1:{tor.control_port}"
        return cls(home, "--transport", "tor", "--tor-control", control)

    def _wait_reachable(self) -> float:
        while True:
            try:
                with ControlClient(self.home / "control.sock") as client:
                    status = client.call("status")
                if status["network"].get("reachable", True):
                    return time.monotonic() - self.started
            except Exception:  # noqa: S110 - not up yet
                pass
            time.sleep(0.05)

    def call(self, method: str, **params: Any) -> Any:
        with ControlClient(self.home / "control.sock") as client:
            return client.call(method, **params)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def onionmsg_rtts(alice: Daemon, bob: Daemon, n: int) -> list[float]:
    alice_address = alice.call("status")["address"]
    bob_address = bob.call("status")["address"]
    tcp = {}
    for daemon in (alice, bob):
        listening = daemon.call("status")["listening"]
        tcp[daemon] = listening.removeprefix("tcp ") if listening.startswith("tcp ") else None
    alice.call("contacts.add", address=bob_address, name="bob", tcp=tcp[bob])
    bob.call("contacts.add", address=alice_address, name="alice", tcp=tcp[alice])
    while not all(c["online"] for c in alice.call("contacts.list")):
        time.sleep(0.05)
    rtts = []
    with ControlClient(alice.home / "control.sock", timeout=60) as client:
        client.call("subscribe")
        events = client.events()
        for i in range(n + 5):
            start = time.perf_counter()
            sent = client.call("send", contact="bob", text=f"benchmark {i}")
            for event in events:
                if event.get("id") == sent["id"] and event.get("status") == "delivered":
                    break
            rtts.append(time.perf_counter() - start)
    return rtts[5:]


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[int(len(ms) * 0.95) - 1]
    return f"{statistics.median(ms):.1f} | {statistics.mean(ms):.1f} | {p95:.1f}"


_IN_NETNS = "ONIONMSG_BENCHMARK_IN_NETNS"


def enter_loopback_namespace() -> None:
    """Re-run this script in a new network namespace with loopback only (needs root)."""
    if os.environ.get(_IN_NETNS):
        quickack = shlex.split(
            "dev lo table local proto kernel scope host src 127.0.0.1 quickack 1"
        )
        for command in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "route", "replace", "local", "127.0.0.0/8", *quickack],
            ["ip", "route", "replace", "local", "127.0.0.1", *quickack],
        ):
            subprocess.run(command, check=True)
        return
    env = {**os.environ, _IN_NETNS: "1"}
    os.execvpe("unshare", ["unshare", "--net", "--", sys.executable, *sys.argv], env)  # noqa: S606


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--no-netns", action="store_true", help="run in this namespace")
    parser.add_argument(
        "--scheduler", default="Vanilla", help="tor's cell scheduler (KIST is tor's default)"
    )
    args = parser.parse_args()
    if not args.no_netns:
        enter_loopback_namespace()
    with tempfile.TemporaryDirectory(prefix="onionmsg-bench-") as tmp:
        net = TestNet(Path(tmp) / "net", owner_pid=os.getpid(), scheduler=args.scheduler)
        started = time.monotonic()
        net.up()
        up_after = time.monotonic() - started
        client1, client2 = [i for i in net.instances() if i.role == "client"][:2]
        try:
            raw = raw_rtts(client1, client2, args.messages)
            alice = Daemon.on_tor(Path(tmp) / "alice", client1)
            bob = Daemon.on_tor(Path(tmp) / "bob", client2)
            try:
                ours = onionmsg_rtts(alice, bob, args.messages)
            finally:
                alice.stop()
                bob.stop()
            # The same exchange over loopback TCP: onionmsg's own cost, without tor.
            local_alice = Daemon(Path(tmp) / "alice-tcp", "--transport", "tcp")
            local_bob = Daemon(Path(tmp) / "bob-tcp", "--transport", "tcp")
            try:
                local = onionmsg_rtts(local_alice, local_bob, args.messages)
            finally:
                local_alice.stop()
                local_bob.stop()
        finally:
            net.down()
    raw_median = statistics.median(raw)
    ours_median = statistics.median(ours)
    where = "host loopback" if args.no_netns else "own loopback-only namespace, quickack"
    print(
        f"private network up in {up_after:.1f} s ({where}); tor scheduler {args.scheduler}; "
        f"{args.messages} round trips each\n"
    )
    print("| round trip | median ms | mean ms | p95 ms |")
    print("|---|---|---|---|")
    print(f"| raw echo of one cell (996 bytes) over an onion stream | {summary(raw)} |")
    print(f"| onionmsg send -> delivered over onion services | {summary(ours)} |")
    print(f"| onionmsg send -> delivered over loopback TCP (no tor) | {summary(local)} |")
    print(
        f"\nonionmsg overhead on the median: {(ours_median - raw_median) * 1000:.1f} ms "
        f"({(ours_median / raw_median - 1) * 100:.0f} %)"
    )
    print(
        f"daemon start -> reachable: alice {alice.reachable_after:.1f} s, "
        f"bob {bob.reachable_after:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
