"""The UI as a user sees it: canvases rendered to text, keys pressed from the key table."""

from __future__ import annotations

import re

import pytest
from conftest import BOB, CAROL, ME, SIZE, FakeClient, message, press, screen, status, type_text
from urwid.testing import render_text

from onionmsg.ui import dialogs
from onionmsg.ui.app import App
from onionmsg.ui.keys import KEY_BINDINGS, keys_for_command
from onionmsg.ui.themes import REQUIRED_STYLES, THEMES


def test_main_screen_at_80x24(app: App) -> None:
    rows = render_text(app.view, SIZE)
    assert len(rows) == 24 and all(len(row) == 80 for row in rows)
    text = "\n".join(rows)
    assert rows[0].startswith(f"onionmsg · me: {ME[:10]}… · 1/2 online")
    assert "F1 help  Ctrl-C quit" in rows[0]
    # Contact list: online mark, name, verified mark; short address with the state in words.
    assert re.search(r"● bob +✓│", text) and f"  {BOB[:10]}… online" in text
    assert "○ carol" in text and f"{CAROL[:10]}… offline" in text
    # Conversation: title, day separators, times, senders, delivery status in words.
    assert "bob · online · verified ✓" in rows[1]
    assert "── Yesterday ──" in text and "── Today ──" in text
    assert re.search(r"09:00 me: Hi Bob! +delivered", text)
    assert "09:01 bob: Hi Alice, got it." in text
    assert re.search(r"09:02 me: Still there\? +queued", text)
    assert rows[-2].startswith("│>") or ">" in rows[-2]
    assert rows[-1].startswith(
        "tor: reachable │ requests: 0 │ cover: low 3.2 MB/day ~30 s, 2 queued"
    )


@pytest.mark.parametrize("size", [(80, 24), (60, 16), (120, 40), (40, 10), (200, 60)])
def test_renders_at_any_size(app: App, size: tuple[int, int]) -> None:
    rows = render_text(app.view, size)
    assert len(rows) == size[1] and {len(r) for r in rows} == {size[0]}
    app.do_my_address()
    assert len(render_text(app.view, size)) == size[1]


def test_status_bar_names_each_transport_when_several_run(app: App) -> None:
    several = {"state": "tor lost, i2p ready", "reachable": True, "transports": {}}
    app.set_state(app.state.with_status({**status(), "transport": "tor,i2p", "network": several}))
    assert screen(app).splitlines()[-1].startswith("tor lost, i2p ready │ requests: 0 │ cover")
    app.set_state(
        app.state.with_status(
            {**status(), "transport": "i2p", "network": {"state": "lost", "error": "no router"}}
        )
    )
    assert screen(app).splitlines()[-1].startswith("i2p: lost (no router) │ requests: 0 │ cover")


def test_status_bar_follows_tor_and_shows_pending_requests(app: App) -> None:
    app.on_event(
        {
            "event": "network",
            "state": "bootstrapping",
            "bootstrap_percent": 45,
            "bootstrap_phase": "Loading relay descriptors",
            "reachable": False,
        }
    )
    assert screen(app).splitlines()[-1].startswith("tor: bootstrap 45% Loading relay desc")
    app.on_event({"event": "network", "state": "publishing", "reachable": False})
    assert screen(app).splitlines()[-1].startswith("tor: publishing onion service")
    app.set_state(app.state.with_status({**status(), "requests": 3}))
    assert "requests: 3" in screen(app).splitlines()[-1]


