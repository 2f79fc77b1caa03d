"""Cover traffic: added latency, bytes per day and CPU per profile; one node with many contacts.

    .venv/bin/python benchmarks/cover.py [--samples N] [--minutes M] [--contacts 100,300,1000]

1. **Latency, bytes, CPU.** For each profile (off, low, standard, high) and a few custom
   payload rates (loop rate = payload rate / 10), pairs of real daemons on loopback TCP,
   both running the setting. Each link passes through a counting TCP proxy. The sender
   sends a one-cell message, the time runs from the control API's `send` returning at
   the sender to the message's event on the receiver's control socket. The next message
   goes only after the previous one is acknowledged, the sender's queue is empty (a
   resend by the retry timer waits there too) and a random pause of 0-1 s, so each
   message waits for its own slot on an otherwise idle node. Slow settings run several
   independent pairs at once (as many as needed to finish in about ``--minutes``).
   Over each pair's whole run: the bytes each node wrote on its contact link (the proxy)
   plus its loop cells (status, x 996 bytes: the loop link goes to the node's own listener,
   past the proxy), extrapolated to a day, and each daemon's CPU (utime + stime).
2. **Many contacts.** A hub node (in its own process, tcp transport, real reactor) with
   N contacts, all online: peers are bare Noise responders in another process. Memory
   per contact (tracemalloc, and RSS), idle CPU, and the CPU of one payload slot at 100
   slots per second (loop stream off), split into the scheduler's own work.

The full run (``--samples 300 --minutes 25``, the defaults) takes about 55 minutes on 2
cores: ``low`` needs ~80-120 s per sample (its slot, the acknowledgement's slot, resends),
so its 300 samples come from 16 pairs of daemons at once (58 daemons in all); ``--samples``
and ``--settings`` make a quick check (``--settings off,high --samples 100`` in ~3 min).

Prints Markdown tables for docs/performance.md, writes the raw results as JSON and draws
the trade-off picture (``--plot``; ``--replot RESULTS.json`` redraws from saved results).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onionmsg.control.client import ControlClient
from onionmsg.mix.scheduler import PROFILES, SECONDS_PER_DAY, Profile
from onionmsg.wire.cells import CELL_SIZE

CUSTOM_RATES = (0.1, 0.5, 1.0, 5.0)
TEXT = "cover traffic benchmark"  # one cell
Z95 = 1.96
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SLOT_RATE = 100.0  # the highest rate the daemon accepts


# -- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    label: str
    profile: Profile

    def cover_params(self) -> dict[str, Any]:
        if self.profile.name in PROFILES:
            return {"profile": self.profile.name}
        return {"payload_rate": self.profile.payload_rate, "loop_rate": self.profile.loop_rate}

    def seconds_per_sample(self) -> float:
        """A rough guess, to size the number of pairs: the message's slot, the ack's slot,
        the slot of a resend when the retry timer (15 s) fires first, the pause."""
        rate = self.profile.payload_rate
        if rate == 0:
            return 0.6
        return 2 / rate + math.exp(-15 * rate) / rate + 0.6


def settings() -> list[Setting]:
    named = [Setting(name, profile) for name, profile in PROFILES.items()]
    custom = [Setting(f"{r:g}/s", Profile("custom", r, r / 10)) for r in CUSTOM_RATES]
    return sorted(named + custom, key=lambda s: s.profile.payload_rate)


# -- daemons, proxies, /proc ----------------------------------------------------------------


def onionmsg(home: Path, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "onionmsg", "--home", str(home), *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def call(home: Path, method: str, **params: Any) -> Any:
    with ControlClient(home / "control.sock") as client:
        return client.call(method, **params)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Daemon:
    """`onionmsg daemon --transport tcp` in a fresh home, cover traffic off at first."""

    def __init__(self, home: Path) -> None:
        self.home = home
        onionmsg(home, "init", "--no-passphrase")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "onionmsg", "--home", str(home), "daemon", "--transport", "tcp"],
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon in {home} exited with {self.process.returncode}")
            try:
                call(home, "status")
            except Exception:
                return False
            return True

        wait_until(up, 120, f"the daemon in {home}")
        status = call(home, "status")
        self.address: str = status["address"]
        self.port = int(status["listening"].rpartition(":")[2])

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = call(self.home, "status")
        return result

    def cpu_seconds(self) -> float:
        """utime + stime of the daemon process (fields 14 and 15 of /proc/PID/stat)."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


