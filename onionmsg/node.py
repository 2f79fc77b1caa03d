"""The Node: one identity, its contacts and its links. The edge between the cores and Twisted.

The node owns the store, the transport, one Connector per contact and at most one
established link per contact. Everything it reports to the control API is a plain,
immutable snapshot (dicts of JSON types), never a reference into its state.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nacl.utils
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from onionmsg.contacts.contact_string import (
    is_contact_string,
    own_contact_string,
    parse_contact_string,
)
from onionmsg.crypto.identity import Identity, parse_onion_address
from onionmsg.crypto.ratchet import Ratchet, is_initiator
from onionmsg.crypto.safety import safety_number
from onionmsg.delivery.envelopes import open_envelope, seal
from onionmsg.delivery.retry import RetryTimer
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
from onionmsg.store.db import Contact, OutboxEntry, Status, Store, StoredMessage
from onionmsg.transport.base import Transport
from onionmsg.transport.sam import b32_address
from onionmsg.transport.stream import LinkProtocol
from onionmsg.transport.tcp import parse_host_port
from onionmsg.wire.messages import (
    MAX_EXPIRY_SECONDS,
    MAX_TEXT_BYTES,
    MESSAGE_ID_SIZE,
    Ack,
    Envelope,
    Message,
    SessionStart,
    TextContent,
    decode,
    decode_content,
)

log = Logger()
SWEEP_INTERVAL = 1.0  # how often expired messages are looked for, in seconds

Snapshot = dict[str, Any]
Subscriber = Callable[[Snapshot], None]


class SendError(OnionmsgError):
    """The message could not be accepted."""


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


@dataclass
class _Peer:
    contact: Contact
    connector: Connector
    retry: RetryTimer
    link: LinkProtocol | None = None


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
        factory = Factory.forProtocol(self._inbound_protocol)
        factory.noisy = False
        self._listening = await self._transport.listen(factory)
        self._running = True
        self._sweeper = LoopingCall(self._sweep)
        self._sweeper.clock = self._clock
        self._sweeper.start(SWEEP_INTERVAL, now=True)
        self._scheduler.start()
        if self._scheduler.profile.loop_rate > 0:
            self._loop_connector.start()
        for contact in self._store.contacts():
            self._add_peer(contact).connector.start()
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
            "online": sum(1 for p in self._peers.values() if p.link is not None),
            "cover": self._cover_status(),
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
        if self._running and profile.loop_rate > 0:
            self._loop_connector.start()
        elif profile.loop_rate == 0:
            self._loop_connector.stop()
            if self._loop_out is not None:
                self._loop_out.close("loop cover traffic off")
        return self._cover_status()

    def add_contact(self, address: str, name: str | None, tcp_endpoint: str | None) -> Snapshot:
        i2p_destination = None
        if is_contact_string(address):  # signed: the I2P destination is the contact's own
            card = parse_contact_string(address)
            address, i2p_destination = card.address, card.i2p_destination
        public_key = parse_onion_address(address)
        if public_key == self.identity.public_key:
            raise SendError("that is your own address")
        if tcp_endpoint is not None:
            parse_host_port(tcp_endpoint)  # a clear error now, not a silent dial failure later
        contact = self._store.add_contact(
            address, name, tcp_endpoint, self._now_ms(), i2p_destination
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

    def contacts(self) -> list[Snapshot]:
        return [self._contact_snapshot(peer) for peer in self._peers.values()]

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
        return stored

    def _send(self, protocol: LinkProtocol, message: Message) -> None:
        """Queue a message on a link; its cells leave when the cell scheduler says so."""
        cells = protocol.send(message)
        address = protocol.link.remote_address
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
        retry = RetryTimer(self._clock, lambda: self._resend(contact.address), self._rng)
        peer = _Peer(contact, connector, retry)
        self._peers[contact.address] = peer
        self._contacts_by_id[contact.id] = contact
        return peer

    def _resend(self, address: str) -> bool:
        """Send every unacknowledged envelope again on the live link; anything left?"""
        peer = self._peers.get(address)
        if peer is None or peer.link is None:
            return False
        sealed = [e for e in self._store.outbox(peer.contact.id) if e.envelope is not None]
        for entry in sealed:
            assert entry.envelope is not None
            self._send(peer.link, decode(entry.envelope))
        return bool(sealed)

    def _inbound_protocol(self) -> LinkProtocol:
        return LinkProtocol(Link.responder(self.identity, self._clock), self._on_link_events)

    def _dial_self(self) -> None:
        """Dial our own address (the loop link), through the same transport as a contact."""
        tcp = self._listening.removeprefix("tcp ") if self._listening.startswith("tcp ") else None
        self._open_link(Contact(0, self.identity.onion_address, None, tcp, 0), self._loop_connector)

    def _dial(self, contact: Contact) -> None:
        self._open_link(contact, self._peers[contact.address].connector)

    def _open_link(self, contact: Contact, connector: Connector) -> None:
        """Dial a link to ``contact``; failures go to ``connector``, success to the events."""
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
            if isinstance(event, LinkEstablished):
                self._attach(protocol, event.remote_address)
            elif isinstance(event, MessageReceived):
                self._on_message(protocol, event)
            elif isinstance(event, LinkClosed):
                self._detach(protocol, event)

    def _attach(self, protocol: LinkProtocol, address: str) -> None:
        if address == self.identity.onion_address:
            if protocol.link.role is Role.INITIATOR:
                self._loop_out = protocol
                self._loop_connector.link_established()
            else:
                self._loop_in = protocol
            return
        peer = self._peers.get(address)
        if peer is None:
            # Contact requests (consent before any conversation) come with issue 7; until
            # then a stranger gets nothing but a closed link.
            protocol.close("not a contact")
            return
        if peer.link is not None and peer.link is not protocol:
            keep = self._preferred(peer.link, protocol)
            drop = protocol if keep is peer.link else peer.link
            peer.link = keep
            drop.close("duplicate link")
            if keep is not protocol:
                return
        peer.link = protocol
        peer.connector.link_established()
        self._notify({"event": "contact", **self._contact_snapshot(peer)})
        for entry in self._store.outbox(peer.contact.id):
            self._transmit(peer, entry)

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
            if self._running:
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
        address = protocol.link.remote_address
        peer = self._peers.get(address) if address else None
        if peer is None or peer.link is not protocol:
            return  # a link we are dropping: the peer will resend on the kept one
        message = event.message
        if isinstance(message, Envelope):
            self._on_envelope(peer, protocol, message)
        elif isinstance(message, Ack):
            updated = self._store.acknowledge(peer.contact.id, message.message_id)
            if updated is not None:
                self._notify(self._message_snapshot(updated))

    def _on_envelope(self, peer: _Peer, protocol: LinkProtocol, envelope: Envelope) -> None:
        contact = peer.contact
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
        if isinstance(content, SessionStart) or not had_session:
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
            "online": peer.link is not None,
            "verified": contact.verified,
            "expire_seconds": contact.expire_seconds,
            "connection": peer.connector.state,
            "tcp": contact.tcp_endpoint,
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
