"""What anyone who can reach the listener can cost a daemon (tcp transport: the same node
code as behind an onion service, where tor forwards each stream to this listener)."""

from __future__ import annotations

import os
import selectors
import socket
import time
from pathlib import Path

from integration.users import User, wait_for
from onionmsg.node import MAX_HANDSHAKING
from onionmsg.session.link import HANDSHAKE_TIMEOUT


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_500_connections_that_never_finish_the_handshake_are_all_closed(tmp_path: Path) -> None:
    user = User("alice", tmp_path / "alice")
    user.init("--no-passphrase")
    user.start_daemon("--transport", "tcp", "--listen", "127.0.0.1:0")
    try:
        assert user.daemon is not None
        pid = user.daemon.pid
        host, port = user.tcp_endpoint().rsplit(":", 1)
        fds_before, rss_before = open_fds(pid), rss_kib(pid)
        started = time.monotonic()
        selector = selectors.DefaultSelector()
        for i in range(500):
            sock = socket.create_connection((host, int(port)))
            sock.setblocking(False)
            if i % 2:
                sock.send(b"\x00" * 40)  # half a handshake cell, then silence
            selector.register(sock, selectors.EVENT_READ)
        open_now = wait_for(lambda: open_fds(pid) - fds_before, 10, "connections accepted")
        # Those past the cap were refused at once; the rest are held for the handshake only.
        assert open_now <= MAX_HANDSHAKING + 2
        closed = 0
        while closed < 500 and time.monotonic() - started < HANDSHAKE_TIMEOUT + 15:
            for key, _ in selector.select(timeout=1):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                try:
                    data = ready.recv(4096)
                except ConnectionResetError:
                    data = b""
                assert data == b"", "the daemon must not answer a handshake it never got"
                selector.unregister(ready)
                ready.close()
                closed += 1
        assert closed == 500, f"{500 - closed} connections still open after the timeout"
        wait_for(lambda: open_fds(pid) <= fds_before, 10, "file descriptors back to baseline")
        assert rss_kib(pid) - rss_before < 16 * 1024  # memory back near where it was
        assert user.status()["address"] == user.address  # and the daemon still answers
    finally:
        if user.daemon is not None:
            user.daemon.kill()
            user.daemon.wait()
