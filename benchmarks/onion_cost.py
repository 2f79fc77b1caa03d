"""What each endpoint onion costs a tor: circuits and descriptor uploads, on the testnet.

    .venv/bin/python benchmarks/onion_cost.py [--onions 1 5 10] [--settle 20]

Starts a private Tor network (onionmsg.testnet), then on one client tor publishes N
endpoint onions with the exact ADD_ONION line TorTransport sends (V3Auth, one
ClientAuthV3), waits until every descriptor is uploaded and ``--settle`` seconds more, and
counts the tor's circuits by purpose (GETINFO circuit-status) and the HS_DESC UPLOAD
events (one per HSDir per descriptor).  The onions are withdrawn between rounds.

The testnet has 5 relays, so a descriptor reaches at most 5 HSDirs here where the public
network's hashring gives 2 replicas x 4 spread = 8 per descriptor, twice (current and next
time period).  Prints a Markdown table for docs/architecture.md.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from stem.control import Controller, EventType

from onionmsg.crypto.endpoint import ClientAuthKey, EndpointKey
from onionmsg.testnet import TestNet
from onionmsg.transport.tor import add_onion_command, parse_service_id


def circuits_by_purpose(controller: Any) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for circuit in controller.get_circuits():
        if circuit.status == "BUILT":
            counts[str(circuit.purpose)] += 1
    return counts


def measure(controller: Any, count: int, settle: float) -> dict[str, Any]:
    uploads: collections.Counter[str] = collections.Counter()  # UPLOAD requests per onion
    uploaded: set[str] = set()
    lock = threading.Condition()

    def on_hs_desc(event: Any) -> None:
        with lock:
            if event.action == "UPLOAD":
                uploads[event.address] += 1
            elif event.action == "UPLOADED":
                uploaded.add(event.address)
                lock.notify_all()

    before = circuits_by_purpose(controller)
    controller.add_event_listener(on_hs_desc, EventType.HS_DESC)
    onions = []
    started = time.monotonic()
    for _ in range(count):
        key, auth = EndpointKey.generate(), ClientAuthKey.generate()
        command = add_onion_command(key.tor_key_blob(), 9, client_auth_public=auth.public)
        onions.append(parse_service_id(str(controller.msg(command))))
    with lock:
        lock.wait_for(lambda: uploaded >= set(onions), timeout=120)
        first_upload = time.monotonic() - started
    time.sleep(settle)
    after = circuits_by_purpose(controller)
    controller.remove_event_listener(on_hs_desc)
    for onion in onions:
        controller.msg(f"DEL_ONION {onion}")
    added = {p: after[p] - before[p] for p in set(after) | set(before) if after[p] != before[p]}
    return {
        "onions": count,
        "all_uploaded_s": round(first_upload, 1),
        "circuit_delta": added,
        "upload_requests_per_onion": round(sum(uploads[o] for o in onions) / count, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onions", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--settle", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onion-cost-") as directory:
        net = TestNet(Path(directory), clients=1, owner_pid=os.getpid())
        net.up()
        try:
            tor = next(i for i in net.instances() if i.role == "client")
            with Controller.from_port(address="127.0.0.1", port=tor.control_port) as controller:
                controller.authenticate()
                rows = [measure(controller, n, args.settle) for n in args.onions]
        finally:
            net.down()
    print("| onions | all uploaded after | new circuits (built, by purpose) | UPLOADs per onion |")
    print("|---|---|---|---|")
    for row in rows:
        delta = ", ".join(f"{p} +{n}" for p, n in sorted(row["circuit_delta"].items()))
        print(
            f"| {row['onions']} | {row['all_uploaded_s']} s | {delta} | "
            f"{row['upload_requests_per_onion']} |"
        )


if __name__ == "__main__":
    main()
