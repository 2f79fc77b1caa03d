"""A private Tor network on 127.0.0.1 for tests and demos: authorities, relays, client tors.

The public Tor network is out of reach from test machines (and should be: tests must not
leak anything), so :class:`TestNet` starts its own: a few directory authorities that vote a
consensus every 10 s, a few relays, and one client tor per user.  Every tor listens on
127.0.0.1 only, knows only our authorities (explicit ``DirAuthority`` lines, no fallback
directories) and never contacts any other address.

Shape and settings, measured with tor 0.4.9 on a 2-core machine:

* At least 4 relays must be in the consensus (authorities count): with 3, onion descriptors
  reach one HSDir and rendezvous never completes.  3 authorities + 1 relay is the smallest
  reliable shape; the default is 3 + 2.
* Client tors start only after every relay's (authorities' included) consensus lists every
  relay with the HSDir flag; they then bootstrap in 2-4 s instead of 10-36 s.
* ``Schedulers Vanilla``: tor's default KIST scheduler adds ~15 ms to every onion round trip
  on loopback; Vanilla ~1 ms.  Production tors keep KIST; this only makes tests fast.
  Some rendezvous paths still show ~88 ms: when a path crosses the same relay-to-relay TCP
  connection twice in one direction, Nagle meets delayed ACKs (a tiny-network artifact).
* Client SOCKS ports have ``ExtendedErrors``, so a failed onion connect says why (0xF0:
  descriptor not found, normal for a second or two after a service is published).
* Tors started for an ``owner_pid`` exit with that process (see :class:`TestNet`).

The state of a network (every instance, its ports and pid) is kept in
``<directory>/testnet.json`` so that another process can query or stop it::

    python -m onionmsg.testnet up --dir /tmp/net --clients 2    # prints JSON, leaves it running
    python -m onionmsg.testnet status --dir /tmp/net
    python -m onionmsg.testnet down --dir /tmp/net

In Python: ``TestNet(dir).up()``, ``add_client(name)``, ``restart_client(name)`` (SIGKILL and
start again on the same ports), ``status()``, ``instances()``, ``down()``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import stem
import stem.connection
import stem.control

from onionmsg.errors import OnionmsgError

__all__ = ["TestNet", "TestNetError", "TorInstance", "main"]

log = logging.getLogger(__name__)

STATE_FILE = "testnet.json"
LOOPBACK = "127.0.0.1"
SCHEDULER = "Vanilla"
SCHEDULER_NOTE = (
    "Schedulers Vanilla: tor's default KIST scheduler adds ~15 ms to every onion round trip "
    "on loopback (Vanilla ~1 ms); production tors keep KIST"
)
MIN_RELAYS_FOR_ONION_SERVICES = 4
_NAME_RE = re.compile(r"^[A-Za-z0-9]{1,19}$")
_BOOTSTRAP_RE = re.compile(r"PROGRESS=(\d+)")
_REQUIRED_FLAGS = frozenset({"HSDir", "Running", "Valid"})
_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_KILL_GRACE = 5.0
_MARKER = ".onionmsg-testnet"
_START_ATTEMPTS = 3


class TestNetError(OnionmsgError):
    """The private Tor network could not be started, reached or stopped."""

    __test__ = False  # not a pytest test class, despite the name


@dataclass(frozen=True)
class TorInstance:
    """One tor process of the network and where it listens (all on 127.0.0.1)."""

    __test__ = False

    name: str
    role: str  # "authority" | "relay" | "client"
    data_dir: Path
    or_port: int | None
    dir_port: int | None
    control_port: int
    socks_port: int | None
    pid: int

    def to_json(self) -> dict[str, object]:
        record = asdict(self)
        record["data_dir"] = str(self.data_dir)
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> TorInstance:
        return cls(
            name=str(record["name"]),
            role=str(record["role"]),
            data_dir=Path(record["data_dir"]),
            or_port=_opt_int(record.get("or_port")),
            dir_port=_opt_int(record.get("dir_port")),
            control_port=int(record["control_port"]),
            socks_port=_opt_int(record.get("socks_port")),
            pid=int(record["pid"]),
        )


def _opt_int(value: object) -> int | None:
    return None if value is None else int(str(value))


# --------------------------------------------------------------------------- helpers


def find_tor_binary(name: str = "tor") -> str:
    """The path of ``tor`` (or ``tor-gencert``), also looking in sbin directories."""
    found = shutil.which(name) or shutil.which(name, path=_SBIN_PATH)
    if found is None:
        raise TestNetError(
            f"tor is not installed: {name!r} was not found on PATH or in {_SBIN_PATH} "
            "(install the Debian package 'tor', e.g. with `make system-deps`)"
        )
    return found


def _free_ports(count: int) -> list[int]:
    """Ports the kernel picked as free on 127.0.0.1; held together so they are distinct."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} is missing)"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _fresh_instance_dir(path: Path) -> None:
    """Create ``path`` empty (mode 0700), replacing only a directory this module made."""
    if path.exists():
        if not (path / _MARKER).exists() and any(path.iterdir()):
            raise TestNetError(f"{path} exists and was not made by onionmsg.testnet; move it away")
        shutil.rmtree(path)
    path.mkdir(mode=0o700, parents=True)
    (path / _MARKER).write_text("a data directory of an onionmsg test network\n")


