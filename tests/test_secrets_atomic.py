"""Key files and exports are written atomically: a SIGKILL at any step leaves the old file
or the new one, complete, and the store opens with the old passphrase or the new one.

Each operation runs in a forked child whose file-system calls (os.open, os.write, os.fsync,
os.close, os.replace, os.rename, os.unlink) and store calls (Store.rekey, Store.close) are
numbered; the child SIGKILLs itself just before step N, for N = 1, 2, ... until a run
finishes. Writes are cut into small pieces so that torn temp files are among the states.
The re-key itself is one SQLite transaction in the WAL: a crash inside it is reproduced by
cutting the WAL at every frame, and a crash inside the checkpoint that follows by copying
only some of its frames into the database file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import stat
import struct
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nacl.pwhash
import pytest

from onionmsg import cli
from onionmsg.backup import open_backup
from onionmsg.config import Home, write_private_file
from onionmsg.store import keys
from onionmsg.store.db import Store, WrongPassphraseError
from onionmsg.store.keys import KeyParams

WRITE_CHUNK = 48  # bytes per os.write in the child: a key file takes several
MAX_STEPS = 200
PAGE_SIZE = 4096
WAL_HEADER = 32
FRAME = 24 + PAGE_SIZE
_OS_STEPS = ("open", "write", "fsync", "close", "replace", "rename", "unlink")


def _instrument(kill_before: int, trace: list[str]) -> None:
    """Number the child's I/O steps; SIGKILL the child just before step ``kill_before``."""
    kill = os.kill
    real = {name: getattr(os, name) for name in _OS_STEPS}

    def step(name: str) -> None:
        trace.append(name)
        if len(trace) == kill_before:
            kill(os.getpid(), signal.SIGKILL)

    def wrap(name: str) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            step(name)
            if name == "write":
                fd, data = args
                return real["write"](fd, bytes(data[:WRITE_CHUNK]))
            return real[name](*args, **kwargs)

        return wrapped

    for name in _OS_STEPS:
        setattr(os, name, wrap(name))
    for name in ("rekey", "close"):
        method = getattr(Store, name)

        def store_step(self: Store, *args: Any, _m: Any = method, _n: str = name) -> Any:
            step(f"Store.{_n}")
            return _m(self, *args)

        setattr(Store, name, store_step)


def _run_killed(kill_before: int, work: Callable[[], object], trace_file: Path) -> bool:
    """Run ``work`` in a child killed before its step ``kill_before``; True if it finished
    first (then its trace of steps is in ``trace_file``)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            trace: list[str] = []
            _instrument(kill_before, trace)
            work()
            trace_file.write_text("\n".join(trace))
        except BaseException:
            traceback.print_exc()
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return False
    assert os.WEXITSTATUS(status) == 0, "the child failed (its traceback is above)"
    return True


def _squeezed(trace: list[str]) -> list[str]:
    """The trace with each run of writes shown once, as "write+"."""
    squeezed: list[str] = []
    for name in trace:
        if name == "write":
            name = "write+"
        if not (name == "write+" and squeezed[-1:] == ["write+"]):
            squeezed.append(name)
    return squeezed


def _every_crash(
    work: Callable[[], object], trace_file: Path, before: Callable[[], None]
) -> Iterator[int]:
    """Yield after each run killed at step 1, 2, ...; ``before`` resets the files first."""
    for kill_before in range(1, MAX_STEPS):
        before()
        if _run_killed(kill_before, work, trace_file):
            return
        yield kill_before
    raise AssertionError(f"the operation did not finish within {MAX_STEPS} steps")


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id at its minimum: these tests derive keys hundreds of times."""
    monkeypatch.setattr(keys, "OPSLIMIT", nacl.pwhash.argon2id.OPSLIMIT_MIN)
    monkeypatch.setattr(keys, "MEMLIMIT", nacl.pwhash.argon2id.MEMLIMIT_MIN)


# -- write_private_file ----------------------------------------------------------------------


