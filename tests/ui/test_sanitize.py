"""Untrusted text never reaches the terminal raw: property tests and the known attacks."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmsg.ui.sanitize import (
    ESCAPE_ATTR,
    MAX_COMBINING,
    fold,
    sanitize,
    sanitize_plain,
)

BIDI_AND_INVISIBLE = (
    [chr(c) for c in range(0x202A, 0x202F)]  # LRE RLE PDF LRO RLO
    + [chr(c) for c in range(0x2066, 0x206A)]  # LRI RLI FSI PDI
    + ["\u200e", "\u200f", "\u061c", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
)
FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}

# What a hostile peer would send: each must show up as visible text, nothing raw.
DANGEROUS = {
    "title": "\x1b]0;PWNED\x07",
    "title-st": "\x1b]2;PWNED\x1b\\",
    "clipboard": "\x1b]52;c;ZWNobyBwd25lZA==\x07",
    "colour": "\x1b[31;1mred\x1b[0m",
    "clear": "\x1b[2J\x1b[H",
    "cursor-hide": "\x1b[?25l",
    "alt-screen-off": "\x1b[?1049l",
    "c1-csi": "\x9b31m",
    "c1-osc": "\x9d0;PWNED\x9c",
    "bell-backspace": "\x07\x08\x08\x7f",
    "cr-overwrite": "good\rEVIL",
    "rlo": "\u202egnp.exe",
    "isolates": "\u2066abc\u2069\u2067",
    "zero-width": "a\u200bb\u200dc\ufeff",
    "zalgo": "Z" + "\u0301\u0316\u0317\u0336" * 100,
    "lone-mark": "\u0301",
    "line-separator": "one\u2028two\u2029",
}


@pytest.mark.parametrize("name", sorted(DANGEROUS))
@pytest.mark.parametrize("multiline", [False, True])
def test_dangerous_sequences_are_visible_escapes(name: str, multiline: bool) -> None:
    shown = sanitize_plain(DANGEROUS[name], multiline=multiline)
    assert all(ch.isprintable() or (multiline and ch == "\n") for ch in shown), shown
    assert "\x1b" not in shown and "\x9b" not in shown and "\u202e" not in shown


def test_escapes_carry_their_own_attribute_and_name_the_character() -> None:
    assert sanitize("a\x1b]0;x\x07b") == [
        "a",
        (ESCAPE_ATTR, "\\x1b"),
        "]0;x",
        (ESCAPE_ATTR, "\\x07"),
        "b",
    ]
    assert sanitize("\u202eab") == [(ESCAPE_ATTR, "\\u202e"), "ab"]
    assert sanitize("\U000e0041") == [(ESCAPE_ATTR, "\\U000e0041")]


def test_newlines_and_tabs_kept_only_in_messages() -> None:
    assert sanitize("a\r\nb\tc", multiline=True) == ["a\nb    c"]
    assert sanitize("a\nb\tc") == ["a", (ESCAPE_ATTR, "\\x0a"), "b", (ESCAPE_ATTR, "\\x09"), "c"]


def test_combining_runs_are_cut_and_counted() -> None:
    shown = sanitize("e" + "\u0301" * 1000 + "x")
    assert shown == ["e" + "\u0301" * MAX_COMBINING, (ESCAPE_ATTR, "[+996 combining marks]"), "x"]
    assert sanitize("Vi\u1ec7\u0323t") == ["Vi\u1ec7\u0323t"]  # real text is untouched


def test_ordinary_text_is_unchanged() -> None:
    for text in ("hello", "naïve café", "日本語のテキスト", "emoji 🙂👍🏽", "Ελληνικά", "עברית"):
        assert sanitize(text) == [text]


def test_exotic_spaces_become_spaces() -> None:
    assert sanitize("a\u00a0b\u3000c\u2009d") == ["a b c d"]


@given(st.text(alphabet=st.characters(codec=None), max_size=300), st.booleans())
def test_output_is_always_printable(text: str, multiline: bool) -> None:
    shown = sanitize_plain(text, multiline=multiline)
    for ch in shown:
        assert ch.isprintable() or (multiline and ch == "\n"), repr(ch)
        assert unicodedata.category(ch) not in FORBIDDEN_CATEGORIES or ch == "\n"
        assert ch not in BIDI_AND_INVISIBLE
    # No character sits on something that is not its own: a mark never starts the text.
    assert not shown or unicodedata.category(shown[0]) not in ("Mn", "Me")


@given(st.text(max_size=200), st.booleans())
def test_sanitizing_twice_changes_nothing(text: str, multiline: bool) -> None:
    once = sanitize_plain(text, multiline=multiline)
    assert sanitize_plain(once, multiline=multiline) == once


@given(st.lists(st.sampled_from([*BIDI_AND_INVISIBLE, "a", "\x1b", "\x9b", "\n"]), max_size=50))
def test_bidi_and_invisible_characters_never_pass(chars: list[str]) -> None:
    shown = sanitize_plain("".join(chars), multiline=True)
    assert not set(shown) & set([*BIDI_AND_INVISIBLE, "\x1b", "\x9b"])


def test_long_messages_fold() -> None:
    text = "\n".join(f"line {i}" for i in range(100))
    folded = fold(text, lines=12)
    assert folded.text.split("\n") == [f"line {i}" for i in range(12)]
    assert folded.hidden_lines == 88 and folded.hidden_chars == len(text) - len(folded.text)
    assert fold("short").hidden_chars == 0 and fold("short").text == "short"
    wall = fold("x" * 5000, chars=1500)
    assert len(wall.text) == 1500 and wall.hidden_lines == 0 and wall.hidden_chars == 3500