class CountingProxy:
    """A TCP forwarder on 127.0.0.1 that counts the bytes each way."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.upstream = 0  # written by the side that dialled through the proxy
        self.downstream = 0  # written by the side behind it
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = [self._server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
                server = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                return
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, up: bool) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                with self._lock:
                    if up:
                        self.upstream += len(data)
                    else:
                        self.downstream += len(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.upstream, self.downstream

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


# -- part 1: one pair of users ----------------------------------------------------------------


@dataclass
class NodeWindow:
    """What one node did between the start of measuring and the end of its pair's run."""

    seconds: float
    cpu_seconds: float
    link_bytes: int  # written on its contact link (the counting proxy)
    loop_cells: int  # loop cells written (status)
    cells: dict[str, int]  # the scheduler's departures by kind (status)


@dataclass
class PairResult:
    latencies: list[float] = field(default_factory=list)
    nodes: list[NodeWindow] = field(default_factory=list)


def run_pair(tmp: Path, setting: Setting, samples: int, seed: int) -> PairResult:
    rng = random.Random(seed)
    daemons: list[Daemon] = []
    proxies: list[CountingProxy] = []
    try:
        alice = Daemon(tmp / "alice")
        daemons.append(alice)
        bob = Daemon(tmp / "bob")
        daemons.append(bob)
        to_alice, to_bob = CountingProxy(alice.port), CountingProxy(bob.port)
        proxies += [to_alice, to_bob]
        # Every link passes a proxy, whoever dials: alice reaches bob through `to_bob`.
        call(
            alice.home,
            "contacts.add",
            address=bob.address,
            name="bob",
            tcp=f"127.0.0.1:{to_bob.port}",
        )
        call(
            bob.home,
            "contacts.add",
            address=alice.address,
            name="alice",
            tcp=f"127.0.0.1:{to_alice.port}",
        )
        wait_until(
            lambda: all(d.status()["online"] == 1 for d in daemons), 60, "the link to come up"
        )
        with (
            ControlClient(alice.home / "control.sock") as sender,
            ControlClient(alice.home / "control.sock") as sender_events_client,
            ControlClient(bob.home / "control.sock") as receiver,
            ControlClient(bob.home / "control.sock") as receiver_events_client,
        ):
            sender_events_client.call("subscribe")
            receiver_events_client.call("subscribe")
            sender_events = sender_events_client.events()
            receiver_events = receiver_events_client.events()

            def exchange(
                send: ControlClient,
                delivered: Iterator[dict[str, Any]],
                arrived: Iterator[dict[str, Any]],
                to: str,
            ) -> float:
                """One message: its latency; returns once it is acknowledged."""
                message_id = send.call("send", contact=to, text=TEXT)["id"]
                sent = time.monotonic()
                for event in arrived:
                    if event.get("event") == "message" and event.get("id") == message_id:
                        latency = time.monotonic() - sent
                        break
                else:
                    raise RuntimeError("the receiver's daemon went away")
                for event in delivered:
                    if event.get("id") == message_id and event.get("status") == "delivered":
                        break
                else:
                    raise RuntimeError("the sender's daemon went away")
                return latency

            # Warm-up with cover off: the ratchet session both ways.
            exchange(sender, sender_events, receiver_events, "bob")
            exchange(receiver, receiver_events, sender_events, "alice")
            for client in (sender, receiver):
                client.call("cover.set", **setting.cover_params())
            to_bob_start, to_alice_start = to_bob.counts(), to_alice.counts()
            starts = [(time.monotonic(), d.cpu_seconds(), d.status()["cover"]) for d in daemons]
            result = PairResult()
            for _ in range(samples):
                time.sleep(rng.uniform(0, 1))
                result.latencies.append(exchange(sender, sender_events, receiver_events, "bob"))
                while sender.call("status")["cover"]["queued_cells"]:
                    time.sleep(0.1)
            ends = [(time.monotonic(), d.cpu_seconds(), d.status()["cover"]) for d in daemons]
            to_bob_end, to_alice_end = to_bob.counts(), to_alice.counts()
        written = [
            # alice writes upstream through to_bob and downstream through to_alice
            (to_bob_end[0] - to_bob_start[0]) + (to_alice_end[1] - to_alice_start[1]),
            (to_alice_end[0] - to_alice_start[0]) + (to_bob_end[1] - to_bob_start[1]),
        ]
        for (t0, cpu0, cover0), (t1, cpu1, cover1), link_bytes in zip(
            starts, ends, written, strict=True
        ):
            result.nodes.append(
                NodeWindow(
                    seconds=t1 - t0,
                    cpu_seconds=cpu1 - cpu0,
                    link_bytes=link_bytes,
                    loop_cells=cover1["loop_written"] - cover0["loop_written"],
                    cells={
                        k: cover1["sent_cells"][k] - cover0["sent_cells"][k]
                        for k in cover1["sent_cells"]
                    },
                )
            )
        return result
    finally:
        for daemon in daemons:
            daemon.stop()
        for proxy in proxies:
            proxy.close()


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def measure_settings(
    tmp: Path, chosen: Sequence[Setting], samples: int, minutes: float, max_pairs: int
) -> dict[str, list[PairResult]]:
    """Every setting at once, each over as many pairs as it needs to end in ``minutes``."""
    results: dict[str, list[PairResult]] = {s.label: [] for s in chosen}
    errors: list[str] = []
    threads: list[threading.Thread] = []
    lock = threading.Lock()

    def one_pair(setting: Setting, index: int, count: int) -> None:
        try:
            home = tmp / f"{setting.label.replace('/', '-')}-{index}"
            result = run_pair(home, setting, count, seed=index)
        except Exception as error:  # reported below, the other pairs go on
            with lock:
                errors.append(f"{setting.label} pair {index}: {error!r}")
            return
        with lock:
            results[setting.label].append(result)
            print(
                f"  {setting.label}: pair {index} done, {count} samples, "
                f"mean {statistics.fmean(result.latencies):.3f} s",
                file=sys.stderr,
                flush=True,
            )

    for setting in chosen:
        pairs = math.ceil(samples * setting.seconds_per_sample() / (minutes * 60))
        pairs = max(1, min(max_pairs, pairs))
        print(f"{setting.label}: {pairs} pair(s)", file=sys.stderr, flush=True)
        for index, count in enumerate(split(samples, pairs)):
            thread = threading.Thread(target=one_pair, args=(setting, index, count), daemon=True)
            threads.append(thread)
            thread.start()
            time.sleep(0.3)  # spread the daemons' start-up a little
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    return results


