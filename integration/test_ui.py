"""The real console UI in tmux against real daemons: what a user types, what the screen shows."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.users import User, wait_for

pytestmark = pytest.mark.integration


class Tmux:
    """One private tmux server; each pane runs one onionmsg UI at 80x24."""

    def __init__(self, tmp_path: Path) -> None:
        self.socket = str(tmp_path / "tmux.sock")

    def run(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-S", self.socket, *args], capture_output=True, text=True, check=True
        )
        return result.stdout

    def start_ui(self, name: str, user: User, *ui_args: str) -> None:
        command = shlex.join(
            [sys.executable, "-m", "onionmsg", "--home", str(user.home), "ui", *ui_args]
        )
        env = {k: v for k, v in user.env.items() if k not in ("TMUX", "NO_COLOR")}
        env["LANG"] = "C.UTF-8"
        self.run(
            "-f", "/dev/null", "new-session", "-d", "-s", name, "-x", "80", "-y", "24",
            *[arg for key, value in env.items() for arg in ("-e", f"{key}={value}")],
            f"{command} 2>{user.home / 'ui.stderr'}; sleep 600",
        )  # fmt: skip

    def keys(self, name: str, *keys: str, literal: bool = False) -> None:
        self.run("send-keys", "-t", name, *(["-l"] if literal else []), *keys)

    def screen(self, name: str, escapes: bool = False) -> str:
        return self.run("capture-pane", "-p", *(["-e"] if escapes else []), "-t", name)

    def show(self, name: str, what: str) -> str:
        return self.run("display-message", "-p", "-t", name, what).strip()

    def wait(self, name: str, text: str, timeout: float = 30) -> str:
        def shown() -> str | None:
            screen = self.screen(name)
            return screen if text in screen else None

        return wait_for(shown, timeout, f"{text!r} on {name}'s screen")

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    server = Tmux(tmp_path)
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def alice_and_bob(tmp_path: Path) -> Iterator[tuple[User, User]]:
    alice, bob = User("alice", tmp_path / "alice"), User("bob", tmp_path / "bob")
    try:
        for user in (alice, bob):
            user.init("--no-passphrase")
            user.start_daemon("--transport", "tcp", "--listen", "127.0.0.1:0")
        yield alice, bob
    finally:
        for user in (alice, bob):
            if user.daemon is not None:
                user.daemon.kill()
                user.daemon.wait()


def test_add_a_contact_send_and_see_it_delivered(
    tmux: Tmux, alice_and_bob: tuple[User, User]
) -> None:
    alice, bob = alice_and_bob
    tmux.start_ui("alice", alice)
    tmux.start_ui("bob", bob)
    tmux.wait("alice", "Press a to add one.")
    # Alice adds bob in the UI: address, name, tcp endpoint (a development transport).
    tmux.keys("alice", "a")
    tmux.wait("alice", "Add a contact")
    tmux.keys("alice", "not an address", literal=True)
    tmux.keys("alice", "Enter")
    tmux.wait("alice", "is not a v3 onion")
    tmux.keys("alice", *["BSpace"] * len("not an address"))
    tmux.keys("alice", bob.address, literal=True)
    tmux.keys("alice", "Tab")
    tmux.keys("alice", "bob", literal=True)
    tmux.keys("alice", "Tab")
    tmux.keys("alice", bob.tcp_endpoint(), literal=True)
    tmux.keys("alice", "Enter")
    tmux.wait("alice", "No messages yet.")
    bob.cli("contacts", "add", alice.address, "--name", "alice", "--tcp", alice.tcp_endpoint())
    tmux.wait("alice", "● bob")
    tmux.wait("bob", "● alice")
    tmux.keys("alice", "Hello Bob, from the UI", literal=True)
    tmux.keys("alice", "Enter")
    screen = tmux.wait("alice", "delivered")
    assert re.search(r"\d\d:\d\d me: Hello Bob, from the UI +delivered", screen)
    assert re.search(r"\d\d:\d\d alice: Hello Bob, from the UI", tmux.wait("bob", "from the UI"))
    # Bob opens the conversation (Enter) and answers with two lines (Alt-Enter).
    tmux.keys("bob", "Enter")
    tmux.keys("bob", "Hi Alice", literal=True)
    tmux.keys("bob", "M-Enter")
    tmux.keys("bob", "second line", literal=True)
    tmux.keys("bob", "Enter")
    screen = tmux.wait("alice", "second line")
    assert re.search(r"bob: Hi Alice *\n.*second line", screen), screen
    # Quit asks first; the daemon keeps running.
    tmux.keys("alice", "C-c")
    tmux.wait("alice", "Quit onionmsg? The daemon keeps running")
    tmux.keys("alice", "y")
    wait_for(lambda: "onionmsg ·" not in tmux.screen("alice"), 10, "the UI to exit")
    assert alice.daemon is not None and alice.daemon.poll() is None
    assert (alice.home / "ui.stderr").read_text() == ""


def test_a_contact_request_is_accepted_in_the_ui(
    tmux: Tmux, alice_and_bob: tuple[User, User]
) -> None:
    alice, bob = alice_and_bob
    tmux.start_ui("bob", bob)
    tmux.wait("bob", "Press a to add one.")
    # Alice, a stranger to bob, adds him with a note: bob's UI shows a request, live.
    alice.cli("contacts", "add", bob.address, "--name", "bob", "--tcp", bob.tcp_endpoint(),
              "--message", "alice from the \x1b[1mconference")  # fmt: skip
    alice.cli("send", "bob", "before you accepted")
    tmux.wait("bob", "requests: 1")
    tmux.keys("bob", "R")
    screen = tmux.wait("bob", "Contact requests")
    assert re.search(rf"\d\d:\d\d  {alice.address[:10]}…  alice from the \[1mconference", screen)
    assert "0/0 online" in screen.splitlines()[0]  # a request is not a contact
    # Bob accepts it, naming her; the conversation opens.
    tmux.keys("bob", "a")
    tmux.wait("bob", "Accept the request")
    tmux.keys("bob", "alice", literal=True)
    tmux.keys("bob", "Enter")
    screen = tmux.wait("bob", "alice is a contact now.")
    assert "requests: 0" in screen.splitlines()[-1]
    # Her messages now reach him: the one she sent before, and a new one.
    alice.cli("send", "bob", "thanks for accepting")
    screen = tmux.wait("bob", "thanks for accepting", timeout=60)
    assert re.search(r"\d\d:\d\d alice: before you accepted", screen), screen
    assert re.search(r"\d\d:\d\d alice: thanks for accepting", screen), screen
    tmux.wait("bob", "● alice")
    # Invisible mode needs tor: on tcp the daemon's refusal is shown, and nothing changes.
    tmux.keys("bob", "Tab")  # from the input to the contacts (Esc then s would be Alt-s)
    tmux.keys("bob", "s")
    tmux.wait("bob", "[ ] Invisible: off")
    tmux.keys("bob", "Down")
    tmux.keys("bob", "Enter")
    screen = tmux.wait("bob", "Not changed: the tcp transport has no invisible mode")
    assert "invisible" not in screen.splitlines()[-1]
    assert (bob.home / "ui.stderr").read_text() == ""


DANGEROUS = [
    "\x1b]0;PWNED-TITLE\x07",
    "\x1b]2;PWNED-TITLE\x1b\\",
    "\x1b]52;c;cHduZWQ=\x07",
    "\x1b[31;1mRED\x1b[0m",
    "\x1b[2J\x1b[H",
    "\x1b[?25l",
    "\x1b[?1049l",
    "\x9b31mC1-RED",
    "\x9d0;PWNED-TITLE\x9c",
    "\x07\x08\x7f",
    "good\rEVIL",
    "\u202egnp.exe",
    "\u2066iso\u2069\u200b\u200d\ufeff",
    "Z" + "\u0301" * 300,
]


def test_dangerous_peer_text_is_shown_escaped_and_leaves_the_terminal_alone(
    tmux: Tmux, alice_and_bob: tuple[User, User]
) -> None:
    alice, bob = alice_and_bob
    evil_name = "\x1b]0;PWNED-TITLE\x07\u202eeve"
    alice.cli("contacts", "add", bob.address, "--name", "bob", "--tcp", bob.tcp_endpoint())
    bob.cli("contacts", "add", alice.address, "--name", evil_name, "--tcp", alice.tcp_endpoint())
    wait_for(lambda: all(c["online"] for c in alice.contacts() + bob.contacts()), 30, "link")
    # No colours of its own: any colour on the screen would be the peer's.
    tmux.start_ui("bob", bob, "--theme", "no-colour")
    tmux.wait("bob", "● ")
    title_before = tmux.show("bob", "#{pane_title}")
    for i, text in enumerate(DANGEROUS):
        alice.cli("send", "bob", f"m{i}:{text}")
    wait_for(
        lambda: len([m for m in bob.messages() if m["direction"] == "in"]) == len(DANGEROUS),
        30,
        "every message",
    )
    tmux.keys("bob", "End")
    screen = tmux.wait("bob", f"m{len(DANGEROUS) - 1}:")
    raw = tmux.screen("bob", escapes=True)
    # The escapes are visible text...
    assert "\\x1b]0;PWNED-TITLE\\x07\\u202eeve" in screen  # the name, in the list and title
    for shown in ("\\x1b[?1049l", "\\x9b31mC1-RED", "good\\x0dEVIL", "\\u202egnp.exe",
                  "\\u2066iso\\u2069\\u200b\\u200d\\ufeff", "[+296 combining marks]"):  # fmt: skip
        assert shown in screen, shown
    # ... and nothing reached the terminal: title, colours, cursor, screen mode unchanged.
    assert tmux.show("bob", "#{pane_title}") == title_before
    assert "PWNED" not in title_before
    assert not re.search(r"\x1b\[[0-9;]*(3[0-7]|9[0-7]|38;)", raw), "a colour was set"
    assert tmux.show("bob", "#{cursor_flag} #{alternate_on}") == "1 1"
    assert screen.splitlines()[0].startswith("onionmsg · me:")  # not cleared
    assert len(screen.splitlines()) == 24
    assert (bob.home / "ui.stderr").read_text() == ""
    tmux.keys("bob", "F1")
    tmux.wait("bob", "Help: every key")


def test_in_process_node_when_no_daemon_runs(tmux: Tmux, tmp_path: Path) -> None:
    carol = User("carol", tmp_path / "carol")
    carol.init("--no-passphrase")
    tmux.start_ui("carol", carol, "--transport", "tcp")
    screen = tmux.wait("carol", "tcp (no anonymity): listening")
    assert f"me: {carol.address[:10]}" in screen
    assert carol.cli("status", "--json").returncode == 0  # its control socket serves others
    tmux.keys("carol", "q")
    tmux.wait("carol", "Your node stops with it")
    tmux.keys("carol", "y")
    wait_for(lambda: carol.cli("status", check=False).returncode == 1, 15, "the node to stop")


def test_the_ui_follows_terminal_resizes(tmux: Tmux, alice_and_bob: tuple[User, User]) -> None:
    alice, bob = alice_and_bob
    alice.cli("contacts", "add", bob.address, "--name", "bob", "--tcp", bob.tcp_endpoint())
    tmux.start_ui("alice", alice)
    first = tmux.wait("alice", "bob")
    header = first.splitlines()[0].split()[0]  # the first word of the top bar
    for columns, rows in ((120, 40), (60, 16), (80, 24)):
        tmux.run("resize-window", "-t", "alice", "-x", str(columns), "-y", str(rows))

        def redrawn(columns: int = columns, rows: int = rows) -> str | None:
            screen = tmux.screen("alice")
            lines = screen.splitlines()
            fits = len(lines) == rows and all(len(line) <= columns for line in lines)
            # Redrawn, not just padded: the top bar on the first row, the input line and
            # the status bar on the last two, the contact list in between.
            drawn = fits and lines[0].startswith(header) and "bob" in screen
            return screen if drawn and ">" in lines[-2] and lines[-1].strip() else None

        wait_for(redrawn, 10, f"the UI redrawn at {columns}x{rows}")
    assert (alice.home / "ui.stderr").read_text() == ""