def test_events_update_the_screen(app: App) -> None:
    app.on_event(message(4, BOB, "bob", "in", "new one", "received", "2026-03-03T10:00:00+00:00"))
    app.on_event(
        message(3, BOB, "bob", "out", "Still there?", "delivered", "2026-03-03T09:02:00+00:00")
    )
    text = screen(app)
    assert "10:00 bob: new one" in text
    assert re.search(r"Still there\? +delivered", text)
    app.on_event(message(5, CAROL, "carol", "in", "psst", "received", "2026-03-03T10:01:00+00:00"))
    assert re.search(r"○ carol +\(1\)", screen(app))  # unread, in another conversation
    app.on_event({"event": "contact", "name": "carol", "address": CAROL, "online": True})
    assert "● carol" in screen(app)
    app.on_event({"event": "deleted", "seq": 4})
    assert "new one" not in screen(app)
    app.on_event({"event": "contact_removed", "name": "carol", "address": CAROL})
    assert "carol" not in screen(app)


@pytest.mark.parametrize("key", keys_for_command("GO_DOWN"))
def test_down_keys_move_in_the_contact_list_and_the_conversation_follows(
    app: App, key: str
) -> None:
    app.view.focus_pane("contacts")
    press(app, key)
    assert app.state.selected == CAROL
    assert "carol · offline" in screen(app).splitlines()[1]
    press(app, keys_for_command("GO_UP")[keys_for_command("GO_DOWN").index(key)])
    assert app.state.selected == BOB


@pytest.mark.parametrize("command", ["NEXT_CONVERSATION", "PREVIOUS_CONVERSATION"])
def test_switch_conversation_from_anywhere(app: App, command: str) -> None:
    app.view.focus_pane("input")
    press(app, *keys_for_command(command))
    assert app.state.selected == CAROL  # two contacts: either way is the other one


@pytest.mark.parametrize("key", keys_for_command("OPEN"))
def test_open_puts_the_cursor_in_the_input(app: App, key: str) -> None:
    app.view.focus_pane("contacts")
    press(app, "down", key)
    assert app.view.pane() == "input" and app.state.selected == CAROL


@pytest.mark.parametrize("key", keys_for_command("NEXT_PANE"))
def test_tab_cycles_panes(app: App, key: str) -> None:
    app.view.focus_pane("contacts")
    seen = []
    for _ in range(3):
        press(app, key)
        seen.append(app.view.pane())
    assert seen == ["messages", "input", "contacts"]
    press(app, *keys_for_command("PREVIOUS_PANE"))
    assert app.view.pane() == "input"
    press(app, *keys_for_command("BACK"))
    assert app.view.pane() == "contacts"


@pytest.mark.parametrize("key", keys_for_command("SEND"))
def test_enter_sends_and_meta_enter_is_a_new_line(app: App, client: FakeClient, key: str) -> None:
    app.view.focus_pane("input")
    client.results["send"] = message(
        9, BOB, "bob", "out", "two\nlines", "sent", "2026-03-03T11:00:00+00:00"
    )
    type_text(app, "two")
    press(app, *keys_for_command("NEWLINE"))
    type_text(app, "lines")
    press(app, key)
    assert client.calls[-1] == ("send", {"contact": BOB, "text": "two\nlines"})
    assert app.view.input.edit_text == ""
    assert re.search(r"11:00 me: two +sent\n.*lines", screen(app))


def test_a_refused_message_stays_in_the_input_with_the_reason(app: App, client: FakeClient) -> None:
    client.errors["send"] = "a message has at most 32768 bytes of text"
    app.view.focus_pane("input")
    type_text(app, "hello")
    press(app, "enter")
    assert app.view.input.edit_text == "hello"
    assert "a message has at most 32768 bytes" in screen(app).splitlines()[-2]


@pytest.mark.parametrize("key", keys_for_command("HELP"))
def test_help_lists_every_key(app: App, key: str) -> None:
    app.view.focus_pane("contacts")
    press(app, key)
    assert isinstance(app.view.dialog, dialogs.Scrolling)
    text = "\n".join(render_text(app.view.dialog, (100, 120)))
    for binding in KEY_BINDINGS.values():
        assert binding.help in text
    press(app, *keys_for_command("BACK"))
    assert app.view.dialog is None


