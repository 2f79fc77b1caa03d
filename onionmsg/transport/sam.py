"""A sans-IO SAM v3 client: the line protocol an I2P router (i2pd, Java I2P) speaks.

SAM (https://geti2p.net/en/docs/api/samv3) is line based: the client writes a command
(``HELLO VERSION``, ``DEST GENERATE``, ``SESSION CREATE``, ``STREAM CONNECT``, ``STREAM
ACCEPT``, ``NAMING LOOKUP``) and the router answers with one line of ``KEY=VALUE`` pairs.
Every control connection starts with ``HELLO``; a session lives as long as the connection
that created it; each stream needs a connection of its own, which after ``STREAM STATUS
RESULT=OK`` (and, for an accepted stream, one line naming the peer's destination) carries
the stream's bytes and nothing else.

:class:`SAMConnection` is one such connection: ``request()`` queues a command,
``data_to_send()`` gives the bytes to write, ``receive_data()`` consumes bytes and returns
events. A reply whose ``RESULT`` is not ``OK`` raises :class:`SAMReplyError` naming the
result and the router's message; anything malformed raises :class:`SAMProtocolError`.
Those two are the only exceptions bytes from the router can cause.

Also here: I2P destinations (base64 with I2P's ``-~`` alphabet), their ``.b32.i2p``
address, and the public destination inside a private key blob.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from onionmsg.errors import OnionmsgError

SAM_VERSION = "3.1"  # what i2pd 2.45.1 offers (it answers 3.1 to HELLO ... MAX=3.3)
MAX_LINE = 16 * 1024  # a private key blob is ~900 characters; i2pd reads 8 KiB at most
SIGNATURE_TYPE_ED25519 = 7

# A destination: 256-byte encryption key area, 128-byte signing key area, then a
# certificate (1 byte type, 2 bytes length, payload).
_DESTINATION_FIXED = 256 + 128
_MIN_DESTINATION = _DESTINATION_FIXED + 3
_MAX_DESTINATION = _MIN_DESTINATION + 64  # a key certificate carries 4 bytes and maybe extra key
_B64_ALPHABET = re.compile(r"[A-Za-z0-9~\-]+={0,2}")


class SAMError(OnionmsgError):
    """Talking to the I2P router over SAM failed."""


class SAMProtocolError(SAMError):
    """The router sent something that is not SAM (or not what we asked for)."""


class SAMReplyError(SAMError):
    """The router answered a command with a RESULT other than OK."""

    def __init__(self, command: str, result: str, message: str | None) -> None:
        self.command = command
        self.result = result
        self.router_message = message
        detail = f": {message}" if message else ""
        super().__init__(f"the I2P router refused {command}: {result}{detail}")


# -- destinations ---------------------------------------------------------------------------


def i2p_b64decode(text: str) -> bytes:
    """I2P's base64 (``-`` and ``~`` instead of ``+`` and ``/``); SAMError if malformed."""
    if not _B64_ALPHABET.fullmatch(text):
        raise SAMProtocolError("not I2P base64 (letters, digits, '-', '~' and '=' padding)")
    try:
        return base64.b64decode(text, altchars=b"-~", validate=True)
    except (binascii.Error, ValueError):
        raise SAMProtocolError("not I2P base64 (bad length or padding)") from None


def i2p_b64encode(data: bytes) -> str:
    return base64.b64encode(data, altchars=b"-~").decode("ascii")


def _destination_length(raw: bytes) -> int:
    """The length of the destination that starts ``raw``; SAMError if it cannot be one."""
    if len(raw) < _MIN_DESTINATION:
        raise SAMProtocolError(f"an I2P destination has at least {_MIN_DESTINATION} bytes")
    certificate_length = int.from_bytes(raw[_DESTINATION_FIXED + 1 : _DESTINATION_FIXED + 3])
    length = _MIN_DESTINATION + certificate_length
    if length > _MAX_DESTINATION or length > len(raw):
        raise SAMProtocolError("an I2P destination's certificate length is out of range")
    return length


def parse_destination(text: str) -> bytes:
    """Validate a public destination (base64) and return its bytes."""
    raw = i2p_b64decode(text.strip())
    if _destination_length(raw) != len(raw):
        raise SAMProtocolError("an I2P destination has trailing bytes after its certificate")
    return raw


