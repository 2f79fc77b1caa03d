"""What the UI shows, as immutable snapshots built from the control API's JSON.

The views render a ``State``; the app replaces it with a new one (``dataclasses.replace``)
for every reply and event. Nothing here touches the daemon, the reactor or urwid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

Json = dict[str, Any]


def _int(value: Any, default: int = 0) -> int:
    return value if type(value) is int else default


def _float(value: Any, default: float = 0.0) -> float:
    return float(value) if type(value) in (int, float) else default


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


@dataclass(frozen=True)
class Network:
    state: str = "starting"
    bootstrap_percent: int | None = None  # None: not a tor transport
    bootstrap_phase: str = ""
    reachable: bool = False
    error: str | None = None
    pow: str = ""  # tor: "on", "unsupported" (tor < 0.4.8), "" (not known yet, or not tor)

    @classmethod
    def from_api(cls, data: Json) -> Network:
        percent = data.get("bootstrap_percent")
        error = data.get("error")
        return cls(
            state=_str(data.get("state"), "unknown"),
            bootstrap_percent=percent if type(percent) is int else None,
            bootstrap_phase=_str(data.get("bootstrap_phase")),
            reachable=data.get("reachable") is True,
            error=error if isinstance(error, str) and error else None,
            pow=_str(data.get("pow")),
        )


@dataclass(frozen=True)
class Cover:
    profile: str = "off"
    bytes_per_day: int = 0
    expected_latency_s: float = 0.0
    queued_cells: int = 0

    @classmethod
    def from_api(cls, data: Json) -> Cover:
        return cls(
            profile=_str(data.get("profile"), "?"),
            bytes_per_day=_int(data.get("bytes_per_day")),
            expected_latency_s=_float(data.get("expected_latency_s")),
            queued_cells=_int(data.get("queued_cells")),
        )


def pending_requests(status: Json) -> int | None:
    """The number of contact requests waiting for an answer (status field ``requests``;
    None from a daemon too old to know requests: nothing is shown)."""
    value = status.get("requests")
    return value if type(value) is int and value >= 0 else None


@dataclass(frozen=True)
class Status:
    address: str = ""
    transport: str = ""
    passphrase: bool = True
    network: Network = field(default_factory=Network)
    cover: Cover = field(default_factory=Cover)
    pending_requests: int | None = None
    block_unknown: bool = False  # every contact request is dropped unseen
    invisible: bool = False  # the identity onion is withdrawn (tor only)

    @classmethod
    def from_api(cls, data: Json) -> Status:
        network, cover = data.get("network"), data.get("cover")
        return cls(
            address=_str(data.get("address")),
            transport=_str(data.get("transport")),
            passphrase=data.get("passphrase") is not False,
            network=Network.from_api(network if isinstance(network, dict) else {}),
            cover=Cover.from_api(cover if isinstance(cover, dict) else {}),
            pending_requests=pending_requests(data),
            block_unknown=data.get("block_unknown") is True,
            invisible=data.get("invisible") is True,
        )


@dataclass(frozen=True)
class ContactView:
    name: str
    address: str
    online: bool = False
    verified: bool = False
    accepted: bool = True  # False while our contact request is unanswered
    blocked: bool = False

    @classmethod
    def from_api(cls, data: Json) -> ContactView:
        return cls(
            name=_str(data.get("name")),
            address=_str(data.get("address")),
            online=data.get("online") is True,
            verified=data.get("verified") is True,
            accepted=data.get("accepted") is not False,  # a daemon without requests: all are
            blocked=data.get("blocked") is True,
        )


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(_str(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class RequestView:
    """A pending contact request. ``address`` and ``message`` are the stranger's choice:
    shown only through sanitize."""

    id: int
    address: str
    message: str
    time: datetime | None  # first seen, by our clock

    @classmethod
    def from_api(cls, data: Json) -> RequestView:
        return cls(
            id=_int(data.get("id"), -1),
            address=_str(data.get("address")),
            message=_str(data.get("message")),
            time=_time(data.get("time")),
        )


@dataclass(frozen=True)
class MessageView:
    seq: int
    address: str
    contact: str
    direction: str  # "in" or "out"
    text: str
    time: datetime | None  # the sender's clock; None if unreadable
    status: str  # queued, sent, delivered; received (incoming)

    @classmethod
    def from_api(cls, data: Json) -> MessageView:
        when = _time(data.get("time"))
        return cls(
            seq=_int(data.get("seq")),
            address=_str(data.get("address")),
            contact=_str(data.get("contact")),
            direction="out" if data.get("direction") == "out" else "in",
            text=_str(data.get("text")),
            time=when,
            status=_str(data.get("status")),
        )


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class State:
    status: Status = field(default_factory=Status)
    contacts: tuple[ContactView, ...] = ()
    messages: Mapping[str, tuple[MessageView, ...]] = field(default_factory=lambda: _frozen({}))
    unread: Mapping[str, int] = field(default_factory=lambda: _frozen({}))
    selected: str | None = None  # the address of the open conversation
    unfolded: frozenset[int] = frozenset()  # seqs of long messages shown whole
    notice: str = ""  # one line for the user: an error or what just happened
    connected: bool = True
    requests: tuple[RequestView, ...] = ()  # pending contact requests, oldest first

    # -- queries ---------------------------------------------------------------------------

    def contact(self, address: str | None) -> ContactView | None:
        return next((c for c in self.contacts if c.address == address), None)

    def conversation(self) -> tuple[MessageView, ...]:
        return self.messages.get(self.selected or "", ())

    # -- changes (each returns a new State) -------------------------------------------------

    def with_status(self, data: Json) -> State:
        return replace(self, status=Status.from_api(data))

    def with_network(self, data: Json) -> State:
        return replace(self, status=replace(self.status, network=Network.from_api(data)))

    def with_cover(self, data: Json) -> State:
        return replace(self, status=replace(self.status, cover=Cover.from_api(data)))

    def with_contacts(self, items: list[Json]) -> State:
        contacts = tuple(ContactView.from_api(c) for c in items if isinstance(c, dict))
        state = replace(self, contacts=contacts)
        if state.contact(state.selected) is None:
            state = replace(state, selected=contacts[0].address if contacts else None)
        return state

    def with_contact(self, data: Json) -> State:
        """A contact added, renamed, or come online or gone offline."""
        contact = ContactView.from_api(data)
        if self.contact(contact.address) is None:
            contacts = (*self.contacts, contact)
        else:
            contacts = tuple(contact if c.address == contact.address else c for c in self.contacts)
        messages = {
            address: tuple(
                replace(m, contact=contact.name) if address == contact.address else m
                for m in history
            )
            for address, history in self.messages.items()
        }
        selected = self.selected if self.selected is not None else contact.address
        return replace(self, contacts=contacts, messages=_frozen(messages), selected=selected)

    def without_contact(self, address: str) -> State:
        contacts = tuple(c for c in self.contacts if c.address != address)
        messages = {a: h for a, h in self.messages.items() if a != address}
        unread = {a: n for a, n in self.unread.items() if a != address}
        selected = self.selected
        if selected == address:
            selected = contacts[0].address if contacts else None
        return replace(
            self,
            contacts=contacts,
            messages=_frozen(messages),
            unread=_frozen(unread),
            selected=selected,
        )

    def with_history(self, items: list[Json]) -> State:
        """The whole history, at start (nothing in it counts as unread)."""
        messages: dict[str, list[MessageView]] = {}
        for item in items:
            if isinstance(item, dict):
                message = MessageView.from_api(item)
                messages.setdefault(message.address, []).append(message)
        return replace(self, messages=_frozen({a: tuple(h) for a, h in messages.items()}))

    def with_message(self, data: Json) -> State:
        """A new message, or a new delivery status of one we have."""
        message = MessageView.from_api(data)
        history = self.messages.get(message.address, ())
        known = any(m.seq == message.seq for m in history)
        if known:
            history = tuple(message if m.seq == message.seq else m for m in history)
        else:
            history = tuple(sorted((*history, message), key=lambda m: m.seq))
        unread = dict(self.unread)
        if not known and message.direction == "in" and message.address != self.selected:
            unread[message.address] = unread.get(message.address, 0) + 1
        messages = {**self.messages, message.address: history}
        return replace(self, messages=_frozen(messages), unread=_frozen(unread))

    def without_message(self, seq: int) -> State:
        messages = {a: tuple(m for m in h if m.seq != seq) for a, h in self.messages.items()}
        return replace(self, messages=_frozen(messages))

    def select(self, address: str | None) -> State:
        unread = {a: n for a, n in self.unread.items() if a != address}
        return replace(self, selected=address, unread=_frozen(unread))

    def toggle_fold(self, seq: int) -> State:
        return replace(self, unfolded=self.unfolded ^ {seq})

    def with_requests(self, items: Any) -> State:
        """The pending requests as ``requests.list`` gives them (the count follows)."""
        if not isinstance(items, list):
            return self
        requests = tuple(
            RequestView.from_api(r)
            for r in items
            if isinstance(r, dict) and r.get("state", "pending") == "pending"
        )
        status = replace(self.status, pending_requests=len(requests))
        return replace(self, requests=requests, status=status)

    def with_request(self, data: Json) -> State:
        """A new request (event), or a repeated one with a new note."""
        request = RequestView.from_api(data)
        if data.get("state", "pending") != "pending":
            return self.without_request(request.id)
        if any(r.id == request.id for r in self.requests):
            requests = tuple(request if r.id == request.id else r for r in self.requests)
        else:
            requests = (*self.requests, request)
        status = replace(self.status, pending_requests=len(requests))
        return replace(self, requests=requests, status=status)

    def without_request(self, request_id: int) -> State:
        requests = tuple(r for r in self.requests if r.id != request_id)
        status = replace(self.status, pending_requests=len(requests))
        return replace(self, requests=requests, status=status)

    def with_settings(self, data: Json) -> State:
        """A ``settings.*`` reply: ``{"block_unknown": bool}`` or ``{"invisible": bool}``."""
        status = self.status
        for name in ("block_unknown", "invisible"):
            if isinstance(data.get(name), bool):
                status = replace(status, **{name: data[name]})
        return replace(self, status=status)

    def with_notice(self, notice: str) -> State:
        return replace(self, notice=notice)
