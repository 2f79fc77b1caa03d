"""The sans-IO SAM v3 machine: replies, errors, streams, destinations, and hostile input."""

from __future__ import annotations

import base64
import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmsg.transport.sam import (
    MAX_LINE,
    Phase,
    Replied,
    SAMConnection,
    SAMError,
    SAMProtocolError,
    SAMReplyError,
    StreamData,
    StreamOpened,
    b32_address,
    format_command,
    i2p_b64encode,
    parse_destination,
    parse_reply,
    public_destination,
)

# A destination with an Ed25519 key certificate (type 5, 4 bytes: sig type 7, crypto 0),
# as DEST GENERATE SIGNATURE_TYPE=7 returns: 391 bytes, 524 base64 characters.
DEST_BYTES = bytes(range(256)) + bytes(128) + b"\x05\x00\x04\x00\x07\x00\x00"
DEST = i2p_b64encode(DEST_BYTES)
PRIV = i2p_b64encode(DEST_BYTES + bytes(256) + bytes(32))


def hello(connection: SAMConnection) -> None:
    assert connection.data_to_send() == b"HELLO VERSION MIN=3.1 MAX=3.1\n"
    events = connection.receive_data(b"HELLO REPLY RESULT=OK VERSION=3.1\n")
    assert [e.command for e in events if isinstance(e, Replied)] == ["HELLO VERSION"]
    assert connection.version == "3.1"


def test_destination_sizes_match_what_i2pd_returns() -> None:
    assert len(DEST) == 524
    assert parse_destination(DEST) == DEST_BYTES
    assert public_destination(PRIV) == DEST


def test_b32_address_is_the_base32_sha256_of_the_destination() -> None:
    digest = base64.b32encode(hashlib.sha256(DEST_BYTES).digest()).decode().lower().rstrip("=")
    assert b32_address(DEST) == digest + ".b32.i2p"
    assert len(digest) == 52


@pytest.mark.parametrize(
    "text",
    [
        "",
        "AAAA",  # too short
        DEST + "AAAA",  # trailing bytes
        DEST[:-4] + "!!!!",  # not the alphabet
        "+" + DEST[1:],  # standard base64, not I2P's
        PRIV,  # a private key is not a public destination
    ],
)
def test_bad_destinations_are_refused(text: str) -> None:
    with pytest.raises(SAMProtocolError):
        parse_destination(text)


def test_a_public_destination_is_not_a_private_key() -> None:
    with pytest.raises(SAMProtocolError, match="not a private key"):
        public_destination(DEST)


def test_certificate_length_out_of_range_is_refused() -> None:
    raw = bytearray(DEST_BYTES)
    raw[385:387] = (5000).to_bytes(2, "big")
    with pytest.raises(SAMProtocolError, match="certificate length"):
        parse_destination(i2p_b64encode(bytes(raw)))


def test_reply_parsing_handles_quotes_escapes_and_flags() -> None:
    reply = parse_reply('SESSION STATUS RESULT=I2P_ERROR MESSAGE="a \\"quoted\\" text" FLAG')
    assert reply.topic == "SESSION STATUS"
    assert reply.result == "I2P_ERROR"
    assert reply.values["MESSAGE"] == 'a "quoted" text'
    assert reply.values["FLAG"] == ""
    assert parse_reply("NAMING REPLY  RESULT=OK   VALUE=x==\r").values == {
        "RESULT": "OK",
        "VALUE": "x==",
    }


@pytest.mark.parametrize(
    "line", ["", "HELLO", "A=B REPLY", 'HELLO REPLY MESSAGE="open', "HELLO REPLY =x"]
)
def test_malformed_replies_raise_the_protocol_error(line: str) -> None:
    with pytest.raises(SAMProtocolError):
        parse_reply(line)


def test_commands_quote_values_that_need_it() -> None:
    assert format_command("NAMING LOOKUP", NAME="ME") == b"NAMING LOOKUP NAME=ME\n"
    assert format_command("X Y", A='a "b"', B="", C="k=v") == b'X Y A="a \\"b\\"" B="" C=k=v\n'
    with pytest.raises(ValueError):
        format_command("X Y", A="two\nlines")


