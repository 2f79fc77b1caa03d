"""Noticing a second running instance of our own identity (sans-IO).

The same identity restored on two machines and run at once publishes the same onion
service twice; tor's directories keep whichever descriptor was uploaded last, so contacts
reach one instance or the other, and the two instances' ratchet sessions fight.

The node keeps a link to its own address for loop cover traffic (node.py): it dials that
address and answers the dial itself. Each link's Noise handshake hash is unique to that
handshake and known to both of its ends. So when the node answers a link that proves our
own identity, it checks the handshake hash against the loop links it dialled itself: a
hash it never dialled means that another process holding our key dialled our address, and
reached us. No protocol change, no extra traffic. Detection needs one instance's loop dial
to land on the other, so it comes when a loop link is (re)made while both run; see
docs/usage.md for the latency and the other signals considered.
"""

from __future__ import annotations

from collections import deque


class TwinDetector:
    def __init__(self, remembered: int = 16) -> None:
        # The hashes of the last loop links we dialled (one is live; a few may be racing).
        self._dialled: deque[bytes] = deque(maxlen=remembered)
        self.first_seen_ms: int | None = None
        self.last_seen_ms: int | None = None
        self.count = 0

    def dialled(self, handshake_hash: bytes) -> None:
        """We dialled our own address and this link came up (we are its initiator).

        An initiator's link is established when it sends the last handshake message, so
        this is always recorded before our own responder side sees the same link."""
        self._dialled.append(handshake_hash)

    def answered(self, handshake_hash: bytes, now_ms: int) -> bool:
        """A link proving our identity reached us (we are its responder): is it a twin's?"""
        if handshake_hash in self._dialled:
            return False
        if self.first_seen_ms is None:
            self.first_seen_ms = now_ms
        self.last_seen_ms = now_ms
        self.count += 1
        return True
