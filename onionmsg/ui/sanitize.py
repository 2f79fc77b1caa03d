"""Safe rendering of untrusted text (peers' messages, contact names) in a terminal.

A peer chooses every character of a message. Control characters (C0, C1, DEL) would let
it drive the terminal: an ANSI/OSC escape can set the window title, the colours, the
clipboard or move the cursor. Unicode format characters (bidi overrides and isolates,
zero-width characters) can reorder or hide what is shown; a huge run of combining marks
draws over its neighbours. So only printable characters pass; everything else is shown
as a visible escape (``\\x1b``, ``\\u202e``) in its own display attribute, never raw.

The result is urwid text markup: plain strings and ``(ESCAPE_ATTR, text)`` pairs.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

ESCAPE_ATTR = "escape"
MAX_COMBINING = 4  # marks kept on one base character (Vietnamese needs 2, most text 0-1)
FOLD_LINES = 12  # a longer message is folded to this many lines until it is unfolded
FOLD_CHARS = 1500  # ... or to this many characters

Markup = list[str | tuple[str, str]]

_NONSPACING = frozenset({"Mn", "Me"})


def escape(char: str) -> str:
    """The visible form of one character: \\x1b, \\u202e, \\U000e0041."""
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def sanitize(text: str, *, multiline: bool = False) -> Markup:
    """Markup that shows ``text`` faithfully but can't drive or fool the terminal.

    ``multiline`` keeps newlines (CRLF becomes LF) and turns a tab into spaces; otherwise
    (names, one-line fields) they are escaped too.
    """
    if multiline:
        text = text.replace("\r\n", "\n")
    markup: Markup = []
    plain: list[str] = []
    escapes: list[str] = []
    marks = 0  # combining marks on the current base character
    dropped = 0  # ... beyond MAX_COMBINING, shown as one count
    has_base = False

    def flush_plain() -> None:
        if plain:
            markup.append("".join(plain))
            plain.clear()

    def flush_escapes() -> None:
        nonlocal dropped
        if dropped:
            escapes.append(f"[+{dropped} combining marks]")
            dropped = 0
        if escapes:
            markup.append((ESCAPE_ATTR, "".join(escapes)))
            escapes.clear()

    def emit_escape(shown: str) -> None:
        flush_plain()
        escapes.append(shown)

    def emit_plain(shown: str) -> None:
        flush_escapes()
        plain.append(shown)

    for char in text:
        category = unicodedata.category(char)
        if category in _NONSPACING and char.isprintable():
            if not has_base:
                emit_escape(escape(char))  # nothing of ours to sit on: it would join the UI
            elif marks < MAX_COMBINING:
                marks += 1
                emit_plain(char)
            else:
                flush_plain()
                dropped += 1
            continue
        if dropped:
            flush_escapes()
        marks = 0
        if multiline and char == "\n":
            emit_plain("\n")
            has_base = False
        elif multiline and char == "\t":
            emit_plain("    ")
            has_base = True
        elif category == "Zs":
            emit_plain(" ")  # every width of space looks like a space: no tricks, no escape
            has_base = True
        elif char.isprintable():
            emit_plain(char)
            has_base = True
        else:
            emit_escape(escape(char))
            has_base = False
    flush_plain()
    flush_escapes()
    return markup


def plain_text(markup: Markup) -> str:
    """The characters the markup puts on the screen, without attributes."""
    return "".join(part if isinstance(part, str) else part[1] for part in markup)


def sanitize_plain(text: str, *, multiline: bool = False) -> str:
    return plain_text(sanitize(text, multiline=multiline))


@dataclass(frozen=True)
class Folded:
    text: str  # what is shown
    hidden_lines: int  # lines not shown (0: nothing hidden)
    hidden_chars: int


def fold(text: str, lines: int = FOLD_LINES, chars: int = FOLD_CHARS) -> Folded:
    """The start of a very long message (to be unfolded on request)."""
    shown = text[:chars]
    kept = shown.split("\n")[:lines]
    shown = "\n".join(kept)
    if len(shown) == len(text):
        return Folded(text, 0, 0)
    return Folded(shown, text.count("\n") - shown.count("\n"), len(text) - len(shown))