def _pid_alive(pid: int, torrc: str | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, when /proc tells, is the tor using ``torrc``."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own dead child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return torrc is None  # someone else's process reusing the pid
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text()
        if stat[stat.rindex(")") + 2 :].startswith(("Z", "X")):
            return False
        if torrc is not None:
            return torrc in (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except (OSError, ValueError):
        pass
    return True


def _processes_in(directory: Path) -> list[int]:
    """Pids of live processes started for ``directory``: tors using a torrc there, watchdogs.

    A safety net for a stale testnet.json; empty where /proc is not available.
    """
    found = []
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        pairs = set(itertools.pairwise(args))
        torrc = next((b for a, b in pairs if a == "-f"), None)
        ours = (torrc is not None and Path(torrc).parent.parent == directory) or (
            "_watch" in args and ("--dir", str(directory)) in pairs
        )
        if ours and _pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def _rss_kib(pid: int) -> int | None:
    try:
        for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _connect(control_port: int) -> Any:
    """An authenticated stem Controller (cookie authentication) for a tor's control port."""
    controller = stem.control.Controller.from_port(address=LOOPBACK, port=control_port)
    try:
        controller.authenticate()
    except BaseException:
        controller.close()
        raise
    return controller


def _bootstrap_percent(controller: Any) -> int:
    phase = str(controller.get_info("status/bootstrap-phase"))
    match = _BOOTSTRAP_RE.search(phase)
    return int(match.group(1)) if match else 0


def bootstrap_percent(control_port: int) -> int | None:
    """A client's bootstrap progress (0-100), or None when its control port does not answer."""
    try:
        controller = _connect(control_port)
    except (stem.SocketError, stem.connection.AuthenticationFailure, OSError):
        return None
    try:
        return _bootstrap_percent(controller)
    except (stem.ControllerError, OSError):
        return None
    finally:
        controller.close()


def _write_json_atomically(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _run(args: list[str], what: str, stdin: bytes | None = None) -> None:
    result = subprocess.run(args, input=stdin, capture_output=True, timeout=60, check=False)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise TestNetError(f"{what} failed with exit status {result.returncode}: {output}")


# --------------------------------------------------------------------------- the network


class TestNet:
    """A private Tor network in ``directory``: ``up()``, ``add_client()``, ``status()``, ``down()``.

    ``owner_pid`` makes every tor exit when that process exits; use it in tests, not for a
    network that should outlive the command that started it.  A small watchdog process
    (``python -m onionmsg.testnet _watch``) stops the network within a second of the owner's
    exit, and the tors name the *watchdog* in ``__OwningControllerProcess`` as a backstop
    should the watchdog itself be killed.  The owner is deliberately not named there: stem
    sends TAKEOWNERSHIP whenever the owning process connects, and the tor would then exit as
    soon as that one control connection closed.
    """

    __test__ = False

    def __init__(
        self,
        directory: Path,
        *,
        authorities: int = 3,
        relays: int = 2,
        clients: int = 2,
        owner_pid: int | None = None,
        scheduler: str = SCHEDULER,
    ) -> None:
        if scheduler not in ("Vanilla", "KIST", "KISTLite"):
            raise ValueError("scheduler must be Vanilla, KIST or KISTLite")
        if authorities < 1 or relays < 0 or clients < 0:
            raise ValueError("need at least 1 authority and non-negative relay/client counts")
        self.directory = Path(directory).absolute()
        self.authorities = authorities
        self.relays = relays
        self.clients = clients
        self.owner_pid = owner_pid
        self.scheduler = scheduler
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._records: dict[str, dict[str, Any]] = {}

    # ----------------------------------------------------------------- state file

    @property
    def state_file(self) -> Path:
        return self.directory / STATE_FILE

    def _load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise TestNetError(f"cannot read {self.state_file}: {e}") from e
        if not isinstance(data, dict) or not isinstance(data.get("instances"), list):
            raise TestNetError(f"{self.state_file} is not a test network state file")
        return data

    def _save(self, state: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_json_atomically(self.state_file, state)

    @staticmethod
    def _record_alive(record: dict[str, Any]) -> bool:
        pid = int(record.get("pid") or 0)
        return pid > 0 and pid != os.getpid() and _pid_alive(pid, record.get("torrc"))

    # ----------------------------------------------------------------- up

    def up(self, timeout: float = 120.0) -> dict[str, object]:
        """Start the network; return (and write to testnet.json) its status once usable.

        Usable means: every authority's consensus lists every relay (authorities included)
        as Running, Valid and HSDir, and every client tor reports bootstrap 100%.
        """
        started = time.monotonic()
        deadline = started + timeout
        tor = find_tor_binary("tor")
        gencert = find_tor_binary("tor-gencert")
        total_relays = self.authorities + self.relays
        if total_relays < MIN_RELAYS_FOR_ONION_SERVICES:
            log.warning(
                "only %d relays (authorities included): onion services need at least %d",
                total_relays,
                MIN_RELAYS_FOR_ONION_SERVICES,
            )
        self._prepare_directory()

        servers = [(f"auth{i}", "authority") for i in range(1, self.authorities + 1)]
        servers += [(f"relay{i}", "relay") for i in range(1, self.relays + 1)]
        records: list[dict[str, Any]] = []
        for name, role in servers:
            data_dir = self.directory / name
            _fresh_instance_dir(data_dir)
            records.append(
                {
                    "name": name,
                    "role": role,
                    "data_dir": str(data_dir),
                    "or_port": None,  # ports are chosen just before the tors start
                    "dir_port": None,
                    "control_port": 0,
                    "socks_port": None,
                    "pid": 0,
                    "nickname": name,
                    "torrc": str(data_dir / "torrc"),
                }
            )
        state: dict[str, Any] = {
            "id": secrets.token_hex(8),
            "directory": str(self.directory),
            "state": "starting",
            "tor": tor,
            "owner_pid": self.owner_pid,
            "watchdogs": [],
            "scheduler": self.scheduler,
            "notes": [SCHEDULER_NOTE],
            "dir_authorities": [],
            "instances": records,
            "timings": {},
        }
        self._save(state)
        try:
            if self.owner_pid is not None:
                state["watchdogs"].append(self._start_watchdog(state, self.owner_pid, []))
                self._save(state)
            self._make_keys(tor, gencert, records)
            ports = iter(_free_ports(3 * self.authorities + 2 * self.relays))
            for record in records:
                record["or_port"] = next(ports)
                if record["role"] == "authority":
                    record["dir_port"] = next(ports)
                record["control_port"] = next(ports)
            state["dir_authorities"] = [
                f"DirAuthority {r['nickname']} orport={r['or_port']} v3ident={r['v3ident']} "
                f"{LOOPBACK}:{r['dir_port']} {r['fingerprint']}"
                for r in records
                if r["role"] == "authority"
            ]
            state["timings"]["keys_s"] = round(time.monotonic() - started, 2)
            log.info("keys made in %.1f s", time.monotonic() - started)

            for record in records:
                self._start(tor, state, record, deadline)
                self._save(state)
            self._wait_for_consensus(state, records, deadline)
            state["timings"]["consensus_s"] = round(time.monotonic() - started, 2)
            log.info(
                "consensus lists all %d relays after %.1f s",
                len(records),
                time.monotonic() - started,
            )

            names = [f"client{i}" for i in range(1, self.clients + 1)]
            clients = [self._new_client_record(name) for name in names]
            for record in clients:
                state["instances"].append(record)
                self._start(tor, state, record, deadline)
                self._save(state)
            self._wait_for_bootstrap(state, clients, deadline)
            state["state"] = "up"
            state["timings"]["up_s"] = round(time.monotonic() - started, 2)
            self._save(state)
            log.info("test network up after %.1f s", time.monotonic() - started)
        except BaseException:
            self.down()
            raise
        return self.status()

    def _prepare_directory(self) -> None:
        old = self._load()
        if old is not None:
            alive = [r["name"] for r in old["instances"] if self._record_alive(r)]
            if alive:
                raise TestNetError(
                    f"a test network is already running in {self.directory} "
                    f"({', '.join(alive)}); stop it first with "
                    f"`python -m onionmsg.testnet down --dir {self.directory}`"
                )
            self._stop_records(old.get("watchdogs", []))
            for record in old["instances"]:
                data_dir = Path(record["data_dir"])
                if data_dir.parent == self.directory and (data_dir / _MARKER).exists():
                    shutil.rmtree(data_dir, ignore_errors=True)
        strays = _processes_in(self.directory)
        if strays:
            raise TestNetError(
                f"tor processes of an earlier test network in {self.directory} are still "
                f"running (pids {', '.join(map(str, strays))}); stop them first with "
                f"`python -m onionmsg.testnet down --dir {self.directory}`"
            )
        self.directory.mkdir(parents=True, exist_ok=True)

    def _make_keys(self, tor: str, gencert: str, records: list[dict[str, Any]]) -> None:
        """Authority certificates (tor-gencert) and relay identities (tor --list-fingerprint)."""

        def make(record: dict[str, Any]) -> None:
            data_dir = Path(record["data_dir"])
            keys = data_dir / "keys"
            keys.mkdir(mode=0o700, exist_ok=True)
            if record["role"] == "authority":
                _run(
                    [
                        gencert,
                        "--create-identity-key",
                        "--passphrase-fd",
                        "0",
                        "-i",
                        str(keys / "authority_identity_key"),
                        "-s",
                        str(keys / "authority_signing_key"),
                        "-c",
                        str(keys / "authority_certificate"),
                        "-m",
                        "12",
                    ],
                    f"tor-gencert for {record['name']}",
                    stdin=b"\n",
                )
                cert = (keys / "authority_certificate").read_text()
                match = re.search(r"^fingerprint ([0-9A-F]{40})$", cert, re.MULTILINE)
                if match is None:
                    raise TestNetError(f"no fingerprint in {keys / 'authority_certificate'}")
                record["v3ident"] = match.group(1)
            _run(
                [
                    tor,
                    "--list-fingerprint",
                    "--quiet",
                    "--ignore-missing-torrc",
                    "-f",
                    os.devnull,
                    "--defaults-torrc",
                    os.devnull,
                    "--DataDirectory",
                    str(data_dir),
                    "--ORPort",
                    f"{LOOPBACK}:1",  # any: it only makes tor a relay; nothing is bound
                    "--Nickname",
                    record["nickname"],
                ],
                f"tor --list-fingerprint for {record['name']}",
            )
            fingerprint = (data_dir / "fingerprint").read_text().split()[-1]
            if not re.fullmatch(r"[0-9A-F]{40}", fingerprint):
                raise TestNetError(f"unexpected fingerprint {fingerprint!r} for {record['name']}")
            record["fingerprint"] = fingerprint

        with ThreadPoolExecutor(max_workers=max(1, len(records))) as pool:
            for future in [pool.submit(make, r) for r in records]:
                future.result()

    # ----------------------------------------------------------------- torrc and processes

    def _torrc(self, state: dict[str, Any], record: dict[str, Any]) -> str:
        data_dir = record["data_dir"]
        lines = [
            "# Written by onionmsg.testnet: a private Tor network on 127.0.0.1 only.",
            "TestingTorNetwork 1",
            *state["dir_authorities"],
            "UseDefaultFallbackDirs 0",
            f"DataDirectory {data_dir}",
            f"Nickname {record['nickname']}",
            "ContactInfo onionmsg-testnet@localhost.invalid",
            f"Log notice file {data_dir}/notice.log",
            "SafeLogging 1",
            "RunAsDaemon 0",
            "DisableDebuggerAttachment 0",
            "ShutdownWaitLength 0",
            f"PidFile {data_dir}/tor.pid",
            f"ControlPort {LOOPBACK}:{record['control_port']}",
            "CookieAuthentication 1",
            f"ControlPortWriteToFile {data_dir}/control-port",
            f"Schedulers {state.get('scheduler', SCHEDULER)}",
            "AssumeReachable 1",
            "PathsNeededToBuildCircuits 0.67",
            "ClientUseIPv6 0",
        ]
        watchdog = self._watchdog_for(state, record["name"])
        if watchdog is not None:
            lines.append(f"__OwningControllerProcess {watchdog}")
        if record["role"] in ("authority", "relay"):
            lines += [
                "SocksPort 0",
                f"Address {LOOPBACK}",
                f"ORPort {LOOPBACK}:{record['or_port']}",
                "ExitRelay 0",
                "ExitPolicy reject *:*",
                "TestingServerDownloadInitialDelay 0",
                "TestingServerConsensusDownloadInitialDelay 0",
            ]
        if record["role"] == "authority":
            lines += [
                f"DirPort {LOOPBACK}:{record['dir_port']}",
                "AuthoritativeDirectory 1",
                "V3AuthoritativeDirectory 1",
                "TestingV3AuthInitialVotingInterval 5",
                "TestingV3AuthInitialVoteDelay 2",
                "TestingV3AuthInitialDistDelay 2",
                "V3AuthVotingInterval 10",
                "V3AuthVoteDelay 2",
                "V3AuthDistDelay 2",
                "TestingDirAuthVoteHSDir *",
                "TestingDirAuthVoteGuard *",
                "TestingDirAuthVoteExit *",
                "TestingMinExitFlagThreshold 0",
            ]
        if record["role"] == "client":
            lines += [
                f"SocksPort {LOOPBACK}:{record['socks_port']} ExtendedErrors",
                "TestingClientDownloadInitialDelay 0",
                "TestingClientConsensusDownloadInitialDelay 0",
            ]
        return "\n".join(lines) + "\n"

    def _start(
        self,
        tor: str,
        state: dict[str, Any],
        record: dict[str, Any],
        deadline: float,
        *,
        keep_ports: bool = False,
    ) -> None:
        """Start one tor and wait until its control port answers.

        If the kernel handed one of its ports to someone else in the meantime, try again with
        fresh ports (only those no other torrc refers to: control, SOCKS, a relay's ORPort),
        unless ``keep_ports``.
        """
        data_dir = Path(record["data_dir"])
        for attempt in range(1, _START_ATTEMPTS + 1):
            offsets = {name: _size(data_dir / name) for name in ("notice.log", "tor.out")}
            torrc = Path(record["torrc"])
            torrc.write_text(self._torrc(state, record))
            (data_dir / "control-port").unlink(missing_ok=True)
            with open(data_dir / "tor.out", "ab") as out:
                proc = subprocess.Popen(
                    [tor, "-f", str(torrc), "--defaults-torrc", os.devnull],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=data_dir,
                )
            self._procs[record["name"]] = proc
            self._records[record["name"]] = record
            record["pid"] = proc.pid
            record["started"] = time.time()
            while True:
                if proc.poll() is not None:
                    break
                if (data_dir / "control-port").exists():
                    return
                if time.monotonic() > deadline:
                    raise TestNetError(
                        f"timed out waiting for {record['name']}'s control port; "
                        f"last lines of {data_dir / 'notice.log'}:\n"
                        f"{_tail(data_dir / 'notice.log')}"
                    )
                time.sleep(0.02)
            output = "".join(_read_from(data_dir / name, at) for name, at in offsets.items())
            if "Address already in use" in output and attempt < _START_ATTEMPTS and not keep_ports:
                log.warning("%s: a port was taken, retrying with fresh ports", record["name"])
                fresh = iter(_free_ports(3))
                record["control_port"] = next(fresh)
                if record["role"] == "client":
                    record["socks_port"] = next(fresh)
                elif record["role"] == "relay":
                    record["or_port"] = next(fresh)
                continue
            raise self._died(record, proc.returncode)
        raise AssertionError("unreachable")  # pragma: no cover

    def _died(self, record: dict[str, Any], returncode: int | None) -> TestNetError:
        if "data_dir" not in record:
            return TestNetError(
                f"the owner watchdog exited with status {returncode}; last lines of "
                f"{self.directory / 'watchdog.log'}:\n{_tail(self.directory / 'watchdog.log')}"
            )
        data_dir = Path(record["data_dir"])
        return TestNetError(
            f"tor instance {record['name']} exited with status {returncode}; "
            f"last lines of {data_dir / 'notice.log'}:\n{_tail(data_dir / 'notice.log')}\n"
            f"{_tail(data_dir / 'tor.out', 5)}"
        )

    def _check_running(self) -> None:
        """Raise with the log of any tor this object started that has exited."""
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise self._died(self._records[name], proc.returncode)

    # ----------------------------------------------------------------- waiting

    def _wait_for_consensus(
        self, state: dict[str, Any], records: list[dict[str, Any]], deadline: float
    ) -> None:
        """Wait until every relay's consensus lists every relay as Running, Valid and HSDir.

        Authorities first (they make it), then every relay: a relay that has no consensus yet
        refuses to extend circuits, and a client that starts then stalls at 95% for ~10 s.
        """
        expected = {r["fingerprint"]: r["name"] for r in records}
        missing: dict[str, list[str]] = {}
        with _controllers(records, deadline, self._check_running) as ctls:
            while True:
                self._check_running()
                missing = {}
                for record, controller in zip(records, ctls, strict=True):
                    lacking = _consensus_lacks(controller, expected)
                    if lacking:
                        missing[record["name"]] = lacking
                if not missing:
                    return
                if time.monotonic() > deadline:
                    name, lacking = next(iter(missing.items()))
                    notice = Path(state["directory"]) / name / "notice.log"
                    raise TestNetError(
                        f"timed out waiting for the consensus of {name} to list every relay "
                        f"with the HSDir flag (missing: {', '.join(lacking)}); "
                        f"last lines of {notice}:\n{_tail(notice)}"
                    )
                time.sleep(0.25)

    def _wait_for_bootstrap(
        self, state: dict[str, Any], clients: list[dict[str, Any]], deadline: float
    ) -> None:
        pending = {r["name"]: r for r in clients}
        with _controllers(clients, deadline, self._check_running) as ctls:
            by_name = {r["name"]: c for r, c in zip(clients, ctls, strict=True)}
            percent: dict[str, int] = {}
            while pending:
                self._check_running()
                for name, record in list(pending.items()):
                    try:
                        percent[name] = _bootstrap_percent(by_name[name])
                    except stem.ControllerError:
                        percent[name] = 0
                    if percent[name] >= 100:
                        record["bootstrap_s"] = round(time.time() - record["started"], 2)
                        log.info("%s bootstrapped in %.1f s", name, record["bootstrap_s"])
                        del pending[name]
                if pending and time.monotonic() > deadline:
                    name, record = next(iter(pending.items()))
                    notice = Path(record["data_dir"]) / "notice.log"
                    raise TestNetError(
                        f"timed out waiting for client tor {name} to bootstrap "
                        f"(at {percent.get(name, 0)}%); last lines of {notice}:\n{_tail(notice)}"
                    )
                if pending:
                    time.sleep(0.1)
        self._save(state)

    # ----------------------------------------------------------------- clients

    def _new_client_record(self, name: str) -> dict[str, Any]:
        data_dir = self.directory / name
        _fresh_instance_dir(data_dir)
        control_port, socks_port = _free_ports(2)
        return {
            "name": name,
            "role": "client",
            "data_dir": str(data_dir),
            "or_port": None,
            "dir_port": None,
            "control_port": control_port,
            "socks_port": socks_port,
            "pid": 0,
            "nickname": name,
            "torrc": str(data_dir / "torrc"),
        }

    def add_client(self, name: str, timeout: float = 60.0) -> TorInstance:
        """Start one more client tor on the running network and wait until it bootstraps."""
        deadline = time.monotonic() + timeout
        if not _NAME_RE.match(name):
            raise TestNetError(f"client name {name!r} must be 1-19 letters or digits")
        state = self._load()
        if state is None or state.get("state") != "up":
            raise TestNetError(f"no test network is up in {self.directory}")
        for existing in state["instances"]:
            if existing["name"] == name and (
                existing["role"] != "client" or self._record_alive(existing)
            ):
                raise TestNetError(f"the test network already has a tor named {name!r}")
        state["instances"] = [r for r in state["instances"] if r["name"] != name]
        record = self._new_client_record(name)
        stop_on_error = [record]
        try:
            if self._watchdog_for(state, name) is None and self.owner_pid is not None:
                watchdog = self._start_watchdog(state, self.owner_pid, [name])
                stop_on_error.append(watchdog)
                state.setdefault("watchdogs", []).append(watchdog)
                self._save(state)
            self._start(str(state["tor"]), state, record, deadline)
            state["instances"].append(record)
            self._save(state)
            self._wait_for_bootstrap(state, [record], deadline)
        except BaseException:
            self._stop_records(stop_on_error)
            state["instances"] = [r for r in state["instances"] if r["name"] != name]
            self._save(state)
            raise
        return TorInstance.from_json(record)

    def restart_client(self, name: str, timeout: float = 60.0) -> TorInstance:
        """Kill a client tor with SIGKILL and start it again: same data dir, same ports.

        Returns the instance (with its new pid) once the tor has bootstrapped again.
        """
        deadline = time.monotonic() + timeout
        state = self._load()
        if state is None or state.get("state") != "up":
            raise TestNetError(f"no test network is up in {self.directory}")
        records = [r for r in state["instances"] if r["name"] == name]
        if not records or records[0]["role"] != "client":
            raise TestNetError(f"the test network has no client tor named {name!r}")
        record = records[0]
        if self._record_alive(record):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(record["pid"]), signal.SIGKILL)
        old = self._procs.pop(name, None)
        if old is not None:
            old.wait(timeout=_KILL_GRACE)
        while self._record_alive(record):
            if time.monotonic() > deadline:
                raise TestNetError(f"client tor {name} (pid {record['pid']}) did not die")
            time.sleep(0.02)
        self._start(str(state["tor"]), state, record, deadline, keep_ports=True)
        self._save(state)
        self._wait_for_bootstrap(state, [record], deadline)
        return TorInstance.from_json(record)

    # ----------------------------------------------------------------- owner watchdog

    def _start_watchdog(
        self, state: dict[str, Any], owner_pid: int, names: list[str]
    ) -> dict[str, Any]:
        """A process that stops ``names`` (all when empty) once ``owner_pid`` has exited."""
        if not _pid_alive(owner_pid):
            raise TestNetError(f"the owner process {owner_pid} is not running")
        self.directory.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "onionmsg.testnet", "_watch", "--dir"]
        command += [str(self.directory), "--owner-pid", str(owner_pid)]
        command += ["--network-id", str(state.get("id")), *names]
        with open(self.directory / "watchdog.log", "ab") as out:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        name = f"watchdog-{proc.pid}"
        self._procs[name] = proc
        record = {
            "name": name,
            "pid": proc.pid,
            "owner_pid": owner_pid,
            "instances": names,
            "torrc": "_watch",  # the marker that identifies the pid as ours
        }
        self._records[name] = record
        return record

    @staticmethod
    def _watchdog_for(state: dict[str, Any], name: str) -> int | None:
        for watchdog in state.get("watchdogs", []):
            if not watchdog["instances"] or name in watchdog["instances"]:
                return int(watchdog["pid"])
        return None

    def watch(self, owner_pid: int, network_id: str, names: Sequence[str] = ()) -> None:
        """Block until the owner exits, then stop ``names`` (all when empty).

        Returns early when the network is down or replaced by another one (other id).
        """
        while True:
            if not _pid_alive(owner_pid):
                log.info("owner %d exited; stopping %s", owner_pid, ", ".join(names) or "all")
                state = self._load()
                if state is None or state.get("id") != network_id:
                    return
                if names:
                    self._stop_records([r for r in state["instances"] if r["name"] in names])
                else:
                    self.down()
                return
            try:
                state = self._load()
            except TestNetError:
                state = None
            if state is None or state.get("state") == "down" or state.get("id") != network_id:
                return
            time.sleep(0.5)

    # ----------------------------------------------------------------- status and down

    def instances(self) -> list[TorInstance]:
        state = self._load()
        return [] if state is None else [TorInstance.from_json(r) for r in state["instances"]]

    def status(self) -> dict[str, object]:
        """testnet.json plus, per instance, liveness and RSS, and each client's bootstrap %."""
        state = self._load()
        if state is None:
            raise TestNetError(f"no test network in {self.directory} (no {STATE_FILE})")
        instances: list[dict[str, object]] = []
        clients: dict[str, dict[str, object]] = {}
        rss_total = 0
        for record in state["instances"]:
            alive = self._record_alive(record)
            entry: dict[str, object] = {**record, "alive": alive}
            rss = _rss_kib(int(record["pid"])) if alive else None
            entry["rss_kib"] = rss
            rss_total += rss or 0
            if record["role"] == "client":
                percent = bootstrap_percent(int(record["control_port"])) if alive else None
                entry["bootstrap"] = percent
                clients[record["name"]] = {
                    "control_port": record["control_port"],
                    "socks_port": record["socks_port"],
                    "data_dir": record["data_dir"],
                    "pid": record["pid"],
                    "alive": alive,
                    "bootstrap": percent,
                }
            instances.append(entry)
        running = bool(instances) and all(e["alive"] for e in instances)
        return {
            **{k: v for k, v in state.items() if k != "instances"},
            "running": running and state.get("state") == "up",
            "instances": instances,
            "clients": clients,
            "rss_total_kib": rss_total,
        }

    def down(self) -> None:
        """Stop every tor of the network (SIGTERM, then SIGKILL after 5 s); idempotent."""
        state = self._load()
        records = [] if state is None else list(state["instances"])
        known = {r["name"] for r in records}
        for name, proc in self._procs.items():  # started but maybe not yet saved
            if name not in known:
                records.append({"name": name, "pid": proc.pid, "torrc": None})
        self._stop_records(records)
        if state is not None:
            self._stop_records(state.get("watchdogs", []))
        strays = _processes_in(self.directory)  # not (or no longer) in testnet.json
        self._stop_records([{"name": f"pid {pid}", "pid": pid} for pid in strays])
        if state is not None:
            state["state"] = "down"
            self._save(state)

    def _stop_records(self, records: Sequence[dict[str, Any]]) -> None:
        alive = [r for r in records if r.get("pid") and self._record_alive(r)]
        for record in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(record["pid"]), signal.SIGTERM)
        give_up = time.monotonic() + _KILL_GRACE
        while alive and time.monotonic() < give_up:
            time.sleep(0.05)
            alive = [r for r in alive if self._record_alive(r)]
        for record in alive:
            log.warning("%s did not exit after SIGTERM; sending SIGKILL", record["name"])
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(record["pid"]), signal.SIGKILL)
        give_up = time.monotonic() + _KILL_GRACE
        while alive and time.monotonic() < give_up:
            time.sleep(0.05)
            alive = [r for r in alive if self._record_alive(r)]
        for record in records:
            proc = self._procs.pop(str(record["name"]), None)
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=1)
        if alive:
            names = ", ".join(f"{r['name']} (pid {r['pid']})" for r in alive)
            raise TestNetError(f"could not stop {names}")


