"""Typed protocol messages, msgpack-encoded, validated against their schema on decode.

A message on the wire is the msgpack array ``[type_id, field_1, field_2, ...]``. Each
message class is a frozen dataclass whose fields carry their wire rule as
``Annotated[...]`` metadata; `decode` is the only way to turn bytes into a message, and it
checks the type id, the arity, every field's type and bounds, and that the bytes are the
canonical encoding (decode -> encode is byte-identical). Anything else raises
ProtocolError. There is deliberately no public "unpack without schema" function.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar

import msgpack

from onionmsg.errors import ProtocolError

# Hard cap on one encoded message (it is reassembled from cells up to this size).
MAX_MESSAGE_SIZE = 64 * 1024
MAX_TEXT_BYTES = 32 * 1024
MESSAGE_ID_SIZE = 16


@dataclass(frozen=True)
class UInt:
    """An unsigned integer no larger than ``maximum``."""

    maximum: int = 2**64 - 1

    def check(self, name: str, value: object) -> None:
        if type(value) is not int or not 0 <= value <= self.maximum:
            raise ProtocolError(f"field {name}: expected an integer in 0..{self.maximum}")


@dataclass(frozen=True)
class Bytes:
    """A byte string of exactly ``exact`` bytes, or at most ``maximum``."""

    exact: int | None = None
    maximum: int = MAX_MESSAGE_SIZE

    def check(self, name: str, value: object) -> None:
        if type(value) is not bytes:
            raise ProtocolError(f"field {name}: expected bytes")
        if self.exact is not None and len(value) != self.exact:
            raise ProtocolError(f"field {name}: expected {self.exact} bytes")
        if len(value) > self.maximum:
            raise ProtocolError(f"field {name}: longer than {self.maximum} bytes")


@dataclass(frozen=True)
class Text:
    """UTF-8 text of at most ``max_bytes`` encoded bytes (msgpack rejects invalid UTF-8)."""

    max_bytes: int = MAX_TEXT_BYTES

    def check(self, name: str, value: object) -> None:
        if type(value) is not str:
            raise ProtocolError(f"field {name}: expected text")
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError(f"field {name}: not valid UTF-8") from None
        if len(encoded) > self.max_bytes:
            raise ProtocolError(f"field {name}: longer than {self.max_bytes} bytes")


FieldRule = UInt | Bytes | Text


class Message:
    """Base of every protocol message; subclasses are registered with `message`."""

    TYPE_ID: ClassVar[int]
    RULES: ClassVar[tuple[tuple[str, FieldRule], ...]]


M = TypeVar("M", bound=type[Message])
# Two namespaces: what travels on a link, and what travels inside a ratchet envelope.
# A content type can never be accepted as a link message, nor the other way round.
_LINK: dict[int, type[Message]] = {}
_CONTENT: dict[int, type[Message]] = {}


def message(type_id: int, *, content: bool = False) -> Callable[[M], M]:
    """Register a frozen dataclass as the link (or envelope content) message of this id."""
    registry = _CONTENT if content else _LINK

    def register(cls: M) -> M:
        if type_id in registry:
            raise ValueError(f"message type {type_id} registered twice")
        hints = typing.get_type_hints(cls, include_extras=True)
        rules: list[tuple[str, FieldRule]] = []
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            metadata = getattr(hints[field.name], "__metadata__", ())
            rule = next((m for m in metadata if isinstance(m, UInt | Bytes | Text)), None)
            if rule is None:
                raise TypeError(f"{cls.__name__}.{field.name} has no wire rule")
            rules.append((field.name, rule))
        cls.TYPE_ID = type_id
        cls.RULES = tuple(rules)
        registry[type_id] = cls
        return cls

    return register


def encode(msg: Message) -> bytes:
    """The canonical encoding of a message (validated like a received one)."""
    values = [getattr(msg, name) for name, _ in msg.RULES]
    for (name, rule), value in zip(msg.RULES, values, strict=True):
        rule.check(name, value)
    encoded: bytes = msgpack.packb([msg.TYPE_ID, *values], use_bin_type=True)
    if len(encoded) > MAX_MESSAGE_SIZE:
        raise ValueError(f"{type(msg).__name__} is larger than {MAX_MESSAGE_SIZE} bytes")
    return encoded


def _no_extensions(code: int, data: bytes) -> Any:
    raise ProtocolError("msgpack extension types are not part of the protocol")


def decode(data: bytes) -> Message:
    """Bytes from a link to a validated link message, or ProtocolError."""
    return _decode(data, _LINK)


def decode_content(data: bytes) -> Message:
    """A decrypted envelope's plaintext to a validated content message, or ProtocolError."""
    return _decode(data, _CONTENT)