@dataclass
class Summary:
    label: str
    payload_rate: float
    loop_rate: float
    pairs: int
    samples: int
    mean: float  # send returned -> arrived, s
    ci95: float  # half-width of the mean's 95 % confidence interval
    median: float
    p95: float
    theory_added: float  # expected_latency(): 1/λ_p for Poisson
    theory_added_p95: float  # -ln(0.05)/λ_p
    bytes_per_day: float
    bytes_per_day_ci: float  # relative, from the count of cells
    theory_bytes_per_day: float
    wire_bytes_per_cell: float
    cells_per_message: float  # real cells the sender sent per message (resends show here)
    cpu_percent: float  # of one core, per node
    cpu_seconds_per_day: float
    window_seconds: float  # per pair, mean


def summarise(setting: Setting, pairs: list[PairResult]) -> Summary:
    latencies = [x for p in pairs for x in p.latencies]
    nodes = [n for p in pairs for n in p.nodes]
    senders = [p.nodes[0] for p in pairs]
    seconds = sum(n.seconds for n in nodes)
    cells = sum(n.cells["real"] + n.cells["drop"] for n in nodes)
    written = sum(n.link_bytes + n.loop_cells * CELL_SIZE for n in nodes)
    profile = setting.profile
    rate = profile.payload_rate
    cpu = sum(n.cpu_seconds for n in nodes) / seconds
    return Summary(
        label=setting.label,
        payload_rate=rate,
        loop_rate=profile.loop_rate,
        pairs=len(pairs),
        samples=len(latencies),
        mean=statistics.fmean(latencies),
        ci95=Z95 * statistics.stdev(latencies) / math.sqrt(len(latencies)),
        median=statistics.median(latencies),
        p95=statistics.quantiles(latencies, n=20)[18],
        theory_added=profile.expected_latency(),
        theory_added_p95=-math.log(0.05) / rate if rate else 0.0,
        bytes_per_day=written / seconds * SECONDS_PER_DAY,
        bytes_per_day_ci=Z95 / math.sqrt(max(1, cells + sum(n.loop_cells for n in nodes))),
        theory_bytes_per_day=profile.bytes_per_day(),
        wire_bytes_per_cell=sum(n.link_bytes for n in nodes) / max(1, cells),
        cells_per_message=sum(n.cells["real"] for n in senders) / len(latencies),
        cpu_percent=100 * cpu,
        cpu_seconds_per_day=cpu * SECONDS_PER_DAY,
        window_seconds=seconds / len(nodes),
    )


