"""A private i2pd for development and tests, shut in a loopback-only network namespace.

Public I2P is out of bounds here, so the router runs in a network namespace of its own
(``unshare --net``): it can reach nothing but itself, whatever it tries (reseeding,
exploration). Its SAM port is reached through a unix socket that a small relay inside the
namespace forwards to 127.0.0.1:7656 there; onionmsg takes ``--i2p-sam unix:PATH``.

What makes one i2pd 2.45.1 carry streams between two of its own destinations (measured):

* ``floodfill = true``: the router then counts itself as the floodfill that stores and
  answers lease set lookups;
* a *published* NTCP2 address: lease set publication only uses tunnels "compatible" with
  the floodfill's reachable transports, and i2pd will not publish a 127/8 address, so the
  namespace gets 10.23.0.1 on its loopback and ``reservedrange = false`` (without it every
  STREAM CONNECT fails at once with CANT_REACH_PEER);
* the address book on, with an empty hosts.txt (with it off, 2.45.1 crashes on STREAM
  CONNECT);
* sessions with zero-hop tunnels and ``i2cp.leaseSetType=1`` (see transport/i2p.py).

``python -m onionmsg.i2ptestnet up DIR`` runs one in the foreground until interrupted.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from onionmsg.errors import OnionmsgError

ROUTER_HOST = "10.23.0.1"  # exists only inside the namespace
SAM_PORT = 7656  # inside the namespace, so always free
NTCP2_PORT = 17070
SOCKET_NAME = "sam.sock"
_PR_SET_PDEATHSIG = 1

_CONFIG = """\
log = file
logfile = {dir}/i2pd.log
loglevel = warn
tunconf = {dir}/tunnels.conf
pidfile = {dir}/i2pd.pid
daemon = false
service = false
host = {host}
port = {ntcp2_port}
ipv4 = true
ipv6 = false
reservedrange = false
floodfill = true
[ntcp2]
enabled = true
published = true
[ssu2]
enabled = false
[http]
enabled = false
[httpproxy]
enabled = false
[socksproxy]
enabled = false
[sam]
enabled = true
address = 127.0.0.1
port = {sam_port}
[bob]
enabled = false
[i2cp]
enabled = false
[i2pcontrol]
enabled = false
[upnp]
enabled = false
[nettime]
enabled = false
[reseed]
verify = true
urls =
yggurls =
[addressbook]
enabled = true
defaulturl =
subscriptions =
"""


class I2PTestNetError(OnionmsgError):
    """The private i2pd could not be started."""


def find_i2pd() -> str:
    found = shutil.which("i2pd") or ("/usr/sbin/i2pd" if os.path.exists("/usr/sbin/i2pd") else None)
    if found is None:
        raise I2PTestNetError("i2pd is not installed (apt-get install i2pd)")
    return found


def _die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


class I2PRouter:
    """One private i2pd in its own network namespace, its SAM port at ``unix:`` + a path.

    The router and its relay exit with this process (and with ``owner_pid``, if given).
    """

    def __init__(self, directory: Path, owner_pid: int | None = None) -> None:
        self.directory = directory
        self.owner_pid = owner_pid if owner_pid is not None else os.getpid()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.directory / SOCKET_NAME

    @property
    def sam(self) -> str:
        """What to give ``--i2p-sam``."""
        return f"unix:{self.socket_path}"

    def write_config(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = _CONFIG.format(
            dir=self.directory, host=ROUTER_HOST, ntcp2_port=NTCP2_PORT, sam_port=SAM_PORT
        )
        (self.directory / "i2pd.conf").write_text(config)
        (self.directory / "tunnels.conf").write_text("")
        (self.directory / "addressbook").mkdir(exist_ok=True)
        (self.directory / "addressbook" / "hosts.txt").write_text("")
        (self.directory / "subscriptions.txt").write_text("# none: this router is private\n")

    def start(self, timeout: float = 30.0) -> None:
        if shutil.which("unshare") is None:
            raise I2PTestNetError("unshare (util-linux) is needed to isolate the router")
        find_i2pd()
        self.write_config()
        self.socket_path.unlink(missing_ok=True)
        log = open(self.directory / "supervisor.log", "ab")  # noqa: SIM115 - the child owns it
        self._process = subprocess.Popen(
            [
                "unshare",
                "--net",
                sys.executable,
                "-m",
                "onionmsg.i2ptestnet",
                "_inside",
                str(self.directory),
                "--owner-pid",
                str(self.owner_pid),
            ],
            stdout=log,
            stderr=log,
            preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self._sam_answers():
            if self._process.poll() is not None:
                raise I2PTestNetError(
                    f"the private i2pd exited ({self._process.returncode}); see "
                    f"{self.directory}/supervisor.log and i2pd.log"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise I2PTestNetError(f"i2pd's SAM bridge did not answer within {timeout} s")
            time.sleep(0.1)

    def _sam_answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(str(self.socket_path))
                sock.sendall(b"HELLO VERSION MIN=3.1 MAX=3.1\n")
                return sock.recv(100).startswith(b"HELLO REPLY RESULT=OK")
        except OSError:
            return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, timeout: float = 30.0) -> None:
        self.stop()
        self.start(timeout)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


# -- inside the namespace -------------------------------------------------------------------


def _inside(directory: Path, owner_pid: int) -> int:
    """Bring up the namespace's loopback, run i2pd and the SAM relay until told to stop."""
    from twisted.internet import reactor as _reactor
    from twisted.internet.endpoints import UNIXServerEndpoint
    from twisted.internet.task import LoopingCall
    from twisted.protocols.portforward import ProxyFactory

    reactor: Any = _reactor
    _die_with_parent(signal.SIGTERM)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{ROUTER_HOST}/32", "dev", "lo"], check=True)
    i2pd = subprocess.Popen(
        [find_i2pd(), "--datadir", str(directory), "--conf", str(directory / "i2pd.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )

    def wait_for_sam() -> None:
        for _ in range(300):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", SAM_PORT)) == 0:
                    return
            time.sleep(0.05)

    def shutdown(*_args: object) -> None:
        if reactor.running:
            reactor.callFromThread(reactor.stop)

    def watch() -> None:
        if i2pd.poll() is not None:
            print(f"i2pd exited with {i2pd.returncode}", file=sys.stderr)
            shutdown()
        try:
            os.kill(owner_pid, 0)
        except ProcessLookupError:
            shutdown()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    wait_for_sam()
    factory = ProxyFactory("127.0.0.1", SAM_PORT)
    factory.noisy = False
    socket_path = directory / SOCKET_NAME
    UNIXServerEndpoint(reactor, str(socket_path), mode=0o600).listen(factory)
    LoopingCall(watch).start(0.5)
    reactor.run(installSignalHandlers=False)
    i2pd.terminate()
    try:
        i2pd.wait(10)
    except subprocess.TimeoutExpired:
        i2pd.kill()
        i2pd.wait()
    socket_path.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onionmsg.i2ptestnet")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run a private i2pd until interrupted")
    up.add_argument("directory", type=Path)
    inside = sub.add_parser("_inside")  # internal: runs inside the namespace
    inside.add_argument("directory", type=Path)
    inside.add_argument("--owner-pid", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "_inside":
        return _inside(args.directory.resolve(), args.owner_pid)
    router = I2PRouter(args.directory.resolve())
    try:
        router.start()
        print(f"i2pd is up; use --i2p-sam {router.sam} --i2p-tunnel-length 0", flush=True)
        while router.running:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        router.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