def _decode(data: bytes, registry: dict[int, type[Message]]) -> Message:
    if len(data) > MAX_MESSAGE_SIZE:
        raise ProtocolError("message larger than the protocol allows")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_no_extensions,
        )
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several types for malformed input
        raise ProtocolError(f"undecodable message ({type(exc).__name__})") from None
    if not isinstance(obj, list) or not obj or type(obj[0]) is not int:
        raise ProtocolError("a message is an array that starts with its type id")
    cls = registry.get(obj[0])
    if cls is None:
        raise ProtocolError(f"unknown message type {obj[0]}")
    values = obj[1:]
    if len(values) != len(cls.RULES):
        raise ProtocolError(f"{cls.__name__} has {len(cls.RULES)} fields, got {len(values)}")
    for (name, rule), value in zip(cls.RULES, values, strict=True):
        rule.check(name, value)
    msg = cls(*values)
    # Same meaning, other bytes (e.g. an int in a wider format) is refused: one encoding
    # per message keeps ids, signatures and dedup honest.
    if encode(msg) != data:
        raise ProtocolError("non-canonical encoding")
    return msg


MessageId = Annotated[bytes, Bytes(exact=MESSAGE_ID_SIZE)]


MAX_EXPIRY_SECONDS = 10 * 365 * 24 * 3600
MAX_CIPHERTEXT = MAX_MESSAGE_SIZE - 256  # room for the envelope's other fields


@message(1)
@dataclass(frozen=True)
class Envelope(Message):
    """A Double Ratchet message (docs/protocol.md, "Envelopes"): header and ciphertext."""

    message_id: MessageId
    ratchet_public: Annotated[bytes, Bytes(exact=32)]
    previous_chain_length: Annotated[int, UInt(2**32 - 1)]
    chain_length: Annotated[int, UInt(2**32 - 1)]
    ciphertext: Annotated[bytes, Bytes(maximum=MAX_CIPHERTEXT)]


@message(2)
@dataclass(frozen=True)
class Ack(Message):
    """The receiver has durably stored the envelope with this id."""

    message_id: MessageId


@message(4)
@dataclass(frozen=True)
class Hello(Message):
    """The first message of each side on every link between contacts: "I know you"."""


@message(5)
@dataclass(frozen=True)
class EndpointAuth(Message):
    """ "Publish an endpoint onion for me, reachable with this X25519 client-auth key"."""

    client_auth_public: Annotated[bytes, Bytes(exact=32)]


@message(6)
@dataclass(frozen=True)
class EndpointOffer(Message):
    """The Ed25519 public key of the endpoint onion the sender publishes for the receiver
    (authorised for the receiver's last EndpointAuth key): dial this from now on."""

    service_public: Annotated[bytes, Bytes(exact=32)]


# A stranger's note: 280 characters of up to 4 UTF-8 bytes each.
MAX_REQUEST_BYTES = 1120


@message(3)
@dataclass(frozen=True)
class ContactRequest(Message):
    """Sent instead of Hello by the dialler until the contact has answered once: who we
    are is proven by the handshake; this carries the note the user typed (may be empty)."""

    text: Annotated[str, Text(MAX_REQUEST_BYTES)]


@message(7)
@dataclass(frozen=True)
class SessionRequest(Message):
    """The sender has no ratchet session with the receiver (it was restored from a backup)
    and asks the receiver, the pair's initiator, to open a new one."""


@message(1, content=True)
@dataclass(frozen=True)
class TextContent(Message):
    """A text message. ``sent_at`` is the sender's clock in milliseconds since 1970."""

    sent_at: Annotated[int, UInt()]
    text: Annotated[str, Text()]
    # Both sides delete the message this long after storing it; 0 keeps it.
    expire_seconds: Annotated[int, UInt(MAX_EXPIRY_SECONDS)] = 0


@message(2, content=True)
@dataclass(frozen=True)
class SessionStart(Message):
    """Opens the ratchet session (sent by the initiator when it adds the contact)."""
