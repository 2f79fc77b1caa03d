"""An asynchronous client of the control API, on the Twisted reactor (for the console UI).

The same JSON lines as ``client.ControlClient``, but nothing blocks: ``call`` returns a
Deferred that fires with the result (or fails with ``ControlError``), and after
``subscribe`` every event goes to the ``on_event`` callback as it arrives.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from onionmsg.control.client import ControlError, DaemonNotRunning

Event = dict[str, Any]
# A reply holds a whole history at most (32 KiB of text per message); a line longer than
# this is a broken or hostile daemon, and the connection is dropped.
MAX_REPLY = 256 * 1024 * 1024


class AsyncControlClient(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_REPLY

    def __init__(
        self,
        on_event: Callable[[Event], None] | None = None,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self._on_event = on_event
        self._on_lost = on_lost
        self._ids = itertools.count(1)
        self._pending: dict[int, Deferred[Any]] = {}
        self._connected = False

    def connectionMade(self) -> None:
        self._connected = True

    def call(self, method: str, **params: Any) -> Deferred[Any]:
        """The result of one request; fails with ControlError if the daemon refuses it."""
        if not self._connected or self.transport is None:
            return fail(ControlError("not connected to the daemon"))
        request_id = next(self._ids)
        answer: Deferred[Any] = Deferred()
        self._pending[request_id] = answer
        line = json.dumps({"id": request_id, "method": method, "params": params})
        self.transport.write(line.encode("utf-8") + self.delimiter)
        return answer

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        try:
            document = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._drop("the daemon sent a line that is not JSON")
            return
        if not isinstance(document, dict):
            self._drop("the daemon sent something that is not a JSON object")
            return
        event = document.get("event")
        if isinstance(event, dict):
            if self._on_event is not None:
                self._on_event(event)
            return
        request_id = document.get("id")
        answer = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if answer is None:
            return  # a reply to nothing we asked (id null: our request was unreadable)
        if "error" in document:
            answer.errback(ControlError(str(document["error"])))
        else:
            answer.callback(document.get("result"))

    def lineLengthExceeded(self, line: bytes) -> None:
        self._drop(f"the daemon sent a reply longer than {MAX_REPLY} bytes")

    def _drop(self, reason: str) -> None:
        self._fail_pending(reason)
        self.close()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._connected = False
        self._fail_pending("the daemon closed the connection")
        if self._on_lost is not None:
            self._on_lost("the daemon closed the connection")

    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for answer in pending.values():
            answer.errback(ControlError(reason))


async def connect_control(
    reactor: Any,
    socket_path: Path,
    on_event: Callable[[Event], None] | None = None,
    on_lost: Callable[[str], None] | None = None,
) -> AsyncControlClient:
    """Connect to the daemon of a home; DaemonNotRunning if none listens there."""
    endpoint = UNIXClientEndpoint(reactor, str(socket_path), timeout=10)
    client = AsyncControlClient(on_event, on_lost)
    try:
        await connectProtocol(endpoint, client)
    except (ConnectError, FileNotFoundError):
        raise DaemonNotRunning(
            f"no daemon is running for {socket_path.parent}: start 'onionmsg daemon' first"
        ) from None
    return client
