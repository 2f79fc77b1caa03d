"""Opening the store from the CLI after an interrupted `passwd`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from onionmsg import cli
from onionmsg.config import Home
from onionmsg.store.keys import KeyParams


def test_a_store_without_passphrase_opens_unasked_after_an_interrupted_passwd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Home(tmp_path / "home")
    assert cli.main(["--home", str(home.root), "init", "--no-passphrase"]) == 0
    address = capsys.readouterr().out.strip()
    # 'passwd' adding a passphrase was killed after saving its new parameters, before
    # re-keying: the store still has the old (no-passphrase) key.
    KeyParams.new(passphrase=True).save(home.pending_keyfile_path)
    with open("/dev/null") as no_terminal:  # no terminal, no passphrase file
        monkeypatch.setattr(sys, "stdin", no_terminal)
        assert cli.main(["--home", str(home.root), "address"]) == 0
    assert capsys.readouterr().out.strip() == address
