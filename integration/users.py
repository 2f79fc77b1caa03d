"""Real onionmsg users for integration tests: separate homes, real daemons, the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], timeout: float = 30.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.1)


@dataclass
class User:
    """One user: a home directory, the CLI, and (when started) a daemon process."""

    name: str
    home: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    daemon: subprocess.Popen[bytes] | None = None
    address: str = ""
    tor: Any = None  # the TorInstance a tor user's daemon uses

    def cli(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "onionmsg", "--home", str(self.home), *args],
            capture_output=True,
            text=True,
            env=self.env,
            input=input,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"onionmsg {' '.join(args)} exited {result.returncode}: {result.stderr}"
            )
        return result

    def init(self, *extra: str) -> str:
        self.address = self.cli("init", *extra).stdout.strip()
        return self.address

    def start_daemon(self, *args: str, launcher: Sequence[str] = ("onionmsg",)) -> None:
        """``launcher``: the module (and its leading arguments) that runs the CLI.

        Cover traffic is off unless ``args`` choose a profile or rate: most tests are about
        delivery, not timing, and should not wait seconds for each cell's slot."""
        assert self.daemon is None or self.daemon.poll() is not None
        if not any(arg.startswith("--cover") for arg in args):
            args = ("--cover", "off", *args)
        log = open(self.home / f"daemon-{int(time.time() * 1000)}.stderr", "wb")  # noqa: SIM115
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", *launcher, "--home", str(self.home), "daemon", *args],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=self.env,
        )
        wait_for(self._daemon_ready, 60, f"{self.name}'s daemon to start")

    def _daemon_ready(self) -> bool:
        assert self.daemon is not None
        if self.daemon.poll() is not None:
            raise AssertionError(f"{self.name}'s daemon exited with {self.daemon.returncode}")
        return self.cli("status", "--json", check=False).returncode == 0

    def stop_daemon(self, sig: int = signal.SIGTERM) -> int:
        assert self.daemon is not None
        self.daemon.send_signal(sig)
        code = self.daemon.wait(30)
        self.daemon = None
        return code

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.cli("status", "--json").stdout)
        return result

    def tcp_endpoint(self) -> str:
        listening = str(self.status()["listening"])
        assert listening.startswith("tcp ")
        return listening.removeprefix("tcp ")

    def contacts(self) -> list[dict[str, Any]]:
        out = self.cli("contacts", "list", "--json").stdout
        return [json.loads(line) for line in out.splitlines()]

    def messages(self) -> list[dict[str, Any]]:
        out = self.cli("messages", "--json").stdout
        return [json.loads(line) for line in out.splitlines()]
