"""Identity keys and onion addresses, checked against Tor's own derivation."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmsg.crypto.identity import (
    Identity,
    normalize_onion_address,
    onion_address_from_public_key,
    parse_onion_address,
)
from onionmsg.errors import AddressError

# RFC 8032 section 7.1, TEST 1; the address is the one in Tor's src/test/test_hs_common.c
# (test_build_address), and tor 0.4.9 prints the same for this key (see below).
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
TOR_ADDRESS = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid"


def test_known_vector() -> None:
    identity = Identity(RFC8032_SEED)
    assert identity.public_key == RFC8032_PUBLIC
    assert identity.onion_address == TOR_ADDRESS
    assert onion_address_from_public_key(RFC8032_PUBLIC) == TOR_ADDRESS


def test_repr_hides_the_secret() -> None:
    identity = Identity(RFC8032_SEED)
    assert RFC8032_SEED.hex() not in repr(identity)
    assert TOR_ADDRESS in repr(identity)


def _tor_address_for(identity: Identity, workdir: Path) -> str:
    """Ask a real tor which address it publishes for this key (no network needed)."""
    hs_dir = workdir / "hs"
    hs_dir.mkdir(mode=0o700)
    (hs_dir / "hs_ed25519_secret_key").write_bytes(
        b"== ed25519v1-secret: type0 ==\x00\x00\x00" + identity.expanded_secret_key()
    )
    empty_torrc = workdir / "torrc"
    empty_torrc.write_text("")
    tor = shutil.which("tor") or "/usr/sbin/tor"
    process = subprocess.Popen(
        [
            tor,
            "-f",
            str(empty_torrc),
            "--defaults-torrc",
            str(empty_torrc),
            "--DisableNetwork",
            "1",
            "--SocksPort",
            "0",
            "--DataDirectory",
            str(workdir / "data"),
            "--HiddenServiceDir",
            str(hs_dir),
            "--HiddenServicePort",
            "80 127.0.0.1:9",
            "--Log",
            "err stderr",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        hostname = hs_dir / "hostname"
        deadline = time.monotonic() + 30
        while not hostname.exists():
            if process.poll() is not None:
                raise AssertionError(
                    f"tor exited: {process.stderr.read() if process.stderr else ''!r}"
                )
            assert time.monotonic() < deadline, "tor did not write the hostname file"
            time.sleep(0.05)
        return hostname.read_text().strip()
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("seed", [RFC8032_SEED, bytes(32), bytes(range(32))])
def test_tor_publishes_the_derived_address(seed: bytes, tmp_path: Path) -> None:
    identity = Identity(seed)
    assert _tor_address_for(identity, tmp_path) == identity.onion_address + ".onion"


def test_tor_key_blob_is_the_clamped_expanded_key() -> None:
    identity = Identity(RFC8032_SEED)
    prefix, _, encoded = identity.tor_key_blob().partition(":")
    assert prefix == "ED25519-V3"
    expanded = base64.b64decode(encoded)
    assert len(expanded) == 64
    digest = hashlib.sha512(RFC8032_SEED).digest()
    assert expanded[32:] == digest[32:]
    scalar = expanded[:32]
    assert scalar[0] & 7 == 0 and scalar[31] & 0x80 == 0 and scalar[31] & 0x40
    # The clamped scalar times the base point is the public key.
    import nacl.bindings

    assert nacl.bindings.crypto_scalarmult_ed25519_base_noclamp(scalar) == RFC8032_PUBLIC


def test_x25519_keys_match() -> None:
    identity = Identity.generate()
    import nacl.bindings

    assert nacl.bindings.crypto_scalarmult_base(identity.x25519_private) == identity.x25519_public


@given(st.binary(min_size=32, max_size=32))
def test_round_trip(seed: bytes) -> None:
    identity = Identity(seed)
    address = identity.onion_address
    assert len(address) == 56 and address == address.lower()
    assert parse_onion_address(address) == identity.public_key
    assert parse_onion_address(address.upper() + ".ONION") == identity.public_key
    assert parse_onion_address("  " + address + ".onion\n") == identity.public_key
    assert normalize_onion_address(address.upper()) == address
    assert bytes(nacl.signing.SigningKey(seed).verify_key) == identity.public_key


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "56 characters"),
        (TOR_ADDRESS[:-1], "56 characters"),
        (TOR_ADDRESS + "a", "56 characters"),
        ("www." + TOR_ADDRESS + ".onion", "subdomains"),
        (TOR_ADDRESS[:-1] + "1", "a-z"),
        (TOR_ADDRESS[:-2] + "ad", "checksum"),  # flips bits in the version byte
        ("a" + TOR_ADDRESS[1:], "checksum"),
        ("facebookcorewwwi", "56 characters"),  # a v2 address
        ("\x1b[31m" + TOR_ADDRESS, "characters"),
    ],
)
def test_malformed_addresses_are_clear_errors(text: str, reason: str) -> None:
    with pytest.raises(AddressError, match=reason):
        parse_onion_address(text)


def test_wrong_version_byte() -> None:
    raw = base64.b32decode(TOR_ADDRESS.upper())
    for version in (0, 2, 4, 255):
        bad = raw[:34] + bytes([version])
        text = base64.b32encode(bad).decode().lower()
        with pytest.raises(AddressError, match=r"version|checksum"):
            parse_onion_address(text)


def test_valid_checksum_but_wrong_version_says_version() -> None:
    public = RFC8032_PUBLIC
    checksum = hashlib.sha3_256(b".onion checksum" + public + b"\x04").digest()[:2]
    text = base64.b32encode(public + checksum + b"\x04").decode().lower()
    with pytest.raises(AddressError, match="version byte 4"):
        parse_onion_address(text)


def test_long_garbage_is_clipped_in_the_error() -> None:
    with pytest.raises(AddressError) as info:
        parse_onion_address("x" * 10_000)
    assert len(str(info.value)) < 300
