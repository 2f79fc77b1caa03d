"""The fuzz targets in CI: every seed passes in-process, the seeds reach the deep states
they were made for, and each target runs under atheris for a short budget.

`make fuzz` runs the same targets for hours; docs/architecture.md ("Fuzzing") explains.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.targets import (
    ALICE,
    BOB,
    CORPUS,
    TARGETS,
    bob_session,
    control_protocol,
    envelope_from_bytes,
    responder_fed,
)
from onionmsg.crypto.ratchet import Ratchet
from onionmsg.delivery.envelopes import open_envelope
from onionmsg.session.link import LinkEstablished, MessageReceived

ROOT = Path(__file__).resolve().parent.parent
SMOKE_SECONDS = 1


def seeds(name: str) -> list[bytes]:
    return [path.read_bytes() for path in sorted((CORPUS / name).iterdir())]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_seed_passes_its_target(name: str) -> None:
    inputs = seeds(name)
    assert len(inputs) >= 3
    for data in inputs:
        TARGETS[name].run(data)


def test_handshake_seeds_are_real_transcripts_that_complete() -> None:
    complete = 0
    for data in seeds("handshake"):
        link, events = responder_fed(data)
        if link.established:
            complete += 1
            assert events[0] == LinkEstablished(ALICE.onion_address)
            assert sum(isinstance(e, MessageReceived) for e in events) == 4
    assert complete == 2


def test_envelope_seeds_open_with_the_recorded_session() -> None:
    for data in seeds("envelope"):
        with_session, envelope = envelope_from_bytes(data)
        ratchet = Ratchet.from_json(bob_session()) if with_session else None
        open_envelope(BOB, ALICE.public_key, ratchet, envelope)  # raises if not real


def test_control_seeds_are_answered_by_the_real_node() -> None:
    protocol, transport = control_protocol()
    results = 0
    for data in seeds("control"):
        transport.clear()
        protocol.lineReceived(data)
        replies = [json.loads(line) for line in transport.value().splitlines()]
        results += sum("result" in reply for reply in replies)
    assert results >= 15  # most real requests succeed; a few refer to nothing on purpose


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_runs_under_atheris(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fuzz.run", name, "--seconds", str(SMOKE_SECONDS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    executions = re.search(r"stat::number_of_executed_units: (\d+)", done.stderr)
    assert executions is not None and int(executions.group(1)) > len(seeds(name))