@contextlib.contextmanager
def _controllers(
    records: Sequence[dict[str, Any]], deadline: float, check: Callable[[], None]
) -> Iterator[list[Any]]:
    """Authenticated controllers for ``records``, retried until their tors accept them."""
    controllers: list[Any] = []
    try:
        for record in records:
            while True:
                try:
                    controllers.append(_connect(int(record["control_port"])))
                    break
                except (stem.SocketError, stem.connection.AuthenticationFailure, OSError) as e:
                    check()
                    if time.monotonic() > deadline:
                        raise TestNetError(
                            f"cannot use the control port of {record['name']} "
                            f"(127.0.0.1:{record['control_port']}): {e}"
                        ) from e
                    time.sleep(0.1)
        yield controllers
    finally:
        for controller in controllers:
            controller.close()


def _consensus_lacks(controller: Any, expected: dict[str, str]) -> list[str]:
    """Names of the relays ``expected`` (fingerprint -> name) not usable as HSDirs yet."""
    try:
        entries = list(controller.get_network_statuses())
    except (stem.ControllerError, ValueError):
        return sorted(expected.values())
    flags = {str(e.fingerprint): set(e.flags) for e in entries}
    return sorted(
        name for fp, name in expected.items() if not flags.get(fp, set()) >= _REQUIRED_FLAGS
    )


