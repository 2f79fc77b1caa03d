"""Sealing message contents into ratchet envelopes and opening them (sans-IO).

The associated data of every envelope binds it to both identities and to its message id:
``"onionmsg envelope v1" || sender Ed25519 key || recipient Ed25519 key || message_id``,
so an envelope cannot be replayed under another id or towards another contact.
"""

from __future__ import annotations

from dataclasses import dataclass

from onionmsg.crypto.identity import Identity
from onionmsg.crypto.ratchet import Ratchet, Sealed, is_initiator
from onionmsg.errors import ProtocolError
from onionmsg.wire.messages import Envelope, Message, SessionStart, decode_content, encode

_AD_TAG = b"onionmsg envelope v1"


def associated_data(sender: bytes, recipient: bytes, message_id: bytes) -> bytes:
    return _AD_TAG + sender + recipient + message_id


@dataclass(frozen=True)
class Sealing:
    """What to store for one outgoing content: the envelope, or the content to seal later."""

    ratchet: Ratchet | None
    envelope: bytes | None
    content: bytes | None


def seal(
    identity: Identity,
    their_public: bytes,
    ratchet: Ratchet | None,
    message_id: bytes,
    content: Message,
) -> Sealing:
    """Encrypt ``content`` for the contact, opening the session if we are its initiator.

    Without a session on the responder's side, the content waits (as plaintext inside the
    encrypted store) until the initiator's SessionStart arrives.
    """
    plaintext = encode(content)
    ad = associated_data(identity.public_key, their_public, message_id)
    if ratchet is None:
        if not is_initiator(identity.public_key, their_public):
            return Sealing(None, None, plaintext)
        ratchet, sealed = Ratchet.start(identity, their_public, plaintext, ad)
    else:
        sealed = ratchet.encrypt(plaintext, ad)
    return Sealing(ratchet, encode(_envelope(message_id, sealed)), None)


def _envelope(message_id: bytes, sealed: Sealed) -> Envelope:
    return Envelope(
        message_id,
        sealed.ratchet_public,
        sealed.previous_chain_length,
        sealed.chain_length,
        sealed.ciphertext,
    )


def open_envelope(
    identity: Identity, their_public: bytes, ratchet: Ratchet | None, envelope: Envelope
) -> tuple[Ratchet, Message]:
    """Decrypt and validate an envelope from the contact: (the advanced ratchet, content).

    On failure the ratchet is unchanged and ProtocolError is raised; on success the caller
    stores the ratchet's new state in the same transaction as the content.
    """
    sealed = Sealed(
        envelope.ratchet_public,
        envelope.previous_chain_length,
        envelope.chain_length,
        envelope.ciphertext,
    )
    ad = associated_data(their_public, identity.public_key, envelope.message_id)
    if ratchet is not None:
        try:
            return ratchet, decode_content(ratchet.decrypt(sealed, ad))
        except ProtocolError:
            if not sealed.is_initial:
                raise
            # The contact opened a new session (a restore from backup, say): try that below.
    new, plaintext = Ratchet.accept(identity, their_public, sealed, ad)
    content = decode_content(plaintext)
    if ratchet is not None and not isinstance(content, SessionStart):
        raise ProtocolError("a new session must begin with SessionStart")
    return new, content
