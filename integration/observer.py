"""An observer of one daemon's traffic at the boundary between onionmsg and its tor.

What leaves a user's machine is what onionmsg hands to tor: bytes written to tor's SOCKS
port (links the daemon dialled, including its loop link) and bytes written back on the
connections tor makes to the daemon's onion-service port (links contacts dialled). We
capture exactly those with tcpdump on the loopback interface, one packet per write
(the links set TCP_NODELAY), and keep each packet's time and payload size.
"""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from stem.control import Controller, Listener

from integration.users import wait_for

_SOCKET = re.compile(r"(\S+):(\d+)\s+(\S+):(\d+|\*)\s+users:\(.*\bpid=(\d+),")
_PACKET = re.compile(r"^(\d+\.\d+) IP \S+ > \S+: tcp (\d+)$")


@dataclass(frozen=True)
class Write:
    time: float  # seconds since the epoch (the kernel's capture time)
    size: int


def _sockets(pid: int, *ss_args: str) -> list[tuple[int, int]]:
    """(local port, peer port) of the TCP sockets ``pid`` holds, as ``ss`` lists them
    (peer port 0 for a listening socket)."""
    out = subprocess.run(["ss", "-Htnp", *ss_args], capture_output=True, text=True, check=True)
    found = []
    for line in out.stdout.splitlines():
        match = _SOCKET.search(line)
        if match and int(match.group(5)) == pid:
            peer = match.group(4)
            found.append((int(match.group(2)), 0 if peer == "*" else int(peer)))
    return found


class Observer:
    """tcpdump on ``lo`` for the writes of daemon ``pid`` to its tor, while in a ``with``."""

    def __init__(self, pid: int, tor_control_port: int, directory: Path) -> None:
        listening = {local for local, _ in _sockets(pid, "-l")}
        assert len(listening) == 1, f"expected one onion-service port, found {listening}"
        (self.listen_port,) = listening
        with Controller.from_port(address="127.0.0.1", port=tor_control_port) as controller:
            controller.authenticate()
            socks = {port for _, port in controller.get_listeners(Listener.SOCKS)}
        assert len(socks) == 1, f"expected tor to have one SOCKS port, found {socks}"
        (self.socks_port,) = socks
        self._output = directory / f"observer-{pid}.txt"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Observer:
        packet_filter = f"tcp and (dst port {self.socks_port} or src port {self.listen_port})"
        errors = self._output.with_suffix(".stderr")
        with open(self._output, "wb") as out, open(errors, "wb") as err:
            self._process = subprocess.Popen(
                ["tcpdump", "-i", "lo", "-n", "-tt", "-q", "-l", packet_filter],
                stdout=out,
                stderr=err,
            )
        wait_for(lambda: b"listening on" in errors.read_bytes(), 10, "tcpdump to start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None
        time.sleep(0.5)  # packets written just before the end reach the capture
        self._process.send_signal(signal.SIGINT)
        self._process.wait(10)

    def writes(self, start: float, end: float) -> list[Write]:
        """The daemon's writes (packets with a payload) captured in [start, end)."""
        found = []
        for line in self._output.read_text().splitlines():
            match = _PACKET.match(line)
            if match and int(match.group(2)) > 0 and start <= float(match.group(1)) < end:
                found.append(Write(float(match.group(1)), int(match.group(2))))
        return found


def gaps(writes: list[Write]) -> list[float]:
    """Seconds between consecutive writes."""
    return [b.time - a.time for a, b in itertools.pairwise(writes)]


def counts_per_second(writes: list[Write], start: float, end: float) -> list[int]:
    """How many writes fell in each whole second of [start, end): what a coarse observer
    with a byte counter sees."""
    counts = [0] * int(end - start)
    for write in writes:
        second = int(write.time - start)
        if second < len(counts):
            counts[second] += 1
    return counts
