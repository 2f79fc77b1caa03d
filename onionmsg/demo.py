"""`make demo`: a private Tor network, two users (alice and bob), a chat over onion services.

Everything lives in one directory (default ``./demo``); Ctrl-C (or the end of the
scripted part with ``--no-wait``) tears everything down.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from onionmsg.testnet import TestNet, TestNetError

USERS = ("alice", "bob")


def _say(text: str) -> None:
    print(text, flush=True)


def _onionmsg(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onionmsg", "--home", str(home), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def _status(home: Path) -> dict[str, Any] | None:
    result = _onionmsg(home, "status", "--json")
    return json.loads(result.stdout) if result.returncode == 0 else None


def _messages(home: Path) -> list[dict[str, Any]]:
    result = _onionmsg(home, "messages", "--json")
    return [json.loads(line) for line in result.stdout.splitlines()]


def run(directory: Path, wait: bool) -> int:
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    net = TestNet(directory / "tor", clients=2, owner_pid=os.getpid())
    daemons: list[subprocess.Popen[bytes]] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        started = time.monotonic()
        _say("1. Starting a private Tor network on 127.0.0.1 (3 authorities, 2 relays, 2 clients)")
        net.up()
        clients = [i for i in net.instances() if i.role == "client"]
        _say(f"   ready in {time.monotonic() - started:.0f} s")
        homes = {name: directory / name for name in USERS}
        addresses = {}
        for name, tor in zip(USERS, clients, strict=True):
            home = homes[name]
            if not (home / "store.key.json").exists():
                result = _onionmsg(home, "init", "--no-passphrase")
                if result.returncode:
                    raise RuntimeError(result.stderr.strip())
            log = open(home / "daemon.stderr", "ab")  # noqa: SIM115 - lives as long as the daemon
            daemons.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "onionmsg",
                        "--home",
                        str(home),
                        "daemon",
                        "--transport",
                        "tor",
                        "--tor-control",
                        f"tcp:127.0.0.1:{tor.control_port}",
                        # Cover traffic on, at the rate that keeps a demo chat brisk
                        # (a cell's mean wait is 0.5 s; `standard` waits 5 s).
                        "--cover",
                        "high",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            )
        _say("2. Starting alice's and bob's daemons; each publishes its onion service")
        for name in USERS:
            status = _wait(partial(_reachable_status, homes[name]), 120, f"{name}'s onion")
            addresses[name] = status["address"]
            _say(f"   {name:5} is reachable at {status['address']}.onion")
        _say("3. They add each other as contacts")
        for me, other in (("alice", "bob"), ("bob", "alice")):
            if not any(c["name"] == other for c in _contacts(homes[me])):
                _onionmsg(homes[me], "contacts", "add", addresses[other], "--name", other)
        _say("4. A short conversation over real v3 onion services:")
        script = [
            ("alice", "bob", "Hi Bob! This travels from my onion service to yours."),
            ("bob", "alice", "Hi Alice, got it. No server in between, just Tor."),
            ("alice", "bob", "And the link is end-to-end encrypted on top of Tor."),
        ]
        for sender, recipient, text in script:
            sent_at = time.monotonic()
            _onionmsg(homes[sender], "send", recipient, text)
            _wait(partial(_delivered, homes[sender], text), 120, "delivery")
            seconds = time.monotonic() - sent_at
            _say(
                f"   {sender:5} -> {recipient:5}: {text}   [delivered, seen after {seconds:.1f} s]"
            )
        _say(f"\nAll of this took {time.monotonic() - started:.0f} s.")
        if not wait:
            return 0
        if sys.stdin.isatty() and sys.stdout.isatty():
            _say("5. Opening alice's console UI; bob answers every message (F1: help).")
            time.sleep(1.5)
            threading.Thread(target=_bob_replies, args=(homes["bob"],), daemon=True).start()
            subprocess.run([sys.executable, "-m", "onionmsg", "--home", str(homes["alice"])])
            return 0
        _say("Alice and Bob keep running. Continue by hand in another terminal:")
        for name in USERS:
            other = "bob" if name == "alice" else "alice"
            prefix = f"{shlex.quote(sys.executable)} -m onionmsg --home {homes[name]}"
            _say(f"   {prefix} send {other} 'hello'")
            _say(f"   {prefix} messages --follow")
        _say("\nPress Ctrl-C here to stop the daemons and the Tor network.")
        while all(d.poll() is None for d in daemons):
            time.sleep(0.5)
        _say("a daemon exited; stopping")
        return 1
    except KeyboardInterrupt:
        _say("\nstopping")
        return 0
    except (TestNetError, TimeoutError, RuntimeError) as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    finally:
        for daemon in daemons:
            if daemon.poll() is None:
                daemon.terminate()
        for daemon in daemons:
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
        net.down()


def _bob_replies(home: Path) -> None:
    """Bob, online in the background while the user chats as alice: he answers everything."""
    from onionmsg.control.client import ControlClient, ControlError

    try:
        # One connection for the events, one for the replies (a reply must not eat events).
        with (
            ControlClient(home / "control.sock", timeout=None) as client,
            ControlClient(home / "control.sock") as sender,
        ):
            client.call("subscribe")
            seen = {m["seq"] for m in client.call("messages")}
            for event in client.events():
                if event.get("event") != "message" or event.get("direction") != "in":
                    continue
                if event["seq"] in seen:
                    continue
                seen.add(event["seq"])
                words = len(event["text"].split())
                reply = f"Bob here: got your {words}-word message over Tor. Try F1 for every key."
                sender.call("send", contact=event["address"], text=reply)
    except (OSError, ControlError):
        return  # the demo is stopping


def _reachable_status(home: Path) -> dict[str, Any] | None:
    status = _status(home)
    return status if status and status["network"]["reachable"] else None


def _delivered(home: Path, text: str) -> bool:
    return any(m["text"] == text and m["status"] == "delivered" for m in _messages(home))


def _contacts(home: Path) -> list[dict[str, Any]]:
    result = _onionmsg(home, "contacts", "list", "--json")
    return [json.loads(line) for line in result.stdout.splitlines()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onionmsg.demo", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("demo"), help="where to keep it all")
    parser.add_argument("--no-wait", action="store_true", help="stop after the scripted part")
    args = parser.parse_args(argv)
    return run(args.dir, wait=not args.no_wait)


if __name__ == "__main__":
    raise SystemExit(main())