def public_destination(private_key: str) -> str:
    """The public destination at the start of a SAM private key blob (``DEST REPLY PRIV=``)."""
    raw = i2p_b64decode(private_key)
    length = _destination_length(raw)
    if len(raw) == length:
        raise SAMProtocolError("that is a public destination, not a private key")
    return i2p_b64encode(raw[:length])


def b32_address(destination: str) -> str:
    """The ``.b32.i2p`` address of a public destination (base32 of its SHA-256)."""
    digest = hashlib.sha256(parse_destination(destination)).digest()
    return base64.b32encode(digest).decode("ascii").lower().rstrip("=") + ".b32.i2p"


# -- lines ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One reply line: its two topic words and its ``KEY=VALUE`` pairs."""

    topic: str  # e.g. "HELLO REPLY", "SESSION STATUS"
    values: Mapping[str, str] = field(default_factory=dict)

    @property
    def result(self) -> str | None:
        return self.values.get("RESULT")


def _tokens(line: str) -> list[str]:
    """Split on spaces, honouring double quotes and backslash escapes inside them."""
    tokens: list[str] = []
    current: list[str] = []
    in_quotes = False
    escaped = False
    started = False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif in_quotes and char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
            started = True
        elif char == " " and not in_quotes:
            if started:
                tokens.append("".join(current))
                current, started = [], False
        else:
            current.append(char)
            started = True
    if in_quotes or escaped:
        raise SAMProtocolError("a SAM line ends inside a quoted value")
    if started:
        tokens.append("".join(current))
    return tokens


def parse_reply(line: str) -> Reply:
    """Parse one reply line (without its newline)."""
    tokens = _tokens(line.rstrip("\r"))
    if len(tokens) < 2 or "=" in tokens[0] or "=" in tokens[1]:
        raise SAMProtocolError(f"not a SAM reply: {_shown(line)}")
    values: dict[str, str] = {}
    for token in tokens[2:]:
        key, sep, value = token.partition("=")
        if not key:
            raise SAMProtocolError(f"a SAM reply has an empty key: {_shown(line)}")
        # A bare word is a key without a value (the spec allows it for flags).
        values[key] = value if sep else ""
    return Reply(f"{tokens[0]} {tokens[1]}", values)


