"""The store key: Argon2id (libsodium, via PyNaCl) from the user's passphrase.

The key file (``store.key.json``) holds only public parameters: the salt, the Argon2id
limits, and whether a passphrase is in use. Nothing in it helps an attacker beyond
what is needed to run the same (expensive) derivation for each guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nacl.pwhash
import nacl.utils

from onionmsg.config import write_private_file
from onionmsg.errors import OnionmsgError

KEY_SIZE = 32
# libsodium's "moderate" memory (256 MiB) with two passes more than its moderate 3, so that
# a guess reliably costs >= 0.5 s on the reference machine (3 passes: 0.40 s; 4: 0.47-0.52 s;
# 5: 0.58-0.59 s; docs/performance.md).
OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_MODERATE + 2
MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_MODERATE
# With --no-passphrase the store is still SQLCipher, keyed by this public constant:
# the format stays one, and a seized disk is readable by anyone (as the user was told).
NO_PASSPHRASE_KEY = b"onionmsg: no passphrase was set!"


class StoreKeyError(OnionmsgError):
    """The store's key file is missing or damaged."""


@dataclass(frozen=True)
class KeyParams:
    passphrase: bool
    salt: bytes
    opslimit: int
    memlimit: int

    @classmethod
    def new(cls, passphrase: bool) -> KeyParams:
        return cls(
            passphrase=passphrase,
            salt=nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES),
            opslimit=OPSLIMIT,
            memlimit=MEMLIMIT,
        )

    def derive(self, passphrase: bytes | None) -> bytes:
        if not self.passphrase:
            return NO_PASSPHRASE_KEY
        if passphrase is None:
            raise StoreKeyError("this store is protected by a passphrase")
        return nacl.pwhash.argon2id.kdf(
            KEY_SIZE, passphrase, self.salt, opslimit=self.opslimit, memlimit=self.memlimit
        )

    def save(self, path: Path) -> None:
        document = {
            "version": 1,
            "kdf": "argon2id",
            "passphrase": self.passphrase,
            "salt": self.salt.hex(),
            "opslimit": self.opslimit,
            "memlimit": self.memlimit,
        }
        write_private_file(path, json.dumps(document, indent=2).encode() + b"\n")

    @classmethod
    def load(cls, path: Path) -> KeyParams:
        try:
            document = json.loads(path.read_text())
            params = cls(
                passphrase=bool(document["passphrase"]),
                salt=bytes.fromhex(document["salt"]),
                opslimit=int(document["opslimit"]),
                memlimit=int(document["memlimit"]),
            )
        except FileNotFoundError:
            raise StoreKeyError(f"{path} is missing: is this an onionmsg home?") from None
        except (ValueError, KeyError, TypeError):
            raise StoreKeyError(f"{path} is damaged: restore it from a backup") from None
        if document.get("kdf") != "argon2id" or len(params.salt) != 16:
            raise StoreKeyError(f"{path} is damaged: restore it from a backup")
        return params
