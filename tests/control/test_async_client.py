"""The asynchronous control client against the real control protocol, over iosim."""

from __future__ import annotations

from typing import Any, cast

import pytest
from twisted.internet.defer import Deferred
from twisted.test.iosim import FakeTransport, IOPump, connect

from onionmsg.control.api import ControlProtocol
from onionmsg.control.async_client import AsyncControlClient
from onionmsg.control.client import ControlError
from onionmsg.node import Node, Subscriber


class FakeNode:
    """The few Node methods these requests reach."""

    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []

    def status(self) -> dict[str, Any]:
        return {"address": "x", "text": "naïve ✓"}

    def contacts(self) -> list[dict[str, Any]]:
        raise AssertionError("not reached")

    def subscribe(self, subscriber: Subscriber) -> Any:
        self.subscribers.append(subscriber)
        return lambda: self.subscribers.remove(subscriber)


def wired() -> tuple[AsyncControlClient, FakeNode, IOPump, list[dict[str, Any]], list[str]]:
    node = FakeNode()
    events: list[dict[str, Any]] = []
    lost: list[str] = []
    client = AsyncControlClient(events.append, lost.append)
    server = ControlProtocol(cast(Node, node))
    pump = connect(
        server, FakeTransport(server, isServer=True), client, FakeTransport(client, isServer=False)
    )
    return client, node, pump, events, lost


def result(deferred: Deferred[Any]) -> Any:
    outcome: list[Any] = []
    deferred.addBoth(outcome.append)
    assert outcome, "the deferred has not fired"
    return outcome[0]


def test_calls_get_their_own_results_and_errors() -> None:
    client, _node, pump, _events, _lost = wired()
    first = client.call("status")
    bad = client.call("no.such.method")
    pump.flush()
    assert result(first) == {"address": "x", "text": "naïve ✓"}
    failure = result(bad)
    assert failure.check(ControlError) and "unknown method" in failure.getErrorMessage()


def test_events_after_subscribe_reach_the_callback() -> None:
    client, node, pump, events, _lost = wired()
    subscribed = client.call("subscribe")
    pump.flush()
    assert result(subscribed) == {"subscribed": True}
    node.subscribers[0]({"event": "message", "text": "hi"})
    pump.flush()
    assert events == [{"event": "message", "text": "hi"}]


def test_a_lost_connection_fails_what_waits_and_says_so() -> None:
    client, _node, pump, _events, lost = wired()
    waiting = client.call("status")
    client.close()
    pump.flush()
    failure = result(waiting)
    assert failure.check(ControlError) and "closed" in failure.getErrorMessage()
    assert lost == ["the daemon closed the connection"]
    refused = result(client.call("status"))
    assert refused.check(ControlError) and "not connected" in refused.getErrorMessage()


@pytest.mark.parametrize("line", [b"not json\n", b"[1, 2]\n"])
def test_garbage_from_the_daemon_drops_the_connection(line: bytes) -> None:
    client, _node, pump, _events, lost = wired()
    waiting = client.call("status")
    client.dataReceived(line)  # type: ignore[no-untyped-call]
    pump.flush()
    assert result(waiting).check(ControlError)
    assert lost
