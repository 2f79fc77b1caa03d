"""A small synchronous client of the control API, for the CLI and scripts."""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from onionmsg.errors import OnionmsgError


class DaemonNotRunning(OnionmsgError):
    """No onionmsg daemon is running for this home."""


class ControlError(OnionmsgError):
    """The daemon refused the request."""


class ControlClient:
    def __init__(self, socket_path: Path, timeout: float | None = 30.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            self._sock.close()
            raise DaemonNotRunning(
                f"no daemon is running for {socket_path.parent}: start 'onionmsg daemon' first"
            ) from None
        self._reader = self._sock.makefile("rb")
        self._ids = itertools.count(1)

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, **params: Any) -> Any:
        request_id = next(self._ids)
        line = json.dumps({"id": request_id, "method": method, "params": params}) + "\n"
        self._sock.sendall(line.encode("utf-8"))
        for document in self._documents():
            if document.get("id") == request_id:
                if "error" in document:
                    raise ControlError(str(document["error"]))
                return document.get("result")
        raise ControlError("the daemon closed the connection")

    def events(self) -> Iterator[dict[str, Any]]:
        """Events after a "subscribe" call, as they happen, until the daemon stops."""
        self._sock.settimeout(None)
        for document in self._documents():
            event = document.get("event")
            if isinstance(event, dict):
                yield event

    def _documents(self) -> Iterator[dict[str, Any]]:
        for line in self._reader:
            document = json.loads(line)
            if isinstance(document, dict):
                yield document