@pytest.mark.parametrize("key", keys_for_command("QUIT"))
def test_quit_asks_first(app: App, key: str) -> None:
    app.view.focus_pane("contacts")
    press(app, key)
    assert "Quit onionmsg? The daemon keeps running" in screen(app).replace("\n│", " ")
    press(app, *keys_for_command("CANCEL"))
    assert app.view.dialog is None and not app.finished.called
    press(app, key, *keys_for_command("CONFIRM"))
    assert app.finished.called


def test_add_contact_checks_the_address_first(app: App, client: FakeClient) -> None:
    app.view.focus_pane("contacts")
    press(app, *keys_for_command("ADD_CONTACT"))
    type_text(app, "notanaddress")
    press(app, "enter")
    assert "is not a v3 onion address" in screen(app)
    assert "contacts.add" not in client.methods()
    form = app.view.dialog
    assert isinstance(form, dialogs.Form)
    typo = ME[:10] + ("a" if ME[10] != "a" else "b") + ME[11:]
    form.edits[0].set_edit_text(typo)
    press(app, "enter")
    assert "has a wrong checksum: check it for a typo" in form.error.text
    form.edits[0].set_edit_text(ME)
    form.edits[1].set_edit_text("me")
    client.errors["contacts.add"] = "that is your own address"
    press(app, "enter")
    assert "that is your own address" in screen(app)  # the daemon's reason, in the dialog
    del client.errors["contacts.add"]
    client.results["contacts.add"] = {"name": "dave", "address": "d" * 56, "online": False}
    form.edits[1].set_edit_text("dave")
    press(app, "enter")
    assert client.calls[-1] == ("contacts.add", {"address": ME, "name": "dave", "tcp": None})
    assert app.view.dialog is None and app.state.selected == "d" * 56
    assert app.view.pane() == "input"


def test_rename_remove_verify(app: App, client: FakeClient) -> None:
    app.view.focus_pane("contacts")
    press(app, *keys_for_command("RENAME_CONTACT"))
    form = app.view.dialog
    assert isinstance(form, dialogs.Form) and form.values() == ["bob"]
    form.edits[0].set_edit_text("Robert")
    client.results["contacts.rename"] = {"name": "Robert", "address": BOB, "online": True}
    press(app, "enter")
    assert client.calls[-1] == ("contacts.rename", {"contact": BOB, "name": "Robert"})
    assert "● Robert" in screen(app) and "Robert: Hi Alice" in screen(app)

    client.results["contacts.verify"] = {
        "name": "Robert",
        "address": BOB,
        "verified": False,
        "safety_number": " ".join(f"{i:05d}" for i in range(12)),
    }
    press(app, *keys_for_command("VERIFY_CONTACT"))
    text = screen(app)
    assert "00000 00001 00002 00003" in text and "00008 00009 00010 00011" in text
    assert client.calls[-1] == ("contacts.verify", {"contact": BOB, "confirm": False})
    assert "They match: mark verified" in text

    press(app, *keys_for_command("BACK"), *keys_for_command("REMOVE_CONTACT"))
    assert "Remove Robert and delete your whole history" in screen(app).replace("\n    │", " ")
    client.results["contacts.remove"] = {"event": "contact_removed", "address": BOB}
    press(app, *keys_for_command("CONFIRM"))
    assert client.calls[-1] == ("contacts.remove", {"contact": BOB})
    assert "Robert" not in screen(app) and app.state.selected == CAROL


def test_search_opens_the_conversation_at_the_message(app: App, client: FakeClient) -> None:
    client.results["messages.search"] = [
        HIT := message(
            2, BOB, "bob", "in", "Hi Alice, got it.", "received", "2026-03-03T09:01:00+00:00"
        )
    ]
    app.select(CAROL)
    app.view.focus_pane("contacts")
    press(app, *keys_for_command("SEARCH"))
    type_text(app, "alice")
    press(app, "enter")
    assert client.calls[-1] == ("messages.search", {"query": "alice"})
    assert "2026-03-03 09:01 bob: Hi Alice, got it." in screen(app)
    press(app, "enter")
    assert app.view.dialog is None and app.state.selected == HIT["address"]
    assert app.view.pane() == "messages" and app.view.messages.focused_seq() == 2