def _quoted(value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError("a SAM value cannot hold a line break or NUL")
    # i2pd splits on spaces and takes values verbatim (no unquoting), so quote only what
    # must be: base64 destinations end in '=' and go out bare.
    if value and not any(c in value for c in ' "\\'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_command(verb: str, **options: str) -> bytes:
    """``verb`` (e.g. "STREAM CONNECT") and its options as one line."""
    parts = [verb]
    for key, value in options.items():
        parts.append(f"{key}={_quoted(value)}")
    return (" ".join(parts) + "\n").encode("utf-8")


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


# -- one connection -------------------------------------------------------------------------


class Phase(enum.Enum):
    COMMANDS = "commands"  # control lines
    PEER_LINE = "peer line"  # after STREAM ACCEPT ... OK: the next line names the peer
    STREAM = "stream"  # every further byte belongs to the stream
    CLOSED = "closed"


@dataclass(frozen=True)
class Replied:
    """A command succeeded; ``reply`` holds the router's values."""

    command: str
    reply: Reply


@dataclass(frozen=True)
class StreamOpened:
    """The connection now carries a stream; ``peer`` is the caller (for STREAM ACCEPT)."""

    peer: str | None


@dataclass(frozen=True)
class StreamData:
    data: bytes


SAMEvent = Replied | StreamOpened | StreamData

# What each command is answered with.
_REPLY_TOPIC = {
    "HELLO VERSION": "HELLO REPLY",
    "DEST GENERATE": "DEST REPLY",
    "SESSION CREATE": "SESSION STATUS",
    "STREAM CONNECT": "STREAM STATUS",
    "STREAM ACCEPT": "STREAM STATUS",
    "STREAM FORWARD": "STREAM STATUS",
    "NAMING LOOKUP": "NAMING REPLY",
}


class SAMConnection:
    """One connection to the SAM bridge, from ``HELLO`` to (perhaps) a stream."""

    def __init__(self, *, max_line: int = MAX_LINE) -> None:
        self._max_line = max_line
        self._outgoing = bytearray()
        self._incoming = bytearray()
        self._pending: list[tuple[str, Mapping[str, str]]] = []
        self._accept_silent = False
        self.phase = Phase.COMMANDS
        self.version: str | None = None
        self.request("HELLO VERSION", MIN=SAM_VERSION, MAX=SAM_VERSION)

    def request(self, verb: str, **options: str) -> None:
        """Queue a command; its reply comes back as a :class:`Replied` event."""
        if verb not in _REPLY_TOPIC:
            raise ValueError(f"unsupported SAM command {verb!r}")
        if self.phase is not Phase.COMMANDS:
            raise SAMError(f"cannot send {verb}: the connection is in phase {self.phase.value}")
        self._outgoing += format_command(verb, **options)
        self._pending.append((verb, options))
        if verb == "STREAM ACCEPT":
            self._accept_silent = options.get("SILENT", "false") == "true"

    @property
    def streaming(self) -> bool:
        return self.phase is Phase.STREAM

    def data_to_send(self) -> bytes:
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def send_stream(self, data: bytes) -> None:
        """Queue stream bytes (only once the stream is open)."""
        if self.phase is not Phase.STREAM:
            raise SAMError("the SAM stream is not open")
        self._outgoing += data

    def receive_data(self, data: bytes) -> list[SAMEvent]:
        """Consume bytes from the router; raises SAMError (and nothing else) on bad input."""
        if self.phase is Phase.CLOSED:
            raise SAMProtocolError("data after the SAM connection failed")
        if self.phase is Phase.STREAM:
            return [StreamData(bytes(data))] if data else []
        self._incoming += data
        events: list[SAMEvent] = []
        try:
            while self.phase in (Phase.COMMANDS, Phase.PEER_LINE):
                end = self._incoming.find(b"\n")
                if end < 0:
                    if len(self._incoming) > self._max_line:
                        raise SAMProtocolError(f"a SAM line is longer than {self._max_line} bytes")
                    break
                if end > self._max_line:
                    raise SAMProtocolError(f"a SAM line is longer than {self._max_line} bytes")
                raw = bytes(self._incoming[:end])
                del self._incoming[: end + 1]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise SAMProtocolError("a SAM line is not UTF-8") from None
                events.extend(self._on_line(line))
        except SAMError:
            self.phase = Phase.CLOSED
            raise
        if self.streaming and self._incoming:
            events.append(StreamData(bytes(self._incoming)))
            self._incoming.clear()
        return events

    def _on_line(self, line: str) -> list[SAMEvent]:
        if self.phase is Phase.PEER_LINE:
            # "$destination[ FROM_PORT=n TO_PORT=n]" (the ports from SAM 3.2 on)
            peer = line.rstrip("\r").split(" ", 1)[0]
            parse_destination(peer)
            self.phase = Phase.STREAM
            return [StreamOpened(peer)]
        if not self._pending:
            raise SAMProtocolError(f"an unexpected SAM line: {_shown(line)}")
        verb, _options = self._pending.pop(0)
        reply = parse_reply(line)
        expected = _REPLY_TOPIC[verb]
        if reply.topic != expected:
            raise SAMProtocolError(f"{verb} was answered with {_shown(line)}")
        result = reply.result
        # DEST REPLY carries no RESULT when it succeeds.
        if result is not None and result != "OK":
            raise SAMReplyError(verb, result, reply.values.get("MESSAGE"))
        events: list[SAMEvent] = [Replied(verb, reply)]
        if verb == "HELLO VERSION":
            if result != "OK" or "VERSION" not in reply.values:
                raise SAMProtocolError(f"HELLO was answered with {_shown(line)}")
            self.version = reply.values["VERSION"]
        elif verb == "DEST GENERATE":
            for key in ("PUB", "PRIV"):
                if key not in reply.values:
                    raise SAMProtocolError(f"DEST REPLY without {key}")
        elif verb == "STREAM CONNECT":
            self._expect_ok(verb, result)
            self.phase = Phase.STREAM
            events.append(StreamOpened(None))
        elif verb == "STREAM ACCEPT":
            self._expect_ok(verb, result)
            if self._accept_silent:
                self.phase = Phase.STREAM
                events.append(StreamOpened(None))
            else:
                self.phase = Phase.PEER_LINE
        elif verb in ("SESSION CREATE", "STREAM FORWARD", "NAMING LOOKUP"):
            self._expect_ok(verb, result)
        return events

    @staticmethod
    def _expect_ok(verb: str, result: str | None) -> None:
        if result != "OK":
            raise SAMProtocolError(f"{verb} was answered without RESULT=OK")