# --------------------------------------------------------------------------- CLI


def _default_directory() -> Path:
    env = os.environ.get("ONIONMSG_TESTNET_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("onionmsg")) / "testnet"


def _human_status(status: dict[str, object]) -> str:
    instances = status["instances"]
    assert isinstance(instances, list)
    dead = [str(e["name"]) for e in instances if not e["alive"]]
    summary = "running" if status["running"] else str(status.get("state", "unknown"))
    if dead and status.get("state") == "up":
        summary = f"degraded ({', '.join(dead)} not running)"
    lines = [f"test network in {status['directory']}: {summary}"]
    for entry in instances:
        ports = ", ".join(
            f"{key.removesuffix('_port')} {entry[key]}"
            for key in ("or_port", "dir_port", "control_port", "socks_port")
            if entry.get(key)
        )
        extra = f", bootstrap {entry['bootstrap']}%" if entry.get("bootstrap") is not None else ""
        state = "alive" if entry["alive"] else "dead"
        lines.append(
            f"  {entry['name']:<10} {entry['role']:<9} pid {entry['pid']} {state}: {ports}{extra}"
        )
    lines.append(f"  note: {SCHEDULER_NOTE}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m onionmsg.testnet",
        description="A private Tor network on 127.0.0.1 for onionmsg tests and demos.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="directory holding the network (default: $ONIONMSG_TESTNET_DIR or a cache dir)",
    )
    common.add_argument("--json", action="store_true", help="print JSON on stdout")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{up,down,status}")
    up = sub.add_parser("up", parents=[common], help="start a network and print its status")
    up.add_argument("--clients", type=int, default=2, help="client tors (default 2)")
    up.add_argument("--relays", type=int, default=2, help="relays (default 2)")
    up.add_argument("--authorities", type=int, default=3, help="authorities (default 3)")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    up.add_argument(
        "--owner-pid",
        type=int,
        default=None,
        help="make every tor exit when this process exits (default: keep running)",
    )
    sub.add_parser("down", parents=[common], help="stop every tor of the network")
    sub.add_parser("status", parents=[common], help="show instances, ports and liveness")
    watch = sub.add_parser("_watch", parents=[common])  # internal: the owner watchdog
    watch.add_argument("--owner-pid", type=int, required=True)
    watch.add_argument("--network-id", required=True)
    watch.add_argument("names", nargs="*")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``testnet up|down|status``: exit 0 on success, 1 on errors, 2 on usage errors."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if getattr(args, "clients", 0) < 0 or getattr(args, "relays", 0) < 0:
        parser.print_usage(sys.stderr)
        print("testnet: error: counts must not be negative", file=sys.stderr)
        return 2
    if getattr(args, "authorities", 1) < 1:
        parser.print_usage(sys.stderr)
        print("testnet: error: need at least one authority", file=sys.stderr)
        return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("testnet: %(message)s"))
    log.addHandler(handler)
    previous_level = log.level
    log.setLevel(logging.INFO)
    directory: Path = args.dir if args.dir is not None else _default_directory()
    try:
        if args.command == "up":
            net = TestNet(
                directory,
                authorities=args.authorities,
                relays=args.relays,
                clients=args.clients,
                owner_pid=args.owner_pid,
            )
            print(json.dumps(net.up(timeout=args.timeout), indent=2))
            return 0
        net = TestNet(directory)
        if args.command == "_watch":
            net.watch(args.owner_pid, args.network_id, args.names)
            return 0
        if args.command == "down":
            net.down()
            if args.json:
                print(json.dumps({"directory": str(net.directory), "state": "down"}))
            else:
                print(f"test network in {net.directory} stopped", file=sys.stderr)
            return 0
        status = net.status()
        print(json.dumps(status, indent=2) if args.json else _human_status(status))
        return 0 if status["running"] else 1
    except TestNetError as e:
        print(f"testnet: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("testnet: interrupted", file=sys.stderr)
        return 1
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)


if __name__ == "__main__":
    raise SystemExit(main())
