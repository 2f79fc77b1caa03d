"""Every key of the console UI, in one table: the keys, what they do, and where they work.

Widgets ask ``is_command_key("GO_UP", key)``; the help screen and docs/hotkeys.md are
generated from this table (``python -m onionmsg.ui.keys --markdown > docs/hotkeys.md``),
so a key that is not here does not exist. Key names are urwid's ("ctrl c", "meta enter").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class KeyBinding:
    keys: tuple[str, ...]
    help: str
    context: str  # one of CONTEXTS


# Where a key is read, with the help screen's heading for it. A key of a context also
# reaches its parent (the lists pass on what they do not use), so the two must not share
# a key.
CONTEXTS: dict[str, str] = {
    "anywhere": "Anywhere (a letter or ? only when not typing)",
    "lists": "In the contact list and the messages (not while typing)",
    "contacts": "In the contact list",
    "messages": "In the messages",
    "input": "In the input line",
    "dialog": "In a dialog",
    "requests": "In the contact requests",
}
PARENT: dict[str, str | None] = {
    "anywhere": None,
    "lists": "anywhere",
    "contacts": "lists",
    "messages": "lists",
    "input": "anywhere",
    "dialog": "anywhere",
    "requests": "dialog",
}

KEY_BINDINGS: dict[str, KeyBinding] = {
    # anywhere
    "HELP": KeyBinding(("f1", "?"), "Show this help (every key)", "anywhere"),
    "QUIT": KeyBinding(("ctrl c", "q"), "Quit (asks first)", "anywhere"),
    "NEXT_PANE": KeyBinding(("tab",), "Next pane: contacts, messages, input", "anywhere"),
    "PREVIOUS_PANE": KeyBinding(("shift tab",), "Previous pane", "anywhere"),
    "BACK": KeyBinding(("esc",), "Back out: close a dialog; leave the input", "anywhere"),
    "NEXT_CONVERSATION": KeyBinding(("ctrl n",), "Next conversation", "anywhere"),
    "PREVIOUS_CONVERSATION": KeyBinding(("ctrl p",), "Previous conversation", "anywhere"),
    # lists
    "GO_UP": KeyBinding(("up", "k"), "Up", "lists"),
    "GO_DOWN": KeyBinding(("down", "j"), "Down", "lists"),
    "PAGE_UP": KeyBinding(("page up", "ctrl b"), "Page up", "lists"),
    "PAGE_DOWN": KeyBinding(("page down", "ctrl f"), "Page down", "lists"),
    "GO_TOP": KeyBinding(("home", "g"), "First", "lists"),
    "GO_BOTTOM": KeyBinding(("end", "G"), "Last", "lists"),
    "ADD_CONTACT": KeyBinding(("a",), "Add a contact by onion address", "lists"),
    "RENAME_CONTACT": KeyBinding(("r",), "Rename the selected contact", "lists"),
    "REMOVE_CONTACT": KeyBinding(("d",), "Remove the selected contact and its history", "lists"),
    "BLOCK_CONTACT": KeyBinding(
        ("b",), "Block the selected contact, or unblock it (asks first)", "lists"
    ),
    "VERIFY_CONTACT": KeyBinding(
        ("v",), "Verify the selected contact (compare safety numbers)", "lists"
    ),
    "MY_ADDRESS": KeyBinding(("i",), "Show my address, as text and as a QR code", "lists"),
    "REQUESTS": KeyBinding(
        ("R",), "Contact requests from people you have not added: accept, reject, block", "lists"
    ),
    "SETTINGS": KeyBinding(
        ("s",), "Settings: block unknown (refuse every request), invisible (tor)", "lists"
    ),
    "SEARCH": KeyBinding(("/",), "Search the message history", "lists"),
    "COVER": KeyBinding(("c",), "Change the cover-traffic profile", "lists"),
    "THEME": KeyBinding(("t",), "Next theme: dark, light, no colour", "lists"),
    # one pane
    "OPEN": KeyBinding(("enter", "right", "l"), "Open the conversation and type in it", "contacts"),
    "UNFOLD": KeyBinding(("enter", " "), "Unfold (or fold) a long message", "messages"),
    "SEND": KeyBinding(("enter",), "Send the message", "input"),
    "NEWLINE": KeyBinding(("meta enter",), "New line in the message", "input"),
    "CONFIRM": KeyBinding(("y",), "Yes (in a question); Enter presses a button", "dialog"),
    "CANCEL": KeyBinding(("n",), "No (in a question); Esc closes any dialog", "dialog"),
    "ACCEPT_REQUEST": KeyBinding(
        ("a",), "Accept the selected request: a contact (asks for a name)", "requests"
    ),
    "REJECT_REQUEST": KeyBinding(
        ("r",), "Reject it: gone, and that address is ignored for a week", "requests"
    ),
    "BLOCK_REQUEST": KeyBinding(
        ("b",), "Block it: that address is ignored for good (asks first)", "requests"
    ),
}


def is_command_key(command: str, key: str) -> bool:
    return key in KEY_BINDINGS[command].keys


def keys_for_command(command: str) -> tuple[str, ...]:
    return KEY_BINDINGS[command].keys


def command_for_key(key: str, context: str) -> str | None:
    """The command ``key`` means in ``context`` or, failing that, in its parents."""
    scope: str | None = context
    while scope is not None:
        for command, binding in KEY_BINDINGS.items():
            if binding.context == scope and key in binding.keys:
                return command
        scope = PARENT[scope]
    return None


def clashes() -> list[str]:
    """Keys bound twice where both bindings could be read: must be empty."""

    def scopes(context: str) -> list[str]:
        chain: list[str] = []
        scope: str | None = context
        while scope is not None:
            chain.append(scope)
            scope = PARENT[scope]
        return chain

    found = []
    items = list(KEY_BINDINGS.items())
    for i, (first, a) in enumerate(items):
        for second, b in items[i + 1 :]:
            related = a.context in scopes(b.context) or b.context in scopes(a.context)
            for key in set(a.keys) & set(b.keys) if related else ():
                found.append(f"{key!r}: {first} and {second}")
    return found


_SHOWN = {
    "esc": "Esc",
    "enter": "Enter",
    "tab": "Tab",
    "shift tab": "Shift-Tab",
    "up": "↑",
    "down": "↓",
    "left": "←",
    "right": "→",
    "page up": "PgUp",
    "page down": "PgDn",
    "home": "Home",
    "end": "End",
    " ": "Space",
    "delete": "Del",
}


def key_label(key: str) -> str:
    """How a key is written for people: Ctrl-C, Alt-Enter, F1, PgUp."""
    if key in _SHOWN:
        return _SHOWN[key]
    if key.startswith("ctrl "):
        return "Ctrl-" + key_label(key[5:]).upper()
    if key.startswith("meta "):
        return "Alt-" + key_label(key[5:])
    if len(key) > 1 and key[0] == "f" and key[1:].isdigit():
        return key.upper()
    return key


def help_sections() -> list[tuple[str, list[tuple[tuple[str, ...], str]]]]:
    """(heading, [(key labels, help)]) per context, in table order: for the help screen."""
    sections = []
    for context, heading in CONTEXTS.items():
        rows = [
            (tuple(key_label(k) for k in binding.keys), binding.help)
            for binding in KEY_BINDINGS.values()
            if binding.context == context
        ]
        sections.append((heading, rows))
    return sections


def markdown() -> str:
    lines = [
        "# Keys of the console UI",
        "",
        "<!-- Generated from onionmsg/ui/keys.py by"
        " `python -m onionmsg.ui.keys --markdown > docs/hotkeys.md`: edit the table there. -->",
        "",
        "`onionmsg` with no command opens the console UI. Press F1 or `?` in it for this list.",
    ]
    for heading, rows in help_sections():
        lines += ["", f"## {heading}", "", "| keys | action |", "|---|---|"]
        for keys, text in rows:
            shown = " ".join(f"`{k}`" for k in keys)
            lines.append(f"| {shown} | {text} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onionmsg.ui.keys", description=__doc__)
    parser.add_argument("--markdown", action="store_true", help="print docs/hotkeys.md")
    args = parser.parse_args(argv)
    problems = clashes()
    if problems:
        print("clashing keys: " + "; ".join(problems), file=sys.stderr)
        return 1
    if args.markdown:
        sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
