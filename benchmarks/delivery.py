"""Delivery throughput, raw crypto for comparison, store open time and store size.

    .venv/bin/python benchmarks/delivery.py [--messages N]

1. Two real daemons on loopback TCP (cover traffic off): N messages sent back to back
   through the control API; messages per second through encrypt -> store -> send ->
   receive -> store -> ack, until the last is delivered.
2. The same payloads through PyNaCl's SecretBox (encrypt + decrypt) in-process.
3. Store open time with the real Argon2id limits (the KDF, then SQLCipher's open).
4. Store size per 10,000 messages (5,000 each way, ~100-byte texts).

Prints Markdown tables for docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nacl.secret
import nacl.utils

from onionmsg.control.client import ControlClient
from onionmsg.crypto.identity import Identity
from onionmsg.store.db import Store
from onionmsg.store.keys import MEMLIMIT, OPSLIMIT, KeyParams

TEXT = "x" * 100


def onionmsg(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onionmsg", "--home", str(home), *args],
        capture_output=True,
        text=True,
        check=True,
    )


def start_daemon(home: Path) -> subprocess.Popen[bytes]:
    onionmsg(home, "init", "--no-passphrase")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "onionmsg",
            "--home",
            str(home),
            "daemon",
            "--transport",
            "tcp",
            "--cover",
            "off",
        ],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with ControlClient(home / "control.sock") as client:
                client.call("status")
            return process
        except Exception:  # not up yet
            time.sleep(0.05)
            continue
    raise RuntimeError("daemon did not start")


def call(home: Path, method: str, **params: Any) -> Any:
    with ControlClient(home / "control.sock") as client:
        return client.call(method, **params)


def daemon_throughput(tmp: Path, n: int) -> float:
    alice, bob = tmp / "alice", tmp / "bob"
    processes = [start_daemon(alice), start_daemon(bob)]
    try:
        status = {home: call(home, "status") for home in (alice, bob)}
        for me, other, name in ((alice, bob, "bob"), (bob, alice, "alice")):
            call(
                me,
                "contacts.add",
                address=status[other]["address"],
                name=name,
                tcp=status[other]["listening"].removeprefix("tcp "),
            )
        while not all(c["online"] for c in call(alice, "contacts.list")):
            time.sleep(0.05)
        with (
            ControlClient(alice / "control.sock", timeout=120) as events,
            ControlClient(alice / "control.sock", timeout=120) as sender,
        ):
            events.call("subscribe")
            started = time.perf_counter()
            ids = {sender.call("send", contact="bob", text=TEXT)["id"] for _ in range(n)}
            for event in events.events():
                if event.get("status") == "delivered":
                    ids.discard(event["id"])
                    if not ids:
                        break
            return n / (time.perf_counter() - started)
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)


def secretbox_throughput(n: int) -> float:
    box = nacl.secret.SecretBox(nacl.utils.random(32))
    payload = TEXT.encode()
    started = time.perf_counter()
    for _ in range(n):
        box.decrypt(box.encrypt(payload))
    return n / (time.perf_counter() - started)


def store_open_times(tmp: Path) -> tuple[float, float]:
    home = tmp / "carol"
    secret = tmp / "passphrase"
    secret.write_text("a passphrase for the benchmark\n")
    onionmsg(home, "init", "--passphrase-file", str(secret))
    params = KeyParams.load(home / "store.key.json")
    kdf, opening = [], []
    for _ in range(5):
        started = time.perf_counter()
        key = params.derive(b"a passphrase for the benchmark")
        derived = time.perf_counter()
        Store.open(home / "store.db", key).close()
        kdf.append(derived - started)
        opening.append(time.perf_counter() - derived)
    return statistics.median(kdf), statistics.median(opening)


def store_size(tmp: Path, messages: int = 10_000) -> int:
    path = tmp / "size.db"
    store = Store.create(path, bytes(32), Identity.generate())
    contact = store.add_contact(Identity.generate().onion_address, "bob", None, 0)
    for i in range(messages // 2):
        message_id = i.to_bytes(16, "big")
        store.queue_outgoing(
            contact.id,
            message_id,
            text=TEXT,
            content=None,
            envelope=b"e" * 300,
            ratchet_state="{}" * 400,
            now_ms=i,
        )
        store.acknowledge(contact.id, message_id)  # delivered: the envelope leaves the outbox
        store.store_incoming(
            contact.id, message_id, text=TEXT, sent_at=i, ratchet_state="{}" * 400, now_ms=i
        )
    store.close()
    return sum(p.stat().st_size for p in tmp.glob("size.db*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onionmsg-bench-") as name:
        tmp = Path(name)
        ours = daemon_throughput(tmp, args.messages)
        raw = secretbox_throughput(args.messages)
        kdf, opening = store_open_times(tmp)
        size = store_size(tmp)
    print(f"{args.messages} messages of {len(TEXT)} characters\n")
    print("| path | messages/s | per message |")
    print("|---|---|---|")
    print(
        f"| onionmsg: encrypt → store → send → receive → store → ack | {ours:.0f} | "
        f"{1000 / ours:.2f} ms |"
    )
    print(f"| PyNaCl SecretBox encrypt + decrypt | {raw:.0f} | {1e6 / raw:.1f} µs |")
    print(f"\nratio raw / onionmsg: {raw / ours:.0f} times\n")
    print("| store | value |")
    print("|---|---|")
    print(
        f"| Argon2id (opslimit {OPSLIMIT}, memlimit {MEMLIMIT // 2**20} MiB) | "
        f"{kdf * 1000:.0f} ms |"
    )
    print(f"| SQLCipher open after the KDF | {opening * 1000:.1f} ms |")
    print(f"| store size for 10,000 messages | {size / 1e6:.1f} MB ({size / 10_000:.0f} B each) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
