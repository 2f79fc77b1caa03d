"""Where a user's data lives, and the file-permission rules for it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from onionmsg.errors import OnionmsgError

HOME_ENV = "ONIONMSG_HOME"
PASSPHRASE_FILE_ENV = "ONIONMSG_PASSPHRASE_FILE"  # noqa: S105 - a variable name
# AF_UNIX paths are limited to 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107


class HomeError(OnionmsgError):
    """The onionmsg home directory is missing, unsafe, or not initialised."""


def default_home() -> Path:
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("onionmsg", appauthor=False))


@dataclass(frozen=True)
class Home:
    """The files of one user. Everything in it is 0600 in a 0700 directory."""

    root: Path

    @property
    def store_path(self) -> Path:
        return self.root / "store.db"

    @property
    def keyfile_path(self) -> Path:
        return self.root / "store.key.json"

    @property
    def control_socket(self) -> Path:
        return self.root / "control.sock"

    @property
    def lock_path(self) -> Path:
        return self.root / "daemon.lock"

    @property
    def log_path(self) -> Path:
        return self.root / "daemon.log"

    @property
    def tor_dir(self) -> Path:
        return self.root / "tor"

    @property
    def pending_keyfile_path(self) -> Path:
        """The new key parameters while ``passwd`` re-keys the store."""
        return self.root / "store.key.json.new"

    def lock(self) -> int:
        """Take the home's exclusive lock (held by a running daemon, or by ``passwd``)."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise HomeError(f"a daemon is already running for {self.root}") from None
        return fd

    def exists(self) -> bool:
        return self.keyfile_path.exists()

    def create(self) -> None:
        """Create the directory 0700 (or tighten an empty existing one)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def check_private(self) -> None:
        """Refuse a home that others can read, and say how to fix it."""
        try:
            mode = self.root.stat().st_mode
        except FileNotFoundError:
            raise HomeError(f"{self.root} does not exist: run 'onionmsg init' first") from None
        if stat.S_IMODE(mode) & 0o077:
            raise HomeError(f"{self.root} is readable by other users: run 'chmod 700 {self.root}'")

    def socket_path_for_bind(self) -> str:
        path = str(self.control_socket)
        if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
            raise HomeError(
                f"the control socket path {path} is longer than the system allows "
                f"({_MAX_SOCKET_PATH} bytes): use a shorter --home"
            )
        return path


def fsync_directory(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_private_file(path: Path, data: bytes) -> None:
    """Write a file atomically with mode 0600: temp file, fsync, rename, fsync directory.

    A crash at any step leaves the old file or the new one, complete (tests/
    test_secrets_atomic.py kills the writer at each step). The temp file is created anew
    (O_EXCL, O_NOFOLLOW): a leftover of a crash, or a link someone planted where an export
    goes, is never written through.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)
