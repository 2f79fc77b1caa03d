"""Themes as data: every display attribute the UI uses, per theme (dark, light, no colour).

A style is (foreground, background, monochrome): urwid colour names for 16-colour
terminals and the attributes a monochrome terminal gets instead. Nothing the UI shows
depends on colour alone (online is ● vs ○, delivery status is a word, escapes are
bracketed), so the no-colour theme loses nothing but looks.
"""

from __future__ import annotations

Style = tuple[str, str, str]

REQUIRED_STYLES = frozenset(
    {
        "header",
        "status",
        "status_alert",
        "pane_title",
        "pane_title_focus",
        "contact",
        "contact_focus",
        "unread",
        "verified",
        "offline",
        "time",
        "day",
        "me",
        "peer",
        "text",
        "msg_focus",
        "msg_status",
        "msg_queued",
        "fold",
        "escape",
        "input",
        "input_prompt",
        "dialog",
        "dialog_title",
        "button",
        "button_focus",
        "field",
        "error",
        "notice",
        "help_key",
        "qr",
        "divider",
    }
)

_DARK: dict[str, Style] = {
    "header": ("white,bold", "dark blue", "standout"),
    "status": ("light gray", "dark blue", "standout"),
    "status_alert": ("yellow,bold", "dark blue", "standout,bold"),
    "pane_title": ("light gray,bold", "default", "bold"),
    "pane_title_focus": ("white,bold", "dark cyan", "standout,bold"),
    "contact": ("light gray", "default", "default"),
    "contact_focus": ("black", "light gray", "standout"),
    "unread": ("yellow,bold", "default", "bold"),
    "verified": ("light green,bold", "default", "bold"),
    "offline": ("dark gray", "default", "default"),
    "time": ("dark gray", "default", "default"),
    "day": ("dark cyan", "default", "underline"),
    "me": ("light cyan,bold", "default", "bold"),
    "peer": ("light magenta,bold", "default", "bold"),
    "text": ("light gray", "default", "default"),
    "msg_focus": ("white", "dark gray", "standout"),
    "msg_status": ("dark green", "default", "default"),
    "msg_queued": ("yellow", "default", "underline"),
    "fold": ("dark cyan", "default", "underline"),
    "escape": ("light red", "default", "underline"),
    "input": ("white", "default", "default"),
    "input_prompt": ("light cyan,bold", "default", "bold"),
    "dialog": ("black", "light gray", "default"),
    "dialog_title": ("white,bold", "dark blue", "standout,bold"),
    "button": ("black", "light gray", "default"),
    "button_focus": ("white,bold", "dark blue", "standout"),
    "field": ("black", "white", "underline"),
    "error": ("light red,bold", "default", "bold"),
    "notice": ("yellow", "default", "bold"),
    "help_key": ("light cyan,bold", "default", "bold"),
    "qr": ("white", "black", "default"),
    "divider": ("dark gray", "default", "default"),
}

_LIGHT: dict[str, Style] = {
    **_DARK,
    "header": ("white,bold", "dark blue", "standout"),
    "pane_title": ("black,bold", "default", "bold"),
    "contact": ("black", "default", "default"),
    "contact_focus": ("white", "dark blue", "standout"),
    "unread": ("brown,bold", "default", "bold"),
    "verified": ("dark green,bold", "default", "bold"),
    "offline": ("dark gray", "default", "default"),
    "time": ("dark gray", "default", "default"),
    "day": ("dark blue", "default", "underline"),
    "me": ("dark blue,bold", "default", "bold"),
    "peer": ("dark magenta,bold", "default", "bold"),
    "text": ("black", "default", "default"),
    "msg_focus": ("black", "light gray", "standout"),
    "msg_status": ("dark green", "default", "default"),
    "msg_queued": ("brown", "default", "underline"),
    "fold": ("dark blue", "default", "underline"),
    "escape": ("dark red", "default", "underline"),
    "input": ("black", "default", "default"),
    "input_prompt": ("dark blue,bold", "default", "bold"),
    "error": ("dark red,bold", "default", "bold"),
    "notice": ("brown", "default", "bold"),
    "help_key": ("dark blue,bold", "default", "bold"),
    "divider": ("light gray", "default", "default"),
}

# No colour at all: the monochrome attributes, on a terminal of any colours (NO_COLOR).
_NO_COLOUR: dict[str, Style] = {
    name: (mono if mono != "default" else "default", "default", mono)
    for name, (_fg, _bg, mono) in _DARK.items()
}

THEMES: dict[str, dict[str, Style]] = {"dark": _DARK, "light": _LIGHT, "no-colour": _NO_COLOUR}
THEME_ORDER = tuple(THEMES)


def palette(theme: str) -> list[tuple[str, str, str, str]]:
    """The urwid palette of a theme."""
    return [(name, fg, bg, mono) for name, (fg, bg, mono) in sorted(THEMES[theme].items())]


def colours(theme: str) -> int:
    """How many colours the screen should use for a theme (1: monochrome)."""
    return 1 if theme == "no-colour" else 16


def next_theme(theme: str) -> str:
    return THEME_ORDER[(THEME_ORDER.index(theme) + 1) % len(THEME_ORDER)]
