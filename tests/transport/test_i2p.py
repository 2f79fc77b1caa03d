"""The I2P transport's Twisted layer against a scripted SAM bridge on a unix socket."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import LineOnlyReceiver

from onionmsg.crypto.identity import Identity
from onionmsg.store.db import Contact
from onionmsg.transport.i2p import I2PError, I2POptions, I2PTransport, sam_endpoint
from onionmsg.transport.sam import b32_address, i2p_b64encode

DEST = i2p_b64encode(bytes(range(256)) + bytes(128) + b"\x05\x00\x04\x00\x07\x00\x00")
PRIV = i2p_b64encode(bytes(range(256)) + bytes(128) + b"\x05\x00\x04\x00\x07\x00\x00" + bytes(288))
PEER = i2p_b64encode(bytes(255) + b"\x09" + bytes(128) + b"\x05\x00\x04\x00\x07\x00\x00")


class FakeSAM(LineOnlyReceiver):
    """Answers like i2pd; ``script`` maps a command's first two words to the reply line."""

    delimiter = b"\n"

    def __init__(self, script: dict[str, str], log: list[str]) -> None:
        self.script = script
        self.log = log

    def lineReceived(self, line: bytes) -> None:
        text = line.decode()
        self.log.append(text)
        verb = " ".join(text.split()[:2])
        if verb == "HELLO VERSION":
            self.reply("HELLO REPLY RESULT=OK VERSION=3.1")
        elif verb in self.script:
            self.reply(self.script[verb])
            if verb == "STREAM CONNECT" and "RESULT=OK" in self.script[verb]:
                self.setRawMode()
        else:
            self.reply("STREAM STATUS RESULT=I2P_ERROR")

    def reply(self, line: str) -> None:
        assert self.transport is not None
        self.transport.write(line.encode() + b"\n")

    def setRawMode(self) -> None:
        self.lineReceived = lambda line: None  # type: ignore[method-assign]
        self.dataReceived = lambda data: self.log.append(data.decode())  # type: ignore[method-assign]


class Keys:
    def __init__(self, key: str | None = None) -> None:
        self.key = key

    def i2p_private_key(self) -> str | None:
        return self.key

    def set_i2p_private_key(self, private_key: str) -> None:
        self.key = private_key


@pytest.fixture
def sam(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], tuple[str, list[str]]]]:
    ports: list[IListeningPort] = []

    def serve(script: dict[str, str]) -> tuple[str, list[str]]:
        log: list[str] = []
        path = tmp_path / f"sam{len(ports)}.sock"
        factory = Factory.forProtocol(lambda: FakeSAM(script, log))
        endpoint = UNIXServerEndpoint(reactor, str(path))
        endpoint.listen(factory).addCallback(ports.append)
        return f"unix:{path}", log

    yield serve
    for port in ports:
        port.stopListening()


def session_ok() -> dict[str, str]:
    return {
        "DEST GENERATE": f"DEST REPLY PUB={DEST} PRIV={PRIV}",
        "SESSION CREATE": f"SESSION STATUS RESULT=OK DESTINATION={PRIV}",
        "STREAM ACCEPT": "STREAM STATUS RESULT=OK",
    }


def options(address: str) -> I2POptions:
    return I2POptions(sam=address, tunnel_length=0, tunnel_quantity=1)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_first_start_generates_and_keeps_the_destination(sam) -> None:  # type: ignore[no-untyped-def]
    address, log = sam(session_ok())
    keys = Keys()
    transport = I2PTransport(reactor, Identity.generate(), keys, options(address))
    statuses: list[dict[str, object]] = []
    transport.add_status_listener(statuses.append)
    listening = await transport.listen(Factory.forProtocol(Protocol))
    assert keys.key == PRIV
    assert listening == f"i2p {b32_address(DEST)}"
    assert transport.destination == DEST
    (create,) = [line for line in log if line.startswith("SESSION CREATE")]
    assert f"DESTINATION={PRIV} " in create and "SIGNATURE_TYPE=7" in create
    for option in ("inbound.length=0", "outbound.length=0", "i2cp.leaseSetType=1"):
        assert option in create.split()
    assert "DEST GENERATE SIGNATURE_TYPE=7" in log
    assert statuses[-1]["state"] == "ready" and statuses[-1]["tunnels_ready"] is True
    await transport.stop()
    assert transport.status()["state"] == "stopped"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_a_kept_key_is_reused(sam) -> None:  # type: ignore[no-untyped-def]
    address, log = sam(session_ok())
    transport = I2PTransport(reactor, Identity.generate(), Keys(PRIV), options(address))
    await transport.listen(Factory.forProtocol(Protocol))
    assert not any(line.startswith("DEST GENERATE") for line in log)
    await transport.stop()