def test_dest_generate_then_session_create() -> None:
    connection = SAMConnection()
    hello(connection)
    connection.request("DEST GENERATE", SIGNATURE_TYPE="7")
    assert connection.data_to_send() == b"DEST GENERATE SIGNATURE_TYPE=7\n"
    (event,) = connection.receive_data(f"DEST REPLY PUB={DEST} PRIV={PRIV}\n".encode())
    assert isinstance(event, Replied)
    assert event.reply.values["PRIV"] == PRIV
    connection.request(
        "SESSION CREATE", STYLE="STREAM", ID="s1", DESTINATION=PRIV, **{"inbound.length": "0"}
    )
    sent = connection.data_to_send()
    assert sent.startswith(b"SESSION CREATE STYLE=STREAM ID=s1 DESTINATION=")
    assert sent.endswith(b" inbound.length=0\n")
    # Replies may arrive in pieces.
    line = f"SESSION STATUS RESULT=OK DESTINATION={PRIV}\n".encode()
    assert connection.receive_data(line[:10]) == []
    (event,) = connection.receive_data(line[10:])
    assert isinstance(event, Replied) and event.command == "SESSION CREATE"
    assert connection.phase is Phase.COMMANDS


@pytest.mark.parametrize(
    ("command", "reply", "result"),
    [
        ("SESSION CREATE", "SESSION STATUS RESULT=DUPLICATED_ID", "DUPLICATED_ID"),
        ("SESSION CREATE", "SESSION STATUS RESULT=DUPLICATED_DEST", "DUPLICATED_DEST"),
        ("SESSION CREATE", "SESSION STATUS RESULT=INVALID_KEY", "INVALID_KEY"),
        ("STREAM CONNECT", "STREAM STATUS RESULT=CANT_REACH_PEER", "CANT_REACH_PEER"),
        ("STREAM CONNECT", "STREAM STATUS RESULT=INVALID_ID", "INVALID_ID"),
        ("STREAM ACCEPT", "STREAM STATUS RESULT=I2P_ERROR", "I2P_ERROR"),
        ("DEST GENERATE", "DEST REPLY RESULT=I2P_ERROR", "I2P_ERROR"),
    ],
)
def test_a_result_other_than_ok_is_a_clear_error(command: str, reply: str, result: str) -> None:
    connection = SAMConnection()
    hello(connection)
    connection.request(command, ID="s1")
    with pytest.raises(SAMReplyError) as raised:
        connection.receive_data(reply.encode() + b"\n")
    assert raised.value.result == result
    assert raised.value.command == command
    assert result in str(raised.value) and command in str(raised.value)
    assert connection.phase is Phase.CLOSED
    with pytest.raises(SAMProtocolError):
        connection.receive_data(b"more\n")


def test_the_router_message_is_part_of_the_error() -> None:
    connection = SAMConnection()
    hello(connection)
    connection.request("SESSION CREATE", ID="s1")
    with pytest.raises(SAMReplyError, match="I2P_ERROR: Socket already in use") as raised:
        connection.receive_data(
            b'SESSION STATUS RESULT=I2P_ERROR MESSAGE="Socket already in use"\n'
        )
    assert raised.value.router_message == "Socket already in use"


def test_noversion_is_refused() -> None:
    connection = SAMConnection()
    connection.data_to_send()
    with pytest.raises(SAMReplyError, match="NOVERSION"):
        connection.receive_data(b"HELLO REPLY RESULT=NOVERSION\n")


def test_a_reply_to_the_wrong_command_is_refused() -> None:
    connection = SAMConnection()
    with pytest.raises(SAMProtocolError, match="answered with"):
        connection.receive_data(b"STREAM STATUS RESULT=OK\n")


def test_unsolicited_lines_are_refused() -> None:
    connection = SAMConnection()
    hello(connection)
    with pytest.raises(SAMProtocolError, match="unexpected"):
        connection.receive_data(b"HELLO REPLY RESULT=OK VERSION=3.1\n")


def test_stream_connect_turns_the_connection_into_the_stream() -> None:
    connection = SAMConnection()
    hello(connection)
    connection.request("STREAM CONNECT", ID="s1", DESTINATION=DEST, SILENT="false")
    assert (
        connection.data_to_send()
        == f"STREAM CONNECT ID=s1 DESTINATION={DEST} SILENT=false\n".encode()
    )
    # The first stream bytes may share a read with the status line, and contain newlines.
    events = connection.receive_data(b"STREAM STATUS RESULT=OK\n\x00cell\nbytes")
    assert events[1:] == [StreamOpened(None), StreamData(b"\x00cell\nbytes")]
    assert connection.receive_data(b"HELLO REPLY RESULT=OK\n") == [
        StreamData(b"HELLO REPLY RESULT=OK\n")
    ]
    connection.send_stream(b"out")
    assert connection.data_to_send() == b"out"
    with pytest.raises(SAMError):
        connection.request("NAMING LOOKUP", NAME="ME")