# -- part 2: one node, many contacts ----------------------------------------------------------


def raise_file_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def identity_sorting(high: bool) -> Any:
    """An identity whose key sorts above (hub) or below (peers) 0xf0...: the peers are then
    always the pair's ratchet initiators, so the hub queues no SessionStart for them (bare
    responders never acknowledge it, and its resends would fill the payload slots)."""
    from onionmsg.crypto.identity import Identity

    while True:
        identity = Identity.generate()
        if (identity.public_key[0] >= 0xF0) == high:
            return identity


def serve_peers(count: int, out: Path) -> None:
    """``count`` bare Noise responders, one per port; their (address, port) list to ``out``."""
    from twisted.internet import reactor as _reactor
    from twisted.internet.protocol import Factory

    from onionmsg.session.link import Link
    from onionmsg.transport.stream import LinkProtocol

    reactor: Any = _reactor
    raise_file_limit()

    def responder(identity: Any) -> Callable[[], LinkProtocol]:
        return lambda: LinkProtocol(Link.responder(identity, reactor), lambda p, e: None)

    peers = []
    for _ in range(count):
        identity = identity_sorting(high=False)
        factory = Factory.forProtocol(responder(identity))
        factory.noisy = False
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        peers.append((identity.onion_address, port.getHost().port))
    out.with_suffix(".tmp").write_text(json.dumps(peers))
    out.with_suffix(".tmp").rename(out)
    reactor.run()


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def hub(reactor: Any, count: int, peers: list[tuple[str, int]], seconds: float) -> None:
    """A Node with ``count`` online contacts: memory, idle CPU, CPU per payload slot."""
    from twisted.internet.task import deferLater

    from onionmsg.node import Node
    from onionmsg.store.db import Store
    from onionmsg.transport.tcp import TCPTransport

    async def sleep(delay: float) -> None:
        await deferLater(reactor, delay)

    with tempfile.TemporaryDirectory(prefix="onionmsg-hub-") as name:
        store = Store.create(Path(name) / "hub.db", bytes(32), identity_sorting(high=True))
        node = Node(store, TCPTransport(reactor, "127.0.0.1:0"), reactor)
        await node.start()
        gc.collect()
        rss_before = rss_bytes()
        tracemalloc.start()
        for index, (address, port) in enumerate(peers[:count]):
            node.add_contact(address, f"peer{index}", f"127.0.0.1:{port}")
        deadline = time.monotonic() + 300
        while node.status()["online"] < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {node.status()['online']} of {count} contacts online")
            await sleep(0.1)
        await sleep(1.0)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        rss_after = rss_bytes()

        cpu = time.process_time()
        await sleep(seconds / 2)
        idle = (time.process_time() - cpu) / (seconds / 2)

        # Instrument this node's scheduler: its slot, and the node's list of online contacts
        # that it asks for in every idle slot.
        scheduler = node._scheduler
        spent = {"slot": 0.0, "connected": 0.0}
        payload_slot, connected = scheduler._payload_slot, scheduler._connected

        def timed_slot() -> None:
            started = time.perf_counter()
            payload_slot()
            spent["slot"] += time.perf_counter() - started

        def timed_connected() -> Sequence[str]:
            started = time.perf_counter()
            online = connected()
            spent["connected"] += time.perf_counter() - started
            return online

        scheduler._payload_slot = timed_slot  # type: ignore[method-assign]
        scheduler._connected = timed_connected
        sent = dict(scheduler.sent)
        node.set_cover(Profile("bench", SLOT_RATE, 0.0))
        cpu, wall = time.process_time(), time.monotonic()
        await sleep(seconds)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        node.set_cover(PROFILES["off"])
        slots = sum(scheduler.sent[k] - sent[k] for k in ("real", "drop"))
        online = node.status()["online"]
        await node.stop()
        store.close()
    print(
        json.dumps(
            {
                "contacts": count,
                "online_at_end": online,
                "traced_bytes": traced,
                "rss_bytes": rss_after - rss_before,
                "idle_cpu_percent": 100 * idle,
                "slots": slots,
                "slot_rate": slots / wall,
                "cpu_per_slot_us": 1e6 * (cpu - idle * wall) / slots,
                "scheduler_slot_us": 1e6 * spent["slot"] / slots,
                "connected_us": 1e6 * spent["connected"] / slots,
            }
        )
    )


