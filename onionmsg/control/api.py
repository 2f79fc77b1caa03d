"""The local control API: JSON lines over a unix socket (mode 0600) in the user's home.

Request:  {"id": N, "method": "send", "params": {"contact": "bob", "text": "hi"}}
Response: {"id": N, "result": ...}   or   {"id": N, "error": "one clear sentence"}
Event:    {"event": {...}}            (after a "subscribe" request, as things happen)

The method table below is the whole API; docs/usage.md documents it for scripts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from onionmsg.contacts.requests import Action
from onionmsg.errors import OnionmsgError
from onionmsg.mix.scheduler import PROFILES, Profile
from onionmsg.node import Node

log = Logger()
MAX_REQUEST = 256 * 1024


class RequestError(OnionmsgError):
    """A control request is malformed."""


def _text(params: dict[str, Any], name: str, *, optional: bool = False) -> str | None:
    value = params.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise RequestError(f"parameter {name!r} must be a string")
    return value


# JSON integers are unbounded; SQLite's are 64-bit signed (larger ones raise OverflowError).
MAX_INT = 2**63 - 1


def _int(params: dict[str, Any], name: str, default: int) -> int:
    value = params.get(name, default)
    if type(value) is not int or not 0 <= value <= MAX_INT:
        raise RequestError(f"parameter {name!r} must be an integer in 0..{MAX_INT}")
    return value


def _dispatch(node: Node, method: str, params: dict[str, Any]) -> Any:
    if method == "status":
        return node.status()
    if method == "contacts.list":
        return node.contacts()
    if method == "contacts.add":
        address = _text(params, "address")
        assert address is not None
        return node.add_contact(
            address,
            _text(params, "name", optional=True),
            _text(params, "tcp", optional=True),
            _text(params, "message", optional=True) or "",
        )
    if method in ("contacts.block", "contacts.unblock"):
        contact = _text(params, "contact")
        assert contact is not None
        return node.block(contact) if method == "contacts.block" else node.unblock(contact)
    if method == "requests.list":
        return node.requests()
    if method in ("requests.accept", "requests.reject", "requests.block"):
        action = Action(method.removeprefix("requests."))
        name = _text(params, "name", optional=True)
        return node.answer_request(_int(params, "id", 0), action, name)
    if method in ("settings.block_unknown", "settings.invisible"):
        on = params.get("on")
        if not isinstance(on, bool):
            raise RequestError("parameter 'on' must be true or false")
        if method == "settings.invisible":
            return node.set_invisible(on)
        return node.set_block_unknown(on)
    if method == "contacts.rename":
        contact = _text(params, "contact")
        assert contact is not None
        return node.rename_contact(contact, _text(params, "name", optional=True))
    if method == "contacts.remove":
        contact = _text(params, "contact")
        assert contact is not None
        return node.remove_contact(contact)
    if method == "contacts.expire":
        contact = _text(params, "contact")
        assert contact is not None
        return node.set_expiry(contact, _int(params, "seconds", 0))
    if method == "contacts.verify":
        contact = _text(params, "contact")
        assert contact is not None
        confirm = params.get("confirm", False)
        if not isinstance(confirm, bool):
            raise RequestError("parameter 'confirm' must be true or false")
        return node.verify_contact(contact, confirm)
    if method == "cover.set":
        name = _text(params, "profile", optional=True)
        if name is not None:
            if name not in PROFILES:
                raise RequestError(f"no cover profile {name[:20]!r}: {', '.join(PROFILES)}")
            return node.set_cover(PROFILES[name])
        rates = [params.get("payload_rate"), params.get("loop_rate", 0.0)]
        if not all(isinstance(r, int | float) and 0 <= r <= 100 for r in rates):
            raise RequestError("give 'profile', or 'payload_rate' and 'loop_rate' (0..100 /s)")
        return node.set_cover(Profile("custom", float(rates[0]), float(rates[1])))
    if method == "send":
        contact, text = _text(params, "contact"), _text(params, "text")
        assert contact is not None and text is not None
        return node.send(contact, text)
    if method == "messages":
        return node.messages(_text(params, "contact", optional=True), _int(params, "after", 0))
    if method == "messages.search":
        query = _text(params, "query")
        assert query is not None
        contact = _text(params, "contact", optional=True)
        return node.search_messages(query, contact, min(_int(params, "limit", 200), 1000))
    raise RequestError(f"unknown method {method[:40]!r}")


class ControlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_REQUEST

    def __init__(self, node: Node) -> None:
        self._node = node
        self._unsubscribe: Callable[[], None] | None = None

    def lineReceived(self, line: bytes) -> None:
        request_id: Any = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise RequestError("a request is a JSON object")
            request_id = request.get("id")
            method = request.get("method")
            params = request.get("params", {})
            if not isinstance(method, str) or not isinstance(params, dict):
                raise RequestError("a request has a string 'method' and an object 'params'")
            if method == "subscribe":
                if self._unsubscribe is None:
                    self._unsubscribe = self._node.subscribe(self._event)
                result: Any = {"subscribed": True}
            else:
                result = _dispatch(self._node, method, params)
            self._reply({"id": request_id, "result": result})
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._reply({"id": None, "error": "the request is not valid JSON"})
        except OnionmsgError as error:
            self._reply({"id": request_id, "error": str(error)})
        except Exception:
            log.failure("control request failed")
            self._reply({"id": request_id, "error": "internal error (see the daemon's log)"})

    def lineLengthExceeded(self, line: bytes) -> None:
        self._reply({"id": None, "error": f"request longer than {MAX_REQUEST} bytes"})
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: object = None) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _event(self, snapshot: dict[str, Any]) -> None:
        self._reply({"event": snapshot})

    def _reply(self, document: dict[str, Any]) -> None:
        if self.transport is not None:
            line = json.dumps(document, ensure_ascii=False).encode("utf-8") + self.delimiter
            self.transport.write(line)


def control_factory(node: Node) -> Factory[ControlProtocol]:
    factory = Factory.forProtocol(lambda: ControlProtocol(node))
    factory.noisy = False
    return factory
