"""The Node: one identity, its contacts and its links. The edge between the cores and Twisted.

The node owns the store, the transport, one Connector per contact and at most one
established link per contact. Everything it reports to the control API is a plain,
immutable snapshot (dicts of JSON types), never a reference into its state.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import nacl.utils
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from onionmsg.contacts.contact_string import (
    is_contact_string,
    own_contact_string,
    parse_contact_string,
)
from onionmsg.contacts.requests import (
    MAX_PENDING,
    MAX_STRANGERS,
    REQUEST_WAIT,
    Action,
    Known,
    RequestState,
    Verdict,
    clean_message,
    decide,
    request_gate,
    transition,
)
from onionmsg.crypto.endpoint import ClientAuthKey, EndpointKey
from onionmsg.crypto.identity import (
    Identity,
    normalize_onion_address,
    onion_address_from_public_key,
    parse_onion_address,
)
from onionmsg.crypto.ratchet import Ratchet, is_initiator
from onionmsg.crypto.safety import safety_number
from onionmsg.delivery.envelopes import open_envelope, seal
from onionmsg.delivery.restart import opens_a_session, reseal_outbox
from onionmsg.delivery.retry import FIRST_RETRY, RetryTimer
from onionmsg.delivery.retry import JITTER as RETRY_JITTER
from onionmsg.delivery.throttle import TokenBucket
from onionmsg.errors import OnionmsgError, ProtocolError
from onionmsg.mix.scheduler import PROFILES, CellScheduler, Departure, Profile
from onionmsg.session.connector import Connector
from onionmsg.session.link import (
    Link,
    LinkClosed,
    LinkEstablished,
    LinkEvent,
    MessageReceived,
    Role,
)
from onionmsg.session.twin import TwinDetector
from onionmsg.store.db import (
    Contact,
    ContactRequestRow,
    Endpoints,
    OutboxEntry,
    Status,
    Store,
    StoredMessage,
)
from onionmsg.transport.base import EndpointTransport, Transport
from onionmsg.transport.sam import b32_address
from onionmsg.transport.stream import LinkProtocol
from onionmsg.transport.tcp import parse_host_port
from onionmsg.wire.messages import (
    MAX_EXPIRY_SECONDS,
    MAX_TEXT_BYTES,
    MESSAGE_ID_SIZE,
    Ack,
    ContactRequest,
    EndpointAuth,
    EndpointOffer,
    Envelope,
    Hello,
    Message,
    SessionRequest,
    SessionStart,
    TextContent,
    decode,
    decode_content,
)

log = Logger()
_TWIN_WARNING = (
    "another running instance of this identity (the same backup restored twice?) dialled "
    "our address: contacts reach one or the other and messages get lost; stop one of them"
)
SWEEP_INTERVAL = 1.0  # how often expired messages are looked for, in seconds
# Inbound connections still in the handshake (anyone can open them): more are refused at
# once, so a flood costs a bounded number of sockets for at most HANDSHAKE_TIMEOUT.
MAX_HANDSHAKING = 64
# Envelopes one contact may make us open and store: a burst, then a steady rate. Past it
# they are not acknowledged (so not lost: the contact resends later), and cost no crypto.
# Endpoint onions we publish at most (one per contact; past it, contacts keep using the
# identity onion). Each costs tor ~6 introduction circuits: docs/architecture.md.
MAX_ENDPOINTS = 32
INBOUND_BURST = 500
# 20/s: ~15 % of a core for a flooding contact (100/s took ~70 %: docs/performance.md);
# an honest contact's offline backlog still arrives at once up to the burst.
INBOUND_PER_SECOND = 20
SEARCH_LIMIT = 200  # search results returned at most (the newest)

Snapshot = dict[str, Any]
Subscriber = Callable[[Snapshot], None]


class SendError(OnionmsgError):
    """The message could not be accepted."""


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _online(peer: _Peer) -> bool:
    """A link is up and the contact has greeted us on it."""
    return peer.link is not None and peer.connector.state == "connected"


def _request_snapshot(row: ContactRequestRow) -> Snapshot:
    return {
        "id": row.id,
        "address": row.address,
        "message": row.message,
        "time": _iso(row.received_at),
        "updated": _iso(row.updated_at),
        "state": row.state,
    }


class _InboundFactory(Factory[LinkProtocol]):
    """Builds the responder side of each inbound link; ``build`` may refuse (None)."""

    noisy = False

    def __init__(self, build: Callable[[], LinkProtocol | None]) -> None:
        self._build = build

    def buildProtocol(self, addr: IAddress | None) -> LinkProtocol | None:
        return self._build()


@dataclass
class _Peer:
    contact: Contact
    connector: Connector
    retry: RetryTimer
    inbound: TokenBucket
    link: LinkProtocol | None = None
    # When each unacknowledged envelope last went to a link (the reactor's clock): a
    # resend skips those still in flight.
    last_sent: dict[bytes, float] = field(default_factory=dict)


class Node:
    def __init__(
        self,
        store: Store,
        transport: Transport,
        clock: IReactorTime,
        *,
        rng: random.Random | None = None,
        wall_clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        passphrase_protected: bool = True,
        cover: Profile = PROFILES["off"],
        cover_rngs: tuple[random.Random, random.Random] | None = None,
    ) -> None:
        self._passphrase_protected = passphrase_protected
        self._store = store
        self._transport = transport
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._now_ms = wall_clock_ms
        self.identity: Identity = store.identity()
        self._peers: dict[str, _Peer] = {}
        self._contacts_by_id: dict[int, Contact] = {}
        self._subscribers: list[Subscriber] = []
        self._listening = ""
        self._running = False
        self._sweeper: LoopingCall | None = None
        # Loop cover traffic: a link from this node to its own address. Cells leave on
        # `_loop_out` and come back on `_loop_in`, so we can tell if they stop arriving.
        self._loop_out: LinkProtocol | None = None
        self._loop_in: LinkProtocol | None = None
        self._loop_connector = Connector(clock, self._dial_self, self._rng)
        self._loops_written = 0
        self._twins = TwinDetector()
        # Links from addresses that are not (or no longer) contacts: held until their
        # ContactRequest arrives or REQUEST_WAIT passes, then closed the same way always.
        self._strangers: dict[LinkProtocol, IDelayedCall] = {}
        self._request_gate = request_gate(clock)
        self._handshaking: set[LinkProtocol] = set()  # inbound links before LinkEstablished
        # Per-contact endpoint onions, where the transport has them (Tor).
        self._endpoints = transport if isinstance(transport, EndpointTransport) else None
        timing, choice = cover_rngs or (None, None)
        self._scheduler = CellScheduler(
            clock,
            cover,
            self._depart,
            lambda: [address for address, p in self._peers.items() if p.link is not None],
            timing_rng=timing,
            choice_rng=choice,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        self._transport.add_status_listener(
            lambda status: self._notify({"event": "network", **status})
        )
        factory = _InboundFactory(self._inbound_protocol)
        self._listening = await self._transport.listen(factory)
        self._running = True
        self._sweeper = LoopingCall(self._sweep)
        self._sweeper.clock = self._clock
        self._sweeper.start(SWEEP_INTERVAL, now=True)
        self._scheduler.start()
        if self._endpoints is not None:
            await self._endpoints.set_identity_published(not self._invisible())
            for endpoints in self._store.all_endpoints():
                self._publish_endpoints(endpoints)
        if self._scheduler.profile.loop_rate > 0 and not self._invisible():
            self._loop_connector.start()
        for contact in self._store.contacts():
            peer = self._add_peer(contact)
            if not contact.blocked:
                peer.connector.start()
        return self._listening

    async def stop(self) -> None:
        self._running = False
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._scheduler.stop()
        self._loop_connector.stop()
        for loop in (self._loop_out, self._loop_in):
            if loop is not None:
                loop.close("node stopping")
        for stranger in list(self._strangers):
            stranger.close("node stopping")
        for peer in self._peers.values():
            peer.connector.stop()
            peer.retry.cancel()
            if peer.link is not None:
                peer.link.close("node stopping")
        await self._transport.stop()

    # -- control API -------------------------------------------------------------------------

    def status(self) -> Snapshot:
        return {
            "address": self.identity.onion_address,
            "contact": own_contact_string(self._store),
            "passphrase": self._passphrase_protected,
            "transport": self._transport.name,
            "listening": self._listening,
            "network": self._transport.status(),
            "contacts": len(self._peers),
            "online": sum(1 for p in self._peers.values() if _online(p)),
            "requests": self._store.pending_request_count(),
            "block_unknown": self._block_unknown(),
            "invisible": self._invisible(),
            "cover": self._cover_status(),
            "twin": self._twin_status(),
        }

    def _twin_status(self) -> Snapshot | None:
        """Another running instance of this identity, if one was noticed (session/twin.py)."""
        if self._twins.first_seen_ms is None or self._twins.last_seen_ms is None:
            return None
        return {
            "first_seen": _iso(self._twins.first_seen_ms),
            "last_seen": _iso(self._twins.last_seen_ms),
            "links": self._twins.count,
        }

    def _cover_status(self) -> Snapshot:
        profile = self._scheduler.profile
        return {
            "profile": profile.name,
            "payload_rate": profile.payload_rate,
            "loop_rate": profile.loop_rate,
            "bytes_per_day": round(profile.bytes_per_day()),
            "expected_latency_s": profile.expected_latency(),
            "queued_cells": self._scheduler.queue_length,
            "oldest_queued_s": round(self._scheduler.oldest_age(), 3),
            "sent_cells": dict(self._scheduler.sent),
            # Loop cells written and those that came back through the network: a gap that
            # keeps growing means our cells stop arriving (a blocked or dying path).
            "loop_written": self._loops_written,
            "loop_returned": self._loop_in.link.padding_received if self._loop_in else 0,
            "loop_link": self._loop_out is not None,
        }

    def set_cover(self, profile: Profile) -> Snapshot:
        self._scheduler.set_profile(profile)
        if self._running and profile.loop_rate > 0 and not self._invisible():
            self._loop_connector.start()
        elif profile.loop_rate == 0:
            self._loop_connector.stop()
            if self._loop_out is not None:
                self._loop_out.close("loop cover traffic off")
        return self._cover_status()

    def add_contact(
        self, address: str, name: str | None, tcp_endpoint: str | None, message: str = ""
    ) -> Snapshot:
        """Add a contact; until they answer, each link to them carries our request with
        ``message`` (they see it only if they do not know us yet)."""
        i2p_destination = None
        if is_contact_string(address):  # signed: the I2P destination is the contact's own
            card = parse_contact_string(address)
            address, i2p_destination = card.address, card.i2p_destination
        public_key = parse_onion_address(address)
        if public_key == self.identity.public_key:
            raise SendError("that is your own address")
        if tcp_endpoint is not None:
            parse_host_port(tcp_endpoint)  # a clear error now, not a silent dial failure later
        note = clean_message(message)
        contact = self._store.add_contact(
            address,
            name,
            tcp_endpoint,
            self._now_ms(),
            request_message=note,
            i2p_destination=i2p_destination,
        )
        peer = self._add_peer(contact)
        # The initiator of the pair opens the ratchet session right away, so the contact
        # can encrypt to us as soon as this first envelope reaches them.
        if is_initiator(self.identity.public_key, public_key):
            self._queue(peer, SessionStart(), text=None)
        if self._running:
            peer.connector.start()
        return self._contact_snapshot(peer)

    def set_expiry(self, contact_ref: str, seconds: int) -> Snapshot:
        """Messages to and from this contact sent from now on are deleted by both sides
        ``seconds`` after they are stored (0: kept)."""
        if not 0 <= seconds <= MAX_EXPIRY_SECONDS:
            raise SendError("an expiry is between 0 (off) and ten years")
        contact = self._find(contact_ref)
        self._store.set_expiry(contact.id, seconds)
        peer = self._peers[contact.address]
        peer.contact = self._store.contact_by_id(contact.id)
        self._contacts_by_id[contact.id] = peer.contact
        return self._contact_snapshot(peer)

    def _sweep(self) -> None:
        for stored in self._store.delete_expired(self._now_ms()):
            self._notify({"event": "deleted", "seq": stored.id, "id": stored.message_id.hex()})

    def verify_contact(self, contact_ref: str, confirm: bool) -> Snapshot:
        """The safety number of us and this contact; ``confirm`` marks the contact verified."""
        contact = self._find(contact_ref)
        number = safety_number(self.identity.public_key, parse_onion_address(contact.address))
        if confirm:
            self._store.set_verified(contact.id, True)
            peer = self._peers[contact.address]
            peer.contact = self._store.contact_by_id(contact.id)
            self._contacts_by_id[contact.id] = peer.contact
        return {"safety_number": number, **self._contact_snapshot(self._peers[contact.address])}

    def rename_contact(self, contact_ref: str, name: str | None) -> Snapshot:
        contact = self._find(contact_ref)
        peer = self._peers[contact.address]
        peer.contact = self._store.rename_contact(contact.id, name)
        self._contacts_by_id[contact.id] = peer.contact
        snapshot = self._contact_snapshot(peer)
        self._notify({"event": "contact", **snapshot})
        return snapshot

    def remove_contact(self, contact_ref: str) -> Snapshot:
        """Forget a contact: its link, its queued cells, its history, its ratchet."""
        contact = self._find(contact_ref)
        peer = self._peers.pop(contact.address)
        peer.connector.stop()
        peer.retry.cancel()
        self._scheduler.forget(contact.address)
        if peer.link is not None:
            peer.link.close("contact removed")
        self._forget_endpoints(contact)
        self._store.remove_contact(contact.id)
        del self._contacts_by_id[contact.id]
        removed = {
            "event": "contact_removed",
            "name": contact.display_name,
            "address": contact.address,
        }
        self._notify(removed)
        return removed

    def search_messages(
        self, query: str, contact_ref: str | None = None, limit: int = SEARCH_LIMIT
    ) -> list[Snapshot]:
        """The newest ``limit`` messages containing ``query`` (any case), oldest first."""
        needle = query.casefold()
        if not needle:
            raise SendError("search for at least one character")
        contact_id = self._find(contact_ref).id if contact_ref else None
        found = [m for m in self._store.messages(contact_id) if needle in m.text.casefold()]
        return [self._message_snapshot(m) for m in found[-limit:]] if limit else []

    def contacts(self) -> list[Snapshot]:
        return [self._contact_snapshot(peer) for peer in self._peers.values()]

    # -- who may reach us --------------------------------------------------------------------

    def requests(self) -> list[Snapshot]:
        return [_request_snapshot(row) for row in self._store.requests()]

    def answer_request(self, request_id: int, action: Action, name: str | None = None) -> Snapshot:
        """Accept (the address becomes a contact), reject (ignored for a week) or block."""
        row = self._store.request_by_id(request_id)
        new_state = transition(RequestState(row.state), action)
        if new_state is None:
            return self.add_contact(row.address, name, None)
        self._store.set_request_state(row.id, new_state.value, self._now_ms())
        return _request_snapshot(self._store.request_by_id(row.id))

    def block(self, ref: str) -> Snapshot:
        """Block a contact (links refused, nothing sent or received) or any address."""
        contact = self._store.find_contact(ref, missing_ok=True)
        if contact is None:
            address = normalize_onion_address(ref)
            self._store.block_address(address, self._now_ms())
            return {"address": address, "blocked": True}
        self._store.set_blocked(contact.id, True)
        peer = self._refresh(contact.id)
        peer.connector.stop()
        peer.retry.cancel()
        if peer.link is not None:
            peer.link.close("not a contact")
        return self._contact_snapshot(peer)

    def unblock(self, ref: str) -> Snapshot:
        contact = self._store.find_contact(ref, missing_ok=True)
        if contact is None:
            address = normalize_onion_address(ref)
            row = self._store.request_for(address)
            if row is None or row.state != RequestState.BLOCKED:
                raise SendError(f"{address} is not blocked")
            self._store.forget_request(row.id)
            return {"address": address, "blocked": False}
        self._store.set_blocked(contact.id, False)
        peer = self._refresh(contact.id)
        if self._running:
            peer.connector.start()
        return self._contact_snapshot(peer)

    def set_block_unknown(self, on: bool) -> Snapshot:
        """Refuse every request from strangers (contacts still reach us)."""
        self._store.set_setting("block_unknown", int(on))
        return {"block_unknown": on}

    def _block_unknown(self) -> bool:
        return bool(self._store.setting("block_unknown", 0))

    def set_invisible(self, on: bool) -> Snapshot:
        """Invisible: the identity onion is withdrawn (no new requests, and nobody can see
        us online by it) while contacts with endpoint onions still reach us. The loop
        stream pauses, since it travels through the identity onion."""
        if self._endpoints is None:
            raise SendError(f"the {self._transport.name} transport has no invisible mode")
        self._store.set_setting("invisible", int(on))
        self._background(
            self._endpoints.set_identity_published(not on), "changing the identity onion"
        )
        if on:
            self._loop_connector.stop()
            if self._loop_out is not None:
                self._loop_out.close("invisible")
        elif self._running and self._scheduler.profile.loop_rate > 0:
            self._loop_connector.start()
        return {"invisible": on}

    def _invisible(self) -> bool:
        return bool(self._store.setting("invisible", 0))

    # -- endpoint onions (docs/protocol.md, "Endpoint onions") -------------------------------

    def _publish_endpoints(self, endpoints: Endpoints) -> None:
        """Hand the transport what the store holds for one contact (tor keeps it only in
        memory, so this runs at every start)."""
        assert self._endpoints is not None
        if endpoints.our_endpoint_seed is not None and endpoints.their_auth_public is not None:
            key = EndpointKey(endpoints.our_endpoint_seed)
            self._background(
                self._endpoints.add_endpoint(key, endpoints.their_auth_public),
                "publishing an endpoint onion",
            )
        if endpoints.their_endpoint is not None and endpoints.our_auth_private is not None:
            self._background(
                self._endpoints.add_client_auth(
                    endpoints.their_endpoint, endpoints.our_auth_private
                ),
                "adding a contact's endpoint key",
            )

    def _background(self, work: Coroutine[Any, Any, Any], what: str) -> None:
        def failed(failure: Failure) -> None:
            log.warn("{what} failed: {error}", what=what, error=failure.getErrorMessage())

        Deferred.fromCoroutine(work).addErrback(failed)

    def _ask_for_endpoint(self, peer: _Peer, protocol: LinkProtocol) -> None:
        """Our contact's endpoint onion is unknown yet: give them a client-auth key for it."""
        if self._endpoints is None or not peer.contact.accepted:
            return
        endpoints = self._store.endpoints(peer.contact.id)
        if endpoints.their_endpoint is not None:
            return
        if endpoints.our_auth_private is None:
            endpoints = replace(endpoints, our_auth_private=ClientAuthKey.generate().private)
            self._store.save_endpoints(endpoints)
        assert endpoints.our_auth_private is not None
        self._send(protocol, EndpointAuth(ClientAuthKey(endpoints.our_auth_private).public))

    def _offer_endpoint(self, peer: _Peer, protocol: LinkProtocol, auth: EndpointAuth) -> None:
        if self._endpoints is None or not peer.contact.accepted:
            return
        endpoints = self._store.endpoints(peer.contact.id)
        seed = endpoints.our_endpoint_seed
        if seed is None:
            published = [e for e in self._store.all_endpoints() if e.our_endpoint_seed]
            if len(published) >= MAX_ENDPOINTS:
                log.info("endpoint onion limit reached: a contact keeps the identity onion")
                return
            seed = EndpointKey.generate().seed
        endpoints = replace(
            endpoints, our_endpoint_seed=seed, their_auth_public=auth.client_auth_public
        )
        self._store.save_endpoints(endpoints)
        self._publish_endpoints(replace(endpoints, their_endpoint=None))
        self._send(protocol, EndpointOffer(EndpointKey(seed).public_key))

    def _accept_endpoint(self, peer: _Peer, offer: EndpointOffer) -> None:
        if self._endpoints is None:
            return
        endpoints = self._store.endpoints(peer.contact.id)
        if endpoints.our_auth_private is None:
            return  # we never asked: nothing to reach it with
        onion = onion_address_from_public_key(offer.service_public)
        if onion == endpoints.their_endpoint:
            return
        endpoints = replace(endpoints, their_endpoint=onion)
        self._store.save_endpoints(endpoints)
        self._publish_endpoints(replace(endpoints, our_endpoint_seed=None))

    def _forget_endpoints(self, contact: Contact) -> None:
        if self._endpoints is None:
            return
        endpoints = self._store.endpoints(contact.id)
        if endpoints.our_endpoint_seed is not None:
            onion = EndpointKey(endpoints.our_endpoint_seed).onion_address
            self._background(self._endpoints.remove_endpoint(onion), "removing an endpoint")
        if endpoints.their_endpoint is not None:
            self._background(
                self._endpoints.remove_client_auth(endpoints.their_endpoint),
                "removing a contact's endpoint key",
            )

    def _refresh(self, contact_id: int) -> _Peer:
        contact = self._store.contact_by_id(contact_id)
        peer = self._peers[contact.address]
        peer.contact = contact
        self._contacts_by_id[contact.id] = contact
        return peer

    def send(self, contact_ref: str, text: str) -> Snapshot:
        if not text:
            raise SendError("an empty message is not sent")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
            raise SendError(f"a message has at most {MAX_TEXT_BYTES} bytes of text")
        contact = self._find(contact_ref)
        peer = self._peers[contact.address]
        expire = contact.expire_seconds
        stored = self._queue(peer, TextContent(self._now_ms(), text, expire), text=text)
        assert stored is not None
        snapshot = self._message_snapshot(stored)
        if peer.link is None:
            peer.connector.retry_now()
        return snapshot

    def _queue(self, peer: _Peer, content: Message, text: str | None) -> StoredMessage | None:
        """Seal, store (ratchet step, outbox, history: one commit), then send if a link is up."""
        contact = peer.contact
        message_id = nacl.utils.random(MESSAGE_ID_SIZE)
        their_key = parse_onion_address(contact.address)
        sealing = seal(self.identity, their_key, self._ratchet(contact), message_id, content)
        # With a link up the envelope is handed to it now (it leaves in this reactor turn,
        # or in the next cover-traffic slot), so it is stored as sent at once: one durable
        # commit instead of two. A crash before it leaves only means it is sent on the next
        # link, as every unacknowledged message is.
        ready = sealing.envelope is not None and peer.link is not None
        expire = content.expire_seconds if isinstance(content, TextContent) else 0
        stored = self._store.queue_outgoing(
            contact.id,
            message_id,
            expires_at=self._now_ms() + expire * 1000 if expire else None,
            text=text,
            content=sealing.content,
            envelope=sealing.envelope,
            ratchet_state=sealing.ratchet.to_json() if sealing.ratchet else None,
            now_ms=self._now_ms(),
            status=Status.SENT if ready else Status.QUEUED,
        )
        if stored is not None:
            self._notify(self._message_snapshot(stored))
        if ready:
            assert peer.link is not None and sealing.envelope is not None
            self._send(peer.link, decode(sealing.envelope))
            peer.retry.arm()
        elif sealing.content is not None and peer.link is not None:
            self._send(peer.link, SessionRequest())  # we are the responder, with no session
        return stored

    def _send(self, protocol: LinkProtocol, message: Message) -> None:
        """Queue a message on a link; its cells leave when the cell scheduler says so."""
        cells = protocol.send(message)
        address = protocol.link.remote_address
        if isinstance(message, Envelope) and address in self._peers:
            self._peers[address].last_sent[message.message_id] = self._clock.seconds()
        if cells and address is not None:
            self._scheduler.queue(address, cells)

    def _depart(self, departure: Departure) -> None:
        """A slot of the cover-traffic schedule: write the cell it is for."""
        if departure.kind == "loop":
            if self._loop_out is not None and self._loop_out.write_drop_cell():
                self._loops_written += 1
            return
        peer = self._peers.get(departure.contact or "")
        link = peer.link if peer is not None else None
        if departure.kind == "real":
            if link is not None and link.write_next_cell():
                return
            # The cell went away with its link; keep the schedule's shape all the same.
            if self._scheduler.profile.immediate:
                return
            others = [p.link for p in self._peers.values() if p.link is not None]
            if others:
                self._rng.choice(others).write_drop_cell()
            return
        if link is not None:
            link.write_drop_cell()

    def _first_retry(self) -> float:
        """How long an envelope may go unacknowledged before we send it again: the message
        and its Ack each wait for a cover slot (a sum of two exponentials of mean
        1/lambda), so 6/lambda is late for all but ~2 % of them (e^-6 * 7)."""
        return max(FIRST_RETRY, 6 * self._scheduler.profile.expected_latency())

    def _ratchet(self, contact: Contact) -> Ratchet | None:
        state = self._store.ratchet_state(contact.id)
        return Ratchet.from_json(state) if state is not None else None

    def messages(self, contact_ref: str | None = None, after: int = 0) -> list[Snapshot]:
        contact_id = self._find(contact_ref).id if contact_ref else None
        return [self._message_snapshot(m) for m in self._store.messages(contact_id, after)]

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    # -- links -------------------------------------------------------------------------------

    def _add_peer(self, contact: Contact) -> _Peer:
        connector = Connector(self._clock, lambda: self._dial(contact), self._rng)
        retry = RetryTimer(
            self._clock, lambda: self._resend(contact.address), self._rng, self._first_retry
        )
        inbound = TokenBucket(self._clock, INBOUND_BURST, 1 / INBOUND_PER_SECOND)
        peer = _Peer(contact, connector, retry, inbound)
        self._peers[contact.address] = peer
        self._contacts_by_id[contact.id] = contact
        return peer

    def _resend(self, address: str) -> bool:
        """Send every unacknowledged envelope again on the live link; anything left?"""
        peer = self._peers.get(address)
        if peer is None or peer.link is None:
            return False
        sealed = [e for e in self._store.outbox(peer.contact.id) if e.envelope is not None]
        # Only what has waited at least the shortest first retry (jitter included) goes
        # again: a message that has only just left is in flight, not lost.
        in_flight = self._clock.seconds() - self._first_retry() * (1 - RETRY_JITTER)
        for entry in sealed:
            assert entry.envelope is not None
            if peer.last_sent.get(entry.message_id, -1.0) <= in_flight:
                self._send(peer.link, decode(entry.envelope))
        return bool(sealed)

    def _inbound_protocol(self) -> LinkProtocol | None:
        if len(self._handshaking) >= MAX_HANDSHAKING:
            log.debug("refusing a connection: {n} handshakes under way", n=MAX_HANDSHAKING)
            return None
        protocol = LinkProtocol(Link.responder(self.identity, self._clock), self._on_link_events)
        self._handshaking.add(protocol)
        return protocol

    def _dial_self(self) -> None:
        """Dial our own address (the loop link), through the same transport as a contact."""
        # `listening` names each transport's place ("tor X.onion, tcp HOST:PORT"), see listen().
        places = self._listening.split(", ")
        tcp = next((p.removeprefix("tcp ") for p in places if p.startswith("tcp ")), None)
        self._open_link(Contact(0, self.identity.onion_address, None, tcp, 0), self._loop_connector)

    def _dial(self, contact: Contact) -> None:
        self._open_link(contact, self._peers[contact.address].connector)

    def _open_link(self, contact: Contact, connector: Connector) -> None:
        """Dial a link to ``contact``; failures go to ``connector``, success to the events.
        A contact who gave us an endpoint onion is dialled there and never at the identity
        onion (over Tor; other transports the contact has stay in use)."""
        their_endpoint = (
            self._store.endpoints(contact.id).their_endpoint
            if self._endpoints is not None and contact.id
            else None
        )
        if their_endpoint is not None:
            assert self._endpoints is not None
            endpoint = self._endpoints.contact_endpoint(contact, their_endpoint)
        else:
            endpoint = self._transport.client_endpoint(contact)
        if endpoint is None:
            # Nothing to dial (a tcp contact without --tcp): wait for them to call us.
            connector.dial_failed()
            return
        link = Link.initiator(self.identity, parse_onion_address(contact.address), self._clock)
        protocol = LinkProtocol(link, self._on_link_events)

        def failed(failure: Failure) -> None:
            log.debug("dial failed: {error}", error=failure.getErrorMessage())
            connector.dial_failed()

        connectProtocol(endpoint, protocol).addErrback(failed)

    def _on_link_events(self, protocol: LinkProtocol, events: list[LinkEvent]) -> None:
        for event in events:
            if isinstance(event, LinkEstablished | LinkClosed):
                self._handshaking.discard(protocol)
            if isinstance(event, LinkEstablished):
                self._attach(protocol, event.remote_address)
            elif isinstance(event, MessageReceived):
                self._on_message(protocol, event)
            elif isinstance(event, LinkClosed):
                self._detach(protocol, event)

    def _attach(self, protocol: LinkProtocol, address: str) -> None:
        if address == self.identity.onion_address:
            if protocol.link.role is Role.INITIATOR:
                self._twins.dialled(protocol.link.handshake_hash)
                self._loop_out = protocol
                self._loop_connector.link_established()
            elif self._twins.answered(protocol.link.handshake_hash, self._now_ms()):
                log.warn(_TWIN_WARNING)
                self._notify({"event": "twin", **(self._twin_status() or {})})
            else:
                self._loop_in = protocol
            return
        peer = self._peers.get(address)
        if peer is None or peer.contact.blocked:
            self._hold_stranger(protocol)
            return
        if peer.link is not None and peer.link is not protocol:
            keep = self._preferred(peer.link, protocol)
            drop = protocol if keep is peer.link else peer.link
            peer.link = keep
            drop.close("duplicate link")
            if keep is not protocol:
                return
        peer.link = protocol
        # Each side greets first. A dialler whose contact has not answered yet asks instead
        # (they may not know us). The link counts as up (online, connector "connected")
        # only when the peer's greeting comes: a peer that does not know us closes the
        # link without one, and our connector then backs off instead of redialling at once.
        if protocol.link.role is Role.INITIATOR and not peer.contact.accepted:
            self._send(protocol, ContactRequest(peer.contact.request_message))
        else:
            self._send(protocol, Hello())
        outbox = self._store.outbox(peer.contact.id)
        for entry in outbox:
            self._transmit(peer, entry)
        if any(e.content is not None for e in outbox) and self._session_lost(peer.contact):
            self._send(protocol, SessionRequest())  # we have something to say, and no session

    def _hold_stranger(self, protocol: LinkProtocol) -> None:
        if len(self._strangers) >= MAX_STRANGERS:
            protocol.close("not a contact")
            return
        self._strangers[protocol] = self._clock.callLater(
            REQUEST_WAIT, lambda: self._stranger_done(protocol, "")
        )

    def _stranger_done(self, protocol: LinkProtocol, text: str | None) -> None:
        """The stranger's request is in (or its time is up): decide, then close the link.
        The link closes the same way whatever we decide: the stranger learns nothing."""
        timer = self._strangers.pop(protocol, None)
        if timer is None:
            return
        if timer.active():
            timer.cancel()
        protocol.close("not a contact")
        address = protocol.link.remote_address
        if address is None:
            return
        contact = self._store.find_contact(address, missing_ok=True)
        if contact is not None or text is None:
            return  # a contact now, a blocked one, or no request at all
        row = self._store.request_for(address)
        now = self._now_ms()
        known = Known(RequestState(row.state), row.updated_at) if row is not None else None
        verdict = decide(
            known,
            block_unknown=self._block_unknown(),
            now_ms=now,
            # Only new requests spend a token: refreshing a pending one costs nothing.
            gate_open=known is not None or self._request_gate.allow(),
        )
        if verdict is Verdict.DROP:
            return
        request, dropped = self._store.record_request(
            address, clean_message(text), now, max_pending=MAX_PENDING
        )
        if dropped:
            log.info(
                "dropped {n} oldest contact requests (at most {max})",
                n=len(dropped),
                max=MAX_PENDING,
            )
        if verdict is Verdict.NEW:
            self._notify({"event": "request", **_request_snapshot(request)})

    def _preferred(self, current: LinkProtocol, new: LinkProtocol) -> LinkProtocol:
        """Both ends keep the same one of two links: the one dialled by the smaller address."""

        def dialer(protocol: LinkProtocol) -> str:
            if protocol.link.role is Role.INITIATOR:
                return self.identity.onion_address
            return protocol.link.remote_address or ""

        if dialer(current) == dialer(new):
            return new  # a redial by the same side replaces a link it already gave up on
        return min((current, new), key=dialer)

    def _detach(self, protocol: LinkProtocol, event: LinkClosed) -> None:
        if protocol in self._strangers:
            self._stranger_done(protocol, "")
            return
        address = protocol.link.remote_address
        if address == self.identity.onion_address:
            if protocol is self._loop_in:
                self._loop_in = None
            elif protocol is self._loop_out:
                self._loop_out = None
                if self._running:
                    self._loop_connector.link_lost()
            elif protocol.link.role is Role.INITIATOR and self._running:
                self._loop_connector.dial_failed()
            return
        peer = self._peers.get(address) if address else None
        if event.error:
            log.info("link closed: {reason}", reason=event.reason)
        if peer is None:
            return
        if peer.link is protocol:
            peer.link = None
            peer.retry.cancel()
            self._scheduler.forget(peer.contact.address)
            if self._running and not peer.contact.blocked:
                if peer.connector.state == "dialing":
                    peer.connector.dial_failed()  # our request was heard, not yet answered
                else:
                    peer.connector.link_lost()
            self._notify({"event": "contact", **self._contact_snapshot(peer)})
        elif protocol.link.role is Role.INITIATOR and self._running and peer.link is None:
            # Our dial got a connection but no link (refused, or a failed handshake).
            peer.connector.dial_failed()

    def _transmit(self, peer: _Peer, entry: OutboxEntry) -> None:
        if entry.envelope is None:
            return  # waits for the contact's SessionStart
        assert peer.link is not None
        self._send(peer.link, decode(entry.envelope))
        peer.retry.arm()
        updated = self._store.mark_sent(peer.contact.id, entry.message_id)
        if updated is not None:
            self._notify(self._message_snapshot(updated))

    def _on_message(self, protocol: LinkProtocol, event: MessageReceived) -> None:
        if protocol in self._strangers:
            # Only a ContactRequest is a request; a Hello comes from someone who still
            # counts us as a contact (we removed them): nothing to ask the user.
            request = event.message.text if isinstance(event.message, ContactRequest) else None
            self._stranger_done(protocol, request)
            return
        address = protocol.link.remote_address
        peer = self._peers.get(address) if address else None
        if peer is None or peer.link is not protocol:
            return  # a link we are dropping: the peer will resend on the kept one
        message = event.message
        news = False
        if not isinstance(message, ContactRequest) and not peer.contact.accepted:
            # They answered (a greeting, an Ack, an envelope): they know us. Stop asking.
            self._store.set_accepted(peer.contact.id)
            peer = self._refresh(peer.contact.id)
            news = True
        if peer.connector.state != "connected":
            peer.connector.link_established()  # their first message: the link is up
            news = True
        if news:
            self._notify({"event": "contact", **self._contact_snapshot(peer)})
            self._ask_for_endpoint(peer, protocol)
        if isinstance(message, EndpointAuth):
            self._offer_endpoint(peer, protocol, message)
        elif isinstance(message, EndpointOffer):
            self._accept_endpoint(peer, message)
        if isinstance(message, Envelope):
            self._on_envelope(peer, protocol, message)
        elif isinstance(message, Ack):
            peer.last_sent.pop(message.message_id, None)
            updated = self._store.acknowledge(peer.contact.id, message.message_id)
            if updated is not None:
                self._notify(self._message_snapshot(updated))
        elif isinstance(message, SessionRequest):
            self._on_session_request(peer)

    def _on_envelope(self, peer: _Peer, protocol: LinkProtocol, envelope: Envelope) -> None:
        contact = peer.contact
        if not peer.inbound.allow():
            return  # a flood: not acknowledged, so the contact sends it again later
        if self._store.was_received(contact.id, envelope.message_id):
            self._send(protocol, Ack(envelope.message_id))  # a redelivery: our Ack was lost
            return
        ratchet = self._ratchet(contact)
        had_session = ratchet is not None
        try:
            ratchet, content = open_envelope(
                self.identity, parse_onion_address(contact.address), ratchet, envelope
            )
        except ProtocolError as error:
            # Not acknowledged: the contact keeps it and sends it again later. Nothing is
            # logged about the content or the keys.
            log.warn("an envelope from a contact could not be opened: {error}", error=error)
            if self._session_lost(contact):
                self._send(protocol, SessionRequest())
            return
        text = content.text if isinstance(content, TextContent) else None
        sent_at = content.sent_at if isinstance(content, TextContent) else 0
        expire = content.expire_seconds if isinstance(content, TextContent) else 0
        now = self._now_ms()
        stored = self._store.store_incoming(
            contact.id,
            envelope.message_id,
            expires_at=now + expire * 1000 if expire else None,
            text=text,
            sent_at=sent_at,
            ratchet_state=ratchet.to_json(),
            now_ms=now,
        )
        # Acknowledge only after the commit.
        self._send(protocol, Ack(envelope.message_id))
        if stored is not None:
            self._notify(self._message_snapshot(stored))
        if isinstance(content, SessionStart) and had_session:
            self._restart_session(peer, ratchet)  # the contact lost the old one
        elif isinstance(content, SessionStart) or not had_session:
            self._seal_waiting(peer, ratchet)

    def _seal_waiting(self, peer: _Peer, ratchet: Ratchet) -> None:
        """The session exists now: encrypt what waited for it, in order, and send it."""
        contact = peer.contact
        their_key = parse_onion_address(contact.address)
        waiting = [e for e in self._store.outbox(contact.id) if e.content is not None]
        if not waiting:
            return
        sealed: list[tuple[int, bytes]] = []
        for entry in waiting:
            assert entry.content is not None
            sealing = seal(
                self.identity, their_key, ratchet, entry.message_id, decode_content(entry.content)
            )
            assert sealing.envelope is not None
            sealed.append((entry.id, sealing.envelope))
        self._store.seal_outbox(contact.id, sealed, ratchet.to_json())
        if peer.link is not None:
            for entry in self._store.outbox(contact.id):
                if entry.id in {entry_id for entry_id, _ in sealed}:
                    self._transmit(peer, entry)

    def _session_lost(self, contact: Contact) -> bool:
        """We are the pair's responder and hold no session: only the contact can open one."""
        their_key = parse_onion_address(contact.address)
        if is_initiator(self.identity.public_key, their_key):
            return False
        return self._store.ratchet_state(contact.id) is None

    def _on_session_request(self, peer: _Peer) -> None:
        """The contact has no session with us: open a new one, unless ours is on its way."""
        their_key = parse_onion_address(peer.contact.address)
        if not is_initiator(self.identity.public_key, their_key):
            return  # only the initiator opens sessions
        outbox = self._store.outbox(peer.contact.id)
        if any(e.envelope is not None and opens_a_session(e.envelope) for e in outbox):
            return  # the contact will have it once that envelope arrives
        self._restart_session(peer, None)

    def _restart_session(self, peer: _Peer, ratchet: Ratchet | None) -> None:
        """A new session replaces a lost one (``ratchet`` None: we open it): seal again,
        under it, all the contact has not acknowledged, and send that (delivery/restart.py)."""
        contact = peer.contact
        ratchet, entries = reseal_outbox(
            self.identity,
            parse_onion_address(contact.address),
            ratchet,
            self._store.outbox(contact.id),
            lambda message_id: self._store.outgoing_message(contact.id, message_id),
            self._now_ms(),
        )
        self._store.replace_outbox(contact.id, entries, ratchet.to_json())
        if peer.link is not None:
            for entry in self._store.outbox(contact.id):
                self._transmit(peer, entry)

    # -- snapshots ---------------------------------------------------------------------------

    def _find(self, ref: str) -> Contact:
        contact = self._store.find_contact(ref)
        assert contact is not None
        return contact

    def _contact_snapshot(self, peer: _Peer) -> Snapshot:
        contact = peer.contact
        return {
            "name": contact.display_name,
            "address": contact.address,
            "online": _online(peer),
            "verified": contact.verified,
            "expire_seconds": contact.expire_seconds,
            "connection": "blocked" if contact.blocked else peer.connector.state,
            "accepted": contact.accepted,
            "blocked": contact.blocked,
            "tcp": contact.tcp_endpoint,
            # The transport of the live link (several may run: daemon --transport tor,i2p).
            "transport": (peer.link.transport_name or self._transport.name)
            if peer.link is not None and _online(peer)
            else None,
            "i2p": b32_address(contact.i2p_destination) if contact.i2p_destination else None,
        }

    def _message_snapshot(self, stored: StoredMessage) -> Snapshot:
        contact = self._contacts_by_id[stored.contact_id]
        return {
            "event": "message",
            "seq": stored.id,
            "id": stored.message_id.hex(),
            "contact": contact.display_name,
            "address": contact.address,
            "direction": stored.direction,
            "text": stored.text,
            "time": _iso(stored.sent_at),
            "stored": _iso(stored.stored_at),
            "status": stored.status.value,
            "expires": _iso(stored.expires_at) if stored.expires_at is not None else None,
        }

    def _notify(self, snapshot: Snapshot) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(snapshot)
            except Exception:
                log.failure("a subscriber failed")