@pytest.mark.parametrize(
    "reply",
    [
        "SESSION STATUS RESULT=DUPLICATED_ID",
        "SESSION STATUS RESULT=DUPLICATED_DEST",
        "SESSION STATUS RESULT=INVALID_KEY",
        'SESSION STATUS RESULT=I2P_ERROR MESSAGE="no tunnels"',
    ],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_session_refusals_are_clear_errors(sam, reply: str) -> None:  # type: ignore[no-untyped-def]
    address, _log = sam({**session_ok(), "SESSION CREATE": reply})
    transport = I2PTransport(reactor, Identity.generate(), Keys(PRIV), options(address))
    result = reply.split("RESULT=")[1].split()[0]
    with pytest.raises(I2PError, match=f"SESSION CREATE: {result}"):
        await transport.listen(Factory.forProtocol(Protocol))


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_no_router_is_a_clear_error(tmp_path: Path) -> None:
    transport = I2PTransport(
        reactor, Identity.generate(), Keys(PRIV), options(f"unix:{tmp_path}/none")
    )
    with pytest.raises(I2PError, match="cannot reach the I2P router's SAM port"):
        await transport.listen(Factory.forProtocol(Protocol))


def test_bad_sam_addresses_are_refused() -> None:
    with pytest.raises(I2PError, match="not a SAM address"):
        sam_endpoint(reactor, "localhost")


class Recorder(Protocol):
    def __init__(self) -> None:
        self.opened: Deferred[None] = Deferred()
        self.received = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"hello peer")
        self.opened.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data


def contact(destination: str | None) -> Contact:
    return Contact(
        1, Identity.generate().onion_address, "bob", None, 0, i2p_destination=destination
    )


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_dialing_hands_the_stream_to_the_link_protocol(sam) -> None:  # type: ignore[no-untyped-def]
    address, log = sam({**session_ok(), "STREAM CONNECT": "STREAM STATUS RESULT=OK"})
    transport = I2PTransport(reactor, Identity.generate(), Keys(PRIV), options(address))
    await transport.listen(Factory.forProtocol(Protocol))
    assert transport.client_endpoint(contact(None)) is None  # no destination: not over I2P
    assert transport.client_endpoint(contact(DEST)) is None  # ourselves: i2pd refuses
    endpoint = transport.client_endpoint(contact(PEER))
    assert endpoint is not None
    recorder = Recorder()
    protocol: object = await endpoint.connect(Factory.forProtocol(lambda: recorder))
    assert protocol is recorder
    await recorder.opened
    connect = [line for line in log if line.startswith("STREAM CONNECT")]
    assert connect and f"DESTINATION={PEER}" in connect[0]
    await transport.stop()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_cant_reach_peer_fails_the_dial_clearly(sam) -> None:  # type: ignore[no-untyped-def]
    address, _log = sam({**session_ok(), "STREAM CONNECT": "STREAM STATUS RESULT=CANT_REACH_PEER"})
    transport = I2PTransport(reactor, Identity.generate(), Keys(PRIV), options(address))
    await transport.listen(Factory.forProtocol(Protocol))
    endpoint = transport.client_endpoint(contact(PEER))
    assert endpoint is not None
    with pytest.raises(Exception, match="STREAM CONNECT: CANT_REACH_PEER"):
        await endpoint.connect(Factory.forProtocol(Recorder))
    await transport.stop()
