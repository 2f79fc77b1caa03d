"""The key table is the single source: no clashes, every command does something, docs current."""

from __future__ import annotations

from pathlib import Path

import pytest

from onionmsg.ui import keys
from onionmsg.ui.app import App
from onionmsg.ui.views import MainView

HOTKEYS = Path(__file__).parents[2] / "docs" / "hotkeys.md"
# Commands the view or a dialog handles itself (focus, dialogs, lists) rather than the app.
HANDLED_BY_VIEW = {
    "ACCEPT_REQUEST",  # the requests dialog passes these to App.answer_request
    "REJECT_REQUEST",
    "BLOCK_REQUEST",
    "NEXT_PANE",
    "PREVIOUS_PANE",
    "BACK",
    "OPEN",
    "UNFOLD",
    "SEND",
    "NEWLINE",
    "GO_UP",
    "GO_DOWN",
    "PAGE_UP",
    "PAGE_DOWN",
    "GO_TOP",
    "GO_BOTTOM",
    "CONFIRM",
    "CANCEL",
}


def test_no_key_means_two_things_in_one_place() -> None:
    assert keys.clashes() == []


@pytest.mark.parametrize("command", sorted(set(keys.KEY_BINDINGS) - HANDLED_BY_VIEW))
def test_every_app_command_has_a_handler(command: str) -> None:
    assert callable(getattr(App, f"do_{command.lower()}", None)), command


def test_commands_handled_by_the_view_exist() -> None:
    assert set(keys.KEY_BINDINGS) >= HANDLED_BY_VIEW
    assert MainView.keypress is not None


def test_command_lookup_falls_back_to_parent_contexts() -> None:
    assert keys.command_for_key("enter", "contacts") == "OPEN"
    assert keys.command_for_key("enter", "messages") == "UNFOLD"
    assert keys.command_for_key("enter", "input") == "SEND"
    assert keys.command_for_key("j", "contacts") == "GO_DOWN"
    assert keys.command_for_key("f1", "input") == "HELP"
    assert keys.command_for_key("j", "input") is None  # typing, not moving


@pytest.mark.parametrize(
    ("key", "label"),
    [
        ("ctrl c", "Ctrl-C"),
        ("meta enter", "Alt-Enter"),
        ("f1", "F1"),
        ("page up", "PgUp"),
        ("G", "G"),
        (" ", "Space"),
    ],
)
def test_key_labels(key: str, label: str) -> None:
    assert keys.key_label(key) == label


def test_docs_hotkeys_is_generated_from_the_table() -> None:
    assert HOTKEYS.read_text() == keys.markdown(), (
        "docs/hotkeys.md is stale: run `python -m onionmsg.ui.keys --markdown > docs/hotkeys.md`"
    )
    for binding in keys.KEY_BINDINGS.values():
        assert binding.help in HOTKEYS.read_text()