def test_cover_profile_is_chosen_from_a_list_with_costs(app: App, client: FakeClient) -> None:
    app.view.focus_pane("contacts")
    press(app, *keys_for_command("COVER"))
    text = screen(app)
    assert "(•) low       3.2 MB/day, wait ~30 s" in text
    assert "( ) high      189.3 MB/day, wait ~500 ms" in text
    client.results["cover.set"] = {
        "profile": "high",
        "bytes_per_day": 189_000_000,
        "expected_latency_s": 0.5,
        "queued_cells": 0,
    }
    press(app, "down", "down", "enter")  # from the current profile (low) to 'high'
    assert client.calls[-1] == ("cover.set", {"profile": "high"})
    assert "cover: high 189.0 MB/day ~500 ms" in screen(app).splitlines()[-1]


def test_my_address_as_text_and_qr(app: App) -> None:
    app.view.focus_pane("contacts")
    press(app, *keys_for_command("MY_ADDRESS"))
    text = screen(app)
    assert f"{ME}.onion" in text
    assert sum("█" in row for row in text.splitlines()) >= 15  # the code, at 80x24


def test_qr_code_decodes_to_the_address() -> None:
    rows = dialogs.qr_rows(f"{ME}.onion".upper())
    # Back to modules (True = dark), two per character; compare with segno's own matrix.
    import segno

    expected = [list(r) for r in segno.make(f"{ME}.onion".upper(), error="L").matrix_iter(border=2)]
    light = {"█": (True, True), "▀": (True, False), "▄": (False, True), " ": (False, False)}
    decoded: list[list[bool]] = []
    for row in rows:
        top, bottom = zip(*(light[ch] for ch in row), strict=True)
        decoded += [[not m for m in top], [not m for m in bottom]]
    assert decoded[: len(expected)] == expected


def test_peer_text_cannot_reach_the_terminal(app: App) -> None:
    evil = "\x1b]0;PWNED\x07\x1b[31mred\u202egnp.exe\x9b2J"
    app.on_event({"event": "contact", "name": "\x1b[2Jmallory\u202e", "address": CAROL})
    app.on_event(
        message(
            7, CAROL, "\x1b[2Jmallory\u202e", "in", evil, "received", "2026-03-03T12:00:00+00:00"
        )
    )
    app.select(CAROL)
    text = screen(app, (200, 24))
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", text)
    assert "\\x1b]0;PWNED\\x07\\x1b[31mred\\u202egnp.exe\\x9b2J" in text
    assert "\\x1b[2Jmallory\\u202e" in text


@pytest.mark.parametrize("key", keys_for_command("UNFOLD"))
def test_long_messages_fold_and_unfold(app: App, key: str) -> None:
    long = "\n".join(f"line {i}" for i in range(40))
    app.on_event(message(8, BOB, "bob", "in", long, "received", "2026-03-03T12:00:00+00:00"))
    text = screen(app, (80, 60))
    assert (
        "line 11" in text and "line 12" not in text and "[… 28 more lines: Enter unfolds]" in text
    )
    app.view.focus_pane("messages")
    press(app, "end", key, size=(80, 60))
    text = screen(app, (80, 60))
    assert "line 39" in text and "[Enter folds]" in text


@pytest.mark.parametrize("theme", sorted(THEMES))
def test_every_theme_defines_every_style(theme: str) -> None:
    assert set(THEMES[theme]) == REQUIRED_STYLES


def test_theme_key_cycles_themes(app: App) -> None:
    app.view.focus_pane("contacts")
    press(app, *keys_for_command("THEME"))
    assert app.theme == "light"
    press(app, *keys_for_command("THEME"))
    assert app.theme == "no-colour"
