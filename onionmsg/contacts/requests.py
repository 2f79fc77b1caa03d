"""Who may reach us: the rules for contact requests from strangers (sans-IO).

A link from an address that is not a contact never becomes a conversation. The node waits
a few seconds for the stranger's ``ContactRequest`` (or the link's end), closes the link
the same way whatever it decides (so the stranger learns nothing of our answer), and
asks :func:`decide` what to do with it. The persisted state of an address is one of:

    (none) --request--> pending --accept--> a contact (the request row is gone)
                        pending --reject--> rejected --REJECTED_FOR_MS--> (none)
    (none)/pending/rejected --block--> blocked --unblock--> (none)

Bounds, so that no stranger can cost us more than a row or a notification storm: one row
per address (a repeated request updates it silently), at most MAX_PENDING pending requests
(the oldest goes), and new requests pass a global token bucket (:func:`request_gate`).
"""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from onionmsg.delivery.throttle import TokenBucket
from onionmsg.errors import OnionmsgError

MAX_PENDING = 100
MAX_MESSAGE_CHARS = 280  # what we keep of a stranger's note (the wire allows 1,120 bytes)
# Seconds a stranger's link stays open for its ContactRequest: the request waits for a
# slot of the sender's cover schedule (30 s on average with the `low` profile).
REQUEST_WAIT = 120.0
MAX_STRANGERS = 32  # stranger links held at once; more are closed at once
REJECTED_FOR_MS = 7 * 24 * 3600 * 1000  # a rejected address is ignored this long
# New requests (not updates of a pending one): a burst of 10, then one every 2 minutes.
GATE_BURST = 10
GATE_INTERVAL = 120.0


class RequestError(OnionmsgError):
    """A request action that does not apply (no such request, or a wrong state)."""


class RequestState(enum.StrEnum):
    PENDING = "pending"
    REJECTED = "rejected"
    BLOCKED = "blocked"


class Action(enum.StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    BLOCK = "block"


# (state, user action) -> new state; None means the row is replaced by a contact.
TRANSITIONS: dict[tuple[RequestState, Action], RequestState | None] = {
    (RequestState.PENDING, Action.ACCEPT): None,
    (RequestState.PENDING, Action.REJECT): RequestState.REJECTED,
    (RequestState.PENDING, Action.BLOCK): RequestState.BLOCKED,
    (RequestState.REJECTED, Action.BLOCK): RequestState.BLOCKED,
    (RequestState.REJECTED, Action.ACCEPT): None,  # changed one's mind within the week
}


def transition(state: RequestState, action: Action) -> RequestState | None:
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        raise RequestError(f"a {state.value} request cannot be {action.value}ed") from None


class Verdict(enum.Enum):
    NEW = "new"  # store a new pending request and tell the user
    UPDATE = "update"  # refresh the pending request's message, silently
    DROP = "drop"  # keep nothing, say nothing


@dataclass(frozen=True)
class Known:
    """What the store holds about the requesting address."""

    state: RequestState
    updated_at_ms: int


def decide(known: Known | None, *, block_unknown: bool, now_ms: int, gate_open: bool) -> Verdict:
    if known is not None:
        if known.state is RequestState.PENDING:
            return Verdict.UPDATE
        if known.state is RequestState.BLOCKED:
            return Verdict.DROP
        if now_ms - known.updated_at_ms < REJECTED_FOR_MS:
            return Verdict.DROP
    if block_unknown or not gate_open:
        return Verdict.DROP
    return Verdict.NEW


def clean_message(text: str) -> str:
    """A stranger's note as we keep it: no control or format characters (bidi overrides,
    zero-width joiners, escapes), runs of whitespace folded, at most MAX_MESSAGE_CHARS."""
    kept: list[str] = []
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            char = " "
        elif category.startswith("M") and kept and unicodedata.category(kept[-1])[0] == "M":
            continue  # one combining mark per base character is plenty for a short note
        kept.append(char)
    return " ".join("".join(kept).split())[:MAX_MESSAGE_CHARS]


def request_gate(clock: IReactorTime) -> TokenBucket:
    """The global limit on new requests: GATE_BURST at once, then one per GATE_INTERVAL."""
    return TokenBucket(clock, GATE_BURST, GATE_INTERVAL)