def hub_process(count: int, peers_file: Path, seconds: float) -> None:
    from twisted.internet import task
    from twisted.internet.defer import Deferred

    raise_file_limit()
    peers = [(str(a), int(p)) for a, p in json.loads(peers_file.read_text())]
    task.react(lambda reactor: Deferred.fromCoroutine(hub(reactor, count, peers, seconds)))


def measure_contacts(tmp: Path, counts: Sequence[int], seconds: float) -> list[dict[str, Any]]:
    peers_file = tmp / "peers.json"
    script = str(Path(__file__).resolve())
    server = subprocess.Popen(
        [sys.executable, script, "--serve-peers", str(max(counts)), "--peers-file", str(peers_file)]
    )
    try:
        wait_until(peers_file.exists, 300, "the peers")
        results = []
        for count in counts:
            out = subprocess.run(
                [
                    sys.executable,
                    script,
                    "--hub",
                    str(count),
                    "--peers-file",
                    str(peers_file),
                    "--slot-seconds",
                    str(seconds),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            print(f"  hub with {count} contacts: {results[-1]}", file=sys.stderr, flush=True)
        return results
    finally:
        server.terminate()
        server.wait(30)


# -- output -----------------------------------------------------------------------------------


def plot(summaries: Sequence[Summary], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next(s.mean for s in summaries if s.payload_rate == 0)
    covered = [s for s in summaries if s.payload_rate > 0]
    low, high = 0.02, 10.0
    rates = [low * (high / low) ** (i / 199) for i in range(200)]
    figure, (latency, volume) = plt.subplots(1, 2, figsize=(12, 4.8))

    latency.plot(rates, [base + 1 / r for r in rates], color="C0", label="theory: mean")
    latency.plot(
        rates,
        [base - math.log(0.05) / r for r in rates],
        color="C1",
        linestyle="--",
        label="theory: p95",
    )
    latency.errorbar(
        [s.payload_rate for s in covered],
        [s.mean for s in covered],
        yerr=[s.ci95 for s in covered],
        fmt="o",
        color="C0",
        capsize=3,
        label="measured mean (95 % CI)",
    )
    latency.plot(
        [s.payload_rate for s in covered],
        [s.p95 for s in covered],
        "x",
        color="C1",
        markersize=8,
        label="measured p95",
    )
    latency.set(
        xscale="log",
        yscale="log",
        xlabel="payload rate λ_p (cells/s)",
        ylabel="added latency of a message (s)",
        title=f"Latency (Poisson slots; network baseline {base * 1000:.1f} ms)",
    )

    mb = 1e6
    volume.plot(
        rates,
        [(r + r / 10) * SECONDS_PER_DAY * CELL_SIZE / mb for r in rates],
        color="C2",
        label="theory: λ_p + λ_l (λ_l = λ_p/10)",
    )
    volume.plot(
        [s.payload_rate for s in covered],
        [s.theory_bytes_per_day / mb for s in covered],
        "s",
        markerfacecolor="none",
        color="C2",
        label="theory for the setting",
    )
    volume.errorbar(
        [s.payload_rate for s in covered],
        [s.bytes_per_day / mb for s in covered],
        yerr=[s.bytes_per_day * s.bytes_per_day_ci / mb for s in covered],
        fmt="o",
        color="C3",
        capsize=3,
        label="measured (cells on the wire)",
    )
    volume.set(
        xscale="log",
        yscale="log",
        xlabel="payload rate λ_p (cells/s)",
        ylabel="bytes a node sends per day (MB)",
        title=f"Bandwidth ({CELL_SIZE}-byte cells, before Tor's overhead)",
    )
    for axes in (latency, volume):
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
    for s in covered:
        if s.label in PROFILES:
            latency.annotate(
                s.label,
                (s.payload_rate, s.mean),
                xytext=(6, 6),
                textcoords="offset points",
                fontsize=9,
                weight="bold",
            )
            volume.annotate(
                s.label,
                (s.payload_rate, s.bytes_per_day / mb),
                xytext=(6, -12),
                textcoords="offset points",
                fontsize=9,
                weight="bold",
            )
    figure.suptitle("onionmsg cover traffic: added latency and bandwidth against the payload rate")
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def megabytes(value: float) -> str:
    return f"{value / 1e6:.2f} MB" if value < 1e8 else f"{value / 1e6:.0f} MB"


def report(summaries: Sequence[Summary], hubs: Sequence[dict[str, Any]]) -> None:
    base = next((s for s in summaries if s.payload_rate == 0), None)
    if summaries:
        assert base is not None, "the off setting is the network baseline"
        print(
            "| setting | λ_p, λ_l (/s) | samples (pairs) | mean ± 95 % CI | theory mean | "
            "mean / theory | p95 | theory p95 | cells per message |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for s in summaries:
            theory = base.mean + s.theory_added
            theory_p95 = base.mean + s.theory_added_p95
            unit, scale = ("ms", 1000) if s.payload_rate == 0 else ("s", 1)
            print(
                f"| {s.label} | {s.payload_rate:.3g}, {s.loop_rate:.3g} | "
                f"{s.samples} ({s.pairs}) | {s.mean * scale:.3g} ± {s.ci95 * scale:.2g} {unit} | "
                f"{theory * scale:.3g} {unit} | "
                f"{s.mean / theory:.2f} | {s.p95 * scale:.3g} {unit} | "
                f"{f'{theory_p95 * scale:.3g} {unit}' if s.payload_rate else 'n/a'} | "
                f"{s.cells_per_message:.2f} |"
            )
        print(
            "\n| setting | bytes/day measured | theory | measured / theory | "
            "wire bytes per cell | CPU per node | CPU-s per day | window per pair |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for s in summaries:
            ratio = (
                f"{s.bytes_per_day / s.theory_bytes_per_day:.3f} ± {s.bytes_per_day_ci:.3f}"
                if s.theory_bytes_per_day
                else "n/a"
            )
            print(
                f"| {s.label} | {megabytes(s.bytes_per_day)} | "
                f"{megabytes(s.theory_bytes_per_day)} | "
                f"{ratio} | {s.wire_bytes_per_cell:.0f} | {s.cpu_percent:.3f} % | "
                f"{s.cpu_seconds_per_day:.0f} | {s.window_seconds / 60:.1f} min |"
            )
    if hubs:
        print(
            "\n| contacts | memory (tracemalloc) | per contact | RSS growth | per contact | "
            "idle CPU | CPU per slot | in the scheduler's slot | of which listing online contacts |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for h in hubs:
            n = h["contacts"]
            print(
                f"| {n} | {h['traced_bytes'] / 2**20:.1f} MiB | "
                f"{h['traced_bytes'] / n / 1024:.1f} KiB | "
                f"{h['rss_bytes'] / 2**20:.1f} MiB | {h['rss_bytes'] / n / 1024:.1f} KiB | "
                f"{h['idle_cpu_percent']:.2f} % | {h['cpu_per_slot_us']:.0f} µs | "
                f"{h['scheduler_slot_us']:.0f} µs | {h['connected_us']:.1f} µs |"
            )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=300, help="messages per setting")
    parser.add_argument(
        "--minutes",
        type=float,
        default=25,
        help="aim for the latency part to end in about this long (more pairs)",
    )
    parser.add_argument("--max-pairs", type=int, default=16, help="pairs per setting, at most")
    parser.add_argument(
        "--settings",
        default="all",
        help="comma-separated labels (off,low,standard,high,0.1/s,...) or 'none'",
    )
    parser.add_argument("--contacts", default="100,300,1000", help="hub sizes, or 'none'")
    parser.add_argument("--slot-seconds", type=float, default=10, help="hub: time at 100 slots/s")
    parser.add_argument("--plot", type=Path, help="draw the trade-off PNG here")
    parser.add_argument("--json", type=Path, help="save the raw results here")
    parser.add_argument("--replot", type=Path, help="only redraw and reprint from saved results")
    parser.add_argument("--serve-peers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--hub", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--peers-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_peers:
        serve_peers(args.serve_peers, args.peers_file)
        return 0
    if args.hub:
        hub_process(args.hub, args.peers_file, args.slot_seconds)
        return 0

    if args.replot:
        saved = json.loads(args.replot.read_text())
        summaries = [Summary(**s) for s in saved["settings"]]
        hubs: list[dict[str, Any]] = saved["contacts"]
    else:
        chosen = settings()
        if args.settings != "all":
            wanted = set(args.settings.split(",")) - {"none"}
            chosen = [s for s in chosen if s.label in wanted]
        counts = [] if args.contacts == "none" else [int(c) for c in args.contacts.split(",")]
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="onionmsg-cover-") as name:
            tmp = Path(name)
            measured = measure_settings(tmp, chosen, args.samples, args.minutes, args.max_pairs)
            summaries = [summarise(s, measured[s.label]) for s in chosen]
            hubs = measure_contacts(tmp, counts, args.slot_seconds) if counts else []
        print(f"took {(time.monotonic() - started) / 60:.1f} min", file=sys.stderr)
        if args.json:
            args.json.write_text(
                json.dumps({"settings": [asdict(s) for s in summaries], "contacts": hubs}, indent=1)
            )
    report(summaries, hubs)
    if args.plot:
        plot(summaries, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
