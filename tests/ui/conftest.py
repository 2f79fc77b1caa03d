"""A fake control client answering from canned snapshots, and the canned snapshots."""

from __future__ import annotations

from datetime import UTC, date
from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from urwid.testing import render_text

from onionmsg.control.client import ControlError
from onionmsg.crypto.identity import Identity
from onionmsg.ui.app import App

ME = Identity(bytes([1]) * 32).onion_address
BOB = Identity(bytes([2]) * 32).onion_address
SIZE = (80, 24)
CAROL = Identity(bytes([3]) * 32).onion_address
DAVE = Identity(bytes([4]) * 32).onion_address
ERIN = Identity(bytes([5]) * 32).onion_address


def screen(app: App, size: tuple[int, int] = SIZE) -> str:
    """What the user sees, as text."""
    return "\n".join(render_text(app.view, size))


def press(app: App, *keys: str, size: tuple[int, int] = SIZE) -> None:
    for key in keys:
        app.view.keypress(size, key)


def type_text(app: App, text: str) -> None:
    press(app, *text)


def status(**network: Any) -> dict[str, Any]:
    return {
        "address": ME,
        "passphrase": True,
        "transport": "tor",
        "listening": "onion",
        "network": {
            "state": "reachable",
            "bootstrap_percent": 100,
            "bootstrap_phase": "Done",
            "reachable": True,
            "error": None,
            **network,
        },
        "contacts": 2,
        "online": 1,
        "requests": 0,
        "block_unknown": False,
        "invisible": False,
        "cover": {
            "profile": "low",
            "bytes_per_day": 3200000,
            "expected_latency_s": 30.0,
            "queued_cells": 2,
        },
    }


def contact(name: str, address: str, online: bool, verified: bool = False) -> dict[str, Any]:
    return {"name": name, "address": address, "online": online, "verified": verified}


def request(request_id: int, address: str, note: str, time: str) -> dict[str, Any]:
    return {
        "id": request_id,
        "address": address,
        "message": note,
        "time": time,
        "updated": time,
        "state": "pending",
    }


def message(
    seq: int, address: str, name: str, direction: str, text: str, status: str, time: str
) -> dict[str, Any]:
    return {
        "event": "message",
        "seq": seq,
        "id": f"{seq:032x}",
        "contact": name,
        "address": address,
        "direction": direction,
        "text": text,
        "time": time,
        "status": status,
    }


HISTORY = [
    message(1, BOB, "bob", "out", "Hi Bob!", "delivered", "2026-03-02T09:00:00.000+00:00"),
    message(2, BOB, "bob", "in", "Hi Alice, got it.", "received", "2026-03-03T09:01:00.000+00:00"),
    message(3, BOB, "bob", "out", "Still there?", "queued", "2026-03-03T09:02:00.000+00:00"),
]


class FakeClient:
    """Answers like the daemon from canned data; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.status = status()
        self.contacts = [contact("bob", BOB, True, verified=True), contact("carol", CAROL, False)]
        self.history = list(HISTORY)
        self.requests: list[dict[str, Any]] = []
        self.errors: dict[str, str] = {}
        self.results: dict[str, Any] = {}

    def call(self, method: str, **params: Any) -> Deferred[Any]:
        self.calls.append((method, params))
        if method in self.errors:
            return fail(ControlError(self.errors[method]))
        if method in self.results:
            return succeed(self.results[method])
        canned = {
            "subscribe": {"subscribed": True},
            "status": self.status,
            "contacts.list": self.contacts,
            "messages": self.history,
            "requests.list": self.requests,
        }
        if method in canned:
            return succeed(canned[method])
        return succeed({})

    def methods(self) -> list[str]:
        return [method for method, _params in self.calls]


@pytest.fixture
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture
def app(client: FakeClient) -> App:
    """The app on canned data, started, at a fixed 'today' (2026-03-03) in UTC."""
    app = App(client, tz=UTC)
    app.view.messages.today = lambda: date(2026, 3, 3)
    started = ensureDeferred(app.start())
    assert started.called
    return app
