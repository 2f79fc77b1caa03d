"""Starting a ratchet session again when one side lost it (sans-IO).

A user restored from a backup has no ratchet state (onionmsg/backup.py says why), while
the contact still holds the old session. Whoever of the two is the pair's initiator opens
a new session (docs/protocol.md, "Envelopes"); the other side replaces its old one when
that new session's first envelope arrives. Either way, what the contact had queued and not
yet got acknowledged was sealed under the old session, which the restored side cannot
open: it is sealed again under the new one, in the same order and with the same message
ids (so a copy that did arrive before is only acknowledged again).

The plaintext of an old envelope is not kept in the outbox; a text is rebuilt from the
history. An entry whose history row is gone (the message expired) is dropped, as is an old
session's SessionStart (the new session has its own).
"""

from __future__ import annotations

from collections.abc import Callable

import nacl.utils

from onionmsg.crypto.identity import Identity
from onionmsg.crypto.ratchet import Ratchet
from onionmsg.delivery.envelopes import seal
from onionmsg.store.db import OutboxEntry, StoredMessage
from onionmsg.wire.messages import (
    MESSAGE_ID_SIZE,
    Envelope,
    Message,
    SessionStart,
    TextContent,
    decode,
    decode_content,
)


def reseal_outbox(
    identity: Identity,
    their_public: bytes,
    ratchet: Ratchet | None,
    outbox: list[OutboxEntry],
    history: Callable[[bytes], StoredMessage | None],
    now_ms: int,
) -> tuple[Ratchet, list[tuple[bytes, bytes]]]:
    """The new session and the new outbox: (message id, envelope) in sending order.

    ``ratchet`` is the new session the contact opened, or None when we are the initiator:
    then a new SessionStart opens it and comes first. ``history`` finds our outgoing
    message with a given id.
    """
    entries: list[tuple[bytes, bytes]] = []
    if ratchet is None:
        message_id = nacl.utils.random(MESSAGE_ID_SIZE)
        sealing = seal(identity, their_public, None, message_id, SessionStart())
        assert sealing.ratchet is not None and sealing.envelope is not None
        ratchet = sealing.ratchet
        entries.append((message_id, sealing.envelope))
    for entry in outbox:
        content = _content(entry, history, now_ms)
        if content is None:
            continue
        sealing = seal(identity, their_public, ratchet, entry.message_id, content)
        assert sealing.envelope is not None
        entries.append((entry.message_id, sealing.envelope))
    return ratchet, entries


def _content(
    entry: OutboxEntry, history: Callable[[bytes], StoredMessage | None], now_ms: int
) -> Message | None:
    if entry.content is not None:
        content = decode_content(entry.content)
        return None if isinstance(content, SessionStart) else content
    stored = history(entry.message_id)
    if stored is None:
        return None
    if stored.expires_at is None:
        return TextContent(stored.sent_at, stored.text, 0)
    if stored.expires_at <= now_ms:
        return None
    return TextContent(stored.sent_at, stored.text, expire_seconds(stored))


def expire_seconds(stored: StoredMessage) -> int:
    """The ``expire_seconds`` an outgoing message was sent with (its row keeps the time)."""
    assert stored.expires_at is not None
    return max(1, (stored.expires_at - stored.stored_at) // 1000)


def opens_a_session(envelope: bytes) -> bool:
    """Is this envelope, sealed by us as the pair's initiator, the first of a session?

    Only the initiator's first message has both chain counters at 0: every later one has
    a higher position in the first chain, or follows a chain that had messages. (The
    responder's first message has zeros too; this is only asked of our own envelopes as the
    initiator.)
    """
    message = decode(envelope)
    assert isinstance(message, Envelope)
    return message.previous_chain_length == 0 and message.chain_length == 0