def test_stream_accept_names_the_peer_first() -> None:
    connection = SAMConnection()
    hello(connection)
    connection.request("STREAM ACCEPT", ID="s1", SILENT="false")
    events = connection.receive_data(b"STREAM STATUS RESULT=OK\n")
    assert [type(e) for e in events] == [Replied]
    assert connection.phase is Phase.PEER_LINE
    events = connection.receive_data(f"{DEST} FROM_PORT=0 TO_PORT=0\n".encode() + b"data")
    assert events == [StreamOpened(DEST), StreamData(b"data")]


def test_a_peer_line_that_is_no_destination_is_refused() -> None:
    connection = SAMConnection()
    hello(connection)
    connection.request("STREAM ACCEPT", ID="s1")
    connection.receive_data(b"STREAM STATUS RESULT=OK\n")
    with pytest.raises(SAMProtocolError):
        connection.receive_data(b"not a destination\n")


def test_silent_accept_opens_the_stream_at_once() -> None:
    connection = SAMConnection()
    hello(connection)
    connection.request("STREAM ACCEPT", ID="s1", SILENT="true")
    events = connection.receive_data(b"STREAM STATUS RESULT=OK\nxy")
    assert events[1:] == [StreamOpened(None), StreamData(b"xy")]


def test_stream_bytes_before_the_stream_opens_cannot_be_sent() -> None:
    connection = SAMConnection()
    with pytest.raises(SAMError):
        connection.send_stream(b"early")


def test_unknown_commands_are_a_programming_error() -> None:
    with pytest.raises(ValueError):
        SAMConnection().request("DATAGRAM SEND")


def test_overlong_lines_are_refused_without_waiting_for_the_newline() -> None:
    connection = SAMConnection()
    with pytest.raises(SAMProtocolError, match="longer"):
        connection.receive_data(b"H" * (MAX_LINE + 1))
    connection = SAMConnection()
    with pytest.raises(SAMProtocolError, match="longer"):
        connection.receive_data(b"H" * (MAX_LINE + 1) + b"\n")


def test_non_utf8_is_refused() -> None:
    with pytest.raises(SAMProtocolError, match="UTF-8"):
        SAMConnection().receive_data(b"HELLO REPLY \xff\n")


@given(st.lists(st.binary(max_size=200), max_size=8))
def test_garbage_raises_only_the_protocols_error(chunks: list[bytes]) -> None:
    connection = SAMConnection()
    connection.request("STREAM ACCEPT", ID="s")
    try:
        for chunk in chunks:
            connection.receive_data(chunk)
    except SAMError:
        pass


@given(st.lists(st.text(max_size=120), max_size=6))
def test_garbage_lines_raise_only_the_protocols_error(lines: list[str]) -> None:
    connection = SAMConnection()
    connection.request("SESSION CREATE", ID="s")
    connection.request("STREAM CONNECT", ID="s", DESTINATION=DEST)
    try:
        for line in lines:
            connection.receive_data(line.encode("utf-8", "surrogatepass") + b"\n")
    except SAMError:
        pass


@given(st.text(max_size=200))
def test_parse_reply_raises_only_the_protocols_error(line: str) -> None:
    with contextlib.suppress(SAMProtocolError):
        parse_reply(line)


@given(st.text(max_size=800))
def test_destination_parsing_raises_only_the_protocols_error(text: str) -> None:
    for parse in (parse_destination, public_destination, b32_address):
        with contextlib.suppress(SAMProtocolError):
            parse(text)


@given(st.dictionaries(st.from_regex(r"[A-Z_.]{1,12}", fullmatch=True), st.text(max_size=40)))
def test_formatted_options_parse_back(options: dict[str, str]) -> None:
    options = {k: v for k, v in options.items() if not any(c in v for c in "\r\n\0")}
    line = format_command("SESSION STATUS", **options).decode().removesuffix("\n")
    assert dict(parse_reply(line).values) == options