@pytest.mark.parametrize("existing", [True, False], ids=["replace", "create"])
def test_write_private_file_survives_a_kill_at_every_step(tmp_path: Path, existing: bool) -> None:
    directory = tmp_path / "home"
    directory.mkdir()
    path = directory / "store.key.json"
    old, new = b"old " * 40, b"new " * 50
    trace_file = tmp_path / "trace"

    def reset() -> None:
        for leftover in directory.iterdir():
            leftover.unlink()
        if existing:
            write_private_file(path, old)

    crashes = 0
    for _ in _every_crash(lambda: write_private_file(path, new), trace_file, reset):
        crashes += 1
        if path.exists():
            assert path.read_bytes() in (old, new)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        else:
            assert not existing
        # A leftover temp file never stops the next write.
        write_private_file(path, b"after the crash")
        assert path.read_bytes() == b"after the crash"
        assert list(directory.iterdir()) == [path]
    assert path.read_bytes() == new
    trace = trace_file.read_text().split()
    # Every step was a kill point: temp file written in pieces, fsync'd, closed, renamed,
    # then the directory fsync'd.
    writes = -(-len(new) // WRITE_CHUNK)
    assert trace == ["unlink", "open", *["write"] * writes, "fsync", "close", "replace",
                     "open", "fsync", "close"]  # fmt: skip
    assert crashes == len(trace)


def test_write_private_file_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "backup.onionmsg"
    (tmp_path / ".backup.onionmsg.tmp").symlink_to(victim)
    write_private_file(target, b"the backup")
    assert victim.read_bytes() == b"precious"
    assert target.read_bytes() == b"the backup"


def test_a_failed_write_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_private_file(tmp_path / "f", b"data")
    assert list(tmp_path.iterdir()) == []


# -- passwd ------------------------------------------------------------------------------------


def _passphrase_file(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text + "\n")
    return path


def _open(home: Home, passphrase: Path) -> Store | None:
    """The CLI's way to open the store (which finishes an interrupted passwd)."""
    try:
        return cli._open_store(home, argparse.Namespace(passphrase_file=passphrase))
    except WrongPassphraseError:
        return None


@pytest.fixture
def pristine(tmp_path: Path) -> tuple[Path, str]:
    """A home made by 'onionmsg init' with a passphrase, and its onion address."""
    root = tmp_path / "pristine"
    old = _passphrase_file(tmp_path, "old", "old passphrase")
    assert cli.main(["--home", str(root), "init", "--passphrase-file", str(old)]) == 0
    store = Store.open_with_passphrase(
        root / "store.db", KeyParams.load(root / "store.key.json"), b"old passphrase"
    )
    address = store.identity().onion_address
    store.close()
    return root, address


def _check_opens_with_exactly_one(home: Home, old: Path, new: Path, address: str) -> bool:
    """The key files are whole; the store opens with the old passphrase or the new one (not
    both); after opening, the key file matches the store. True if it is the new one."""
    KeyParams.load(home.keyfile_path)  # whole and valid, or this raises
    if home.pending_keyfile_path.exists():
        KeyParams.load(home.pending_keyfile_path)
    opened = [(p, s) for p in (old, new) if (s := _open(home, p)) is not None]
    assert len(opened) == 1, f"opens with {[p.name for p, _ in opened]}"
    ((passphrase, store),) = opened
    assert store.identity().onion_address == address
    assert store.integrity_check() == "ok"
    store.close()
    # Any interrupted swap is finished: the key file alone opens the store now. (A crash
    # before the re-key leaves the unused new parameters beside it; the next passwd
    # replaces them.)
    assert passphrase == old or not home.pending_keyfile_path.exists()
    Store.open_with_passphrase(
        home.store_path,
        KeyParams.load(home.keyfile_path),
        passphrase.read_bytes().strip(),
    ).close()
    return passphrase == new


def test_passwd_survives_a_kill_at_every_step(tmp_path: Path, pristine: tuple[Path, str]) -> None:
    source, address = pristine
    root = tmp_path / "home"
    home = Home(root)
    old = _passphrase_file(tmp_path, "old", "old passphrase")
    new = _passphrase_file(tmp_path, "new", "new passphrase")
    third = _passphrase_file(tmp_path, "third", "third passphrase")
    trace_file = tmp_path / "trace"

    def reset() -> None:
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(source, root)

    def passwd(current: Path, to: Path) -> int:
        return cli.main(["--home", str(root), "passwd", "--passphrase-file", str(current),
                         "--new-passphrase-file", str(to)])  # fmt: skip

    outcomes = []
    for _ in _every_crash(lambda: passwd(old, new), trace_file, reset):
        is_new = _check_opens_with_exactly_one(home, old, new, address)
        outcomes.append(is_new)
        # Nothing is stuck: passwd works again from whatever the crash left.
        assert passwd(new if is_new else old, third) == 0
        assert _open(home, third) is not None
    assert _check_opens_with_exactly_one(home, old, new, address)
    trace = trace_file.read_text().split()
    # The lock; the new key parameters saved (temp, fsync, rename, fsync dir) before the
    # re-key; the swap (rename, fsync dir) after it: every one of them was a kill point.
    assert _squeezed(trace) == [
        "open", "unlink", "open", "write+", "fsync", "close", "replace", "open", "fsync", "close",
        "Store.rekey", "Store.close", "replace", "open", "fsync", "close", "close",
    ]  # fmt: skip
    assert len(outcomes) == len(trace)
    # Killed before the re-key: the old passphrase; killed after it: the new one.
    switch = trace.index("Store.rekey") + 1
    assert outcomes == [False] * switch + [True] * (len(trace) - switch)


def _frames(wal: bytes) -> list[tuple[int, int, bytes]]:
    """(page number, commit size, page bytes) of each WAL frame."""
    frames = []
    for offset in range(WAL_HEADER, len(wal) - FRAME + 1, FRAME):
        page_number, commit = struct.unpack(">II", wal[offset : offset + 8])
        frames.append((page_number, commit, wal[offset + 24 : offset + FRAME]))
    return frames


def test_a_crash_inside_the_rekey_or_its_checkpoint(
    tmp_path: Path, pristine: tuple[Path, str]
) -> None:
    """Killed after the re-key committed but before the store closed: the WAL holds the
    re-keyed pages. Cut it at every frame (a crash inside the re-key transaction), or copy
    some of its frames into the database file (a crash inside the closing checkpoint)."""
    source, address = pristine
    crashed = tmp_path / "crashed"
    old = _passphrase_file(tmp_path, "old", "old passphrase")
    new = _passphrase_file(tmp_path, "new", "new passphrase")
    shutil.copytree(source, crashed)

    def passwd() -> int:
        return cli.main(["--home", str(crashed), "passwd", "--passphrase-file", str(old),
                         "--new-passphrase-file", str(new)])  # fmt: skip

    trace_file = tmp_path / "trace"
    assert _run_killed(MAX_STEPS, passwd, trace_file)  # a full run, to learn the steps
    trace = trace_file.read_text().split()
    shutil.rmtree(crashed)
    shutil.copytree(source, crashed)
    close_after_rekey = trace.index("Store.close", trace.index("Store.rekey")) + 1
    assert not _run_killed(close_after_rekey, passwd, trace_file)
    wal = (crashed / "store.db-wal").read_bytes()
    frames = _frames(wal)
    assert frames, "the re-key is in the WAL"
    commits = [i for i, (_, commit, _) in enumerate(frames) if commit]
    assert commits == [len(frames) - 1], "the re-key is one transaction"
    database = (crashed / "store.db").read_bytes()

    def variant(name: str, wal_bytes: bytes, db_bytes: bytes) -> Home:
        root = tmp_path / name
        shutil.copytree(crashed, root)
        (root / "store.db-wal").write_bytes(wal_bytes)
        (root / "store.db").write_bytes(db_bytes)
        (root / "store.db-shm").unlink(missing_ok=True)
        return Home(root)

    for kept in range(len(frames) + 1):
        home = variant(f"cut{kept}", wal[: WAL_HEADER + kept * FRAME], database)
        is_new = _check_opens_with_exactly_one(home, old, new, address)
        assert is_new == (kept == len(frames))
    for copied in range(1, len(frames) + 1):
        patched = bytearray(database)
        for page_number, _, page in frames[:copied]:
            offset = (page_number - 1) * PAGE_SIZE
            patched[offset : offset + PAGE_SIZE] = page
        home = variant(f"checkpoint{copied}", wal, bytes(patched))
        assert _check_opens_with_exactly_one(home, old, new, address)


# -- export --------------------------------------------------------------------------------------


def test_export_survives_a_kill_at_every_step(tmp_path: Path, pristine: tuple[Path, str]) -> None:
    source, address = pristine
    old = _passphrase_file(tmp_path, "old", "old passphrase")
    backup_passphrase = _passphrase_file(tmp_path, "backup", "backup passphrase")
    target = tmp_path / "out" / "backup.onionmsg"
    target.parent.mkdir()
    trace_file = tmp_path / "trace"

    def export() -> int:
        return cli.main(["--home", str(source), "export", str(target), "--passphrase-file",
                         str(old), "--backup-passphrase-file", str(backup_passphrase)])  # fmt: skip

    assert export() == 0
    previous = target.read_bytes()

    def reset() -> None:
        for leftover in target.parent.iterdir():
            leftover.unlink()
        target.write_bytes(previous)

    crashes = 0
    for _ in _every_crash(export, trace_file, reset):
        crashes += 1
        data = target.read_bytes()
        assert (
            data == previous
            or open_backup(data, b"backup passphrase").identity.onion_address == address
        )
    assert target.read_bytes() != previous
    assert open_backup(target.read_bytes(), b"backup passphrase").identity.onion_address == address
    trace = trace_file.read_text().split()
    # Reading the store, then write_private_file: every step a kill point.
    assert _squeezed(trace)[-9:] == [
        "unlink", "open", "write+", "fsync", "close", "replace", "open", "fsync", "close"
    ]  # fmt: skip
    assert crashes == len(trace)
