"""Who may reach me, in the UI: contact requests, blocking, block-unknown, invisible, PoW.

Rendered to text and driven by the keys of the key table, as the user sees and types them.
"""

from __future__ import annotations

import re
from datetime import UTC, date

import pytest
from conftest import (
    BOB,
    CAROL,
    DAVE,
    ERIN,
    FakeClient,
    contact,
    press,
    request,
    screen,
    status,
    type_text,
)
from twisted.internet.defer import ensureDeferred
from urwid.testing import render_text

from onionmsg.ui import dialogs
from onionmsg.ui.app import App
from onionmsg.ui.keys import keys_for_command

DAVE_NOTE = "dave from the \x1b[31mconference\u202e"
REQUESTS = [
    request(7, DAVE, DAVE_NOTE, "2026-03-03T08:00:00+00:00"),
    request(9, ERIN, "", "2026-03-03T08:05:00+00:00"),
]


def started(client: FakeClient) -> App:
    app = App(client, tz=UTC)
    app.view.messages.today = lambda: date(2026, 3, 3)
    assert ensureDeferred(app.start()).called
    app.view.focus_pane("contacts")
    return app


@pytest.fixture
def asked(client: FakeClient) -> App:
    """The app with two pending requests (one note with escapes, one without a note)."""
    client.requests = list(REQUESTS)
    client.status = {**status(), "requests": 2}
    return started(client)


def status_bar(app: App) -> str:
    return screen(app, (120, 24)).splitlines()[-1]


def no_dialog(app: App) -> bool:
    return app.view.dialog is None  # (a function: mypy would keep an earlier isinstance)


def dialog_text(app: App) -> str:
    """The open dialog alone, its lines joined so that wrapped text reads as one."""
    dialog = app.view.dialog
    assert dialog is not None
    flow = "flow" in dialog.sizing()
    rows = render_text(dialog, (90,) if flow else (90, 30))
    return " ".join(" ".join(row.strip("│ ").split()) for row in rows)


# -- status bar -----------------------------------------------------------------------------


def test_status_bar_shows_pow_on_tor_invisible_and_block_unknown(client: FakeClient) -> None:
    client.status = {**status(pow="on"), "requests": 2}
    app = started(client)
    assert status_bar(app).startswith("tor: reachable, PoW on │ requests: 0 │ cover: low")
    app.set_state(app.state.with_status({**status(pow="unsupported"), "requests": 1}))
    assert status_bar(app).startswith("tor: reachable, PoW unsupported │ requests: 1 │")
    # Invisible: the identity onion (and so its PoW) is withdrawn; new requests are refused.
    app.set_state(
        app.state.with_status(
            {
                **status(pow="on", state="hidden", reachable=False),
                "invisible": True,
                "block_unknown": True,
            }
        )
    )
    assert status_bar(app).startswith(
        "tor: hidden │ invisible │ requests: 0 (unknown blocked) │ cover: low"
    )
    assert "PoW" not in status_bar(app)


def test_no_pow_on_tcp(client: FakeClient) -> None:
    client.status = {**status(pow="on"), "transport": "tcp"}
    app = started(client)
    assert "PoW" not in status_bar(app)
    assert status_bar(app).startswith("tcp (no anonymity): reachable │ requests: 0 │")


def test_a_daemon_without_requests_shows_none(client: FakeClient) -> None:
    client.status = {k: v for k, v in status().items() if k != "requests"}
    client.errors["requests.list"] = "unknown method 'requests.list'"
    app = started(client)
    assert "requests" not in status_bar(app)
    assert app.state.notice == ""  # the refusal is not the user's business


# -- the contact list -----------------------------------------------------------------------


def test_contact_list_marks_blocked_and_unanswered_contacts(client: FakeClient) -> None:
    client.contacts = [
        {**contact("bob", BOB, False), "blocked": True},
        {**contact("carol", CAROL, False), "accepted": False},
    ]
    app = started(client)
    text = screen(app)
    assert re.search(r"⊘ bob +│", text)
    assert re.search(rf"  {BOB[:10]}… offline +│.*\n  blocked +│", text)
    assert re.search(
        rf"○ carol +│.*\n  {CAROL[:10]}… offline +│.*\n  request not answered +│", text
    )
    assert "bob · offline · blocked (b unblocks)" in text.splitlines()[1]
    app.select(CAROL)
    assert "carol · offline · request not answered: messages wait" in screen(app, (120, 24))
    # Accepted: the mark goes.
    app.on_event({"event": "contact", **contact("carol", CAROL, True), "accepted": True})
    assert "request not answered" not in screen(app, (120, 24))


@pytest.mark.parametrize("key", keys_for_command("BLOCK_CONTACT"))
def test_block_and_unblock_the_selected_contact_ask_first(
    app: App, client: FakeClient, key: str
) -> None:
    app.view.focus_pane("contacts")
    press(app, key)
    assert isinstance(app.view.dialog, dialogs.Confirm)
    assert "Block bob? The link closes and nothing goes in or out" in dialog_text(app)
    press(app, *keys_for_command("CANCEL"))
    assert no_dialog(app) and "contacts.block" not in client.methods()

    client.results["contacts.block"] = {
        **contact("bob", BOB, False, verified=True),
        "blocked": True,
    }
    press(app, key, *keys_for_command("CONFIRM"))
    assert client.calls[-1] == ("contacts.block", {"contact": BOB})
    text = screen(app)
    assert re.search(r"⊘ bob +✓│", text) and "\n  blocked " in text
    assert "bob is blocked." in text.splitlines()[-2]

    client.results["contacts.unblock"] = contact("bob", BOB, False, verified=True)
    press(app, key)
    assert "Unblock bob? Their links are accepted again" in dialog_text(app)
    press(app, *keys_for_command("CONFIRM"))
    assert client.calls[-1] == ("contacts.unblock", {"contact": BOB})
    assert "⊘" not in screen(app) and "blocked" not in screen(app).replace("unblocked", "")


# -- the requests dialog --------------------------------------------------------------------


@pytest.mark.parametrize("key", keys_for_command("REQUESTS"))
def test_requests_are_listed_with_time_short_address_and_escaped_note(
    asked: App, client: FakeClient, key: str
) -> None:
    assert "requests: 2" in status_bar(asked)
    press(asked, key)
    assert client.methods()[-1] == "requests.list"  # read afresh on opening
    assert isinstance(asked.view.dialog, dialogs.RequestsDialog)
    text = screen(asked, (100, 30))
    assert f"2026-03-03 08:00  {DAVE[:10]}…  dave from the \\x1b[31mconference\\u202e" in text
    assert f"2026-03-03 08:05  {ERIN[:10]}…  (no note)" in text
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", text)
    assert "a accept · r reject · b block" in text and "2 pending" in text


def test_requests_dialog_without_requests(app: App) -> None:
    app.view.focus_pane("contacts")
    press(app, *keys_for_command("REQUESTS"))
    assert "No pending requests." in screen(app)


def test_a_new_request_appears_live(asked: App) -> None:
    press(asked, *keys_for_command("REQUESTS"))
    asked.on_event({"event": "request", **request(12, CAROL, "it's carol", "2026-03-03T09:00:00Z")})
    text = screen(asked, (100, 30))
    assert f"2026-03-03 09:00  {CAROL[:10]}…  it's carol" in text and "3 pending" in text
    assert "requests: 3" in text.splitlines()[-1]
    # The same stranger again, with a new note: still one request.
    asked.on_event({"event": "request", **request(12, CAROL, "carol again", "2026-03-03T09:00Z")})
    text = screen(asked, (100, 30))
    assert "carol again" in text and "it's carol" not in text and "3 pending" in text
    # Also with no dialog open: the count follows.
    press(asked, *keys_for_command("BACK"))
    asked.on_event({"event": "request", **request(13, BOB, "", "2026-03-03T09:01:00Z")})
    assert "requests: 4" in status_bar(asked)


@pytest.mark.parametrize("key", keys_for_command("ACCEPT_REQUEST"))
def test_accept_asks_for_a_name_and_opens_the_new_conversation(
    asked: App, client: FakeClient, key: str
) -> None:
    press(asked, *keys_for_command("REQUESTS"), key)  # the first request: dave's
    form = asked.view.dialog
    assert isinstance(form, dialogs.Form) and form.title == "Accept the request"
    text = dialog_text(asked)
    assert f"{DAVE}.onion" in text and "Their note: dave from the \\x1b[31mconference" in text
    client.errors["requests.accept"] = "no contact request 7"
    type_text(asked, "Dave")
    press(asked, "enter")
    assert "no contact request 7" in dialog_text(asked)  # the daemon's reason, in the form
    del client.errors["requests.accept"]
    client.results["requests.accept"] = {**contact("Dave", DAVE, False), "accepted": True}
    press(asked, "enter")
    assert client.calls[-1] == ("requests.accept", {"id": 7, "name": "Dave"})
    assert asked.view.dialog is None
    assert asked.state.selected == DAVE and asked.view.pane() == "input"
    text = screen(asked)
    assert "○ Dave" in text and "Dave is a contact now." in text.splitlines()[-2]
    assert "requests: 1" in text.splitlines()[-1]


def test_accept_without_a_name_sends_none(asked: App, client: FakeClient) -> None:
    client.results["requests.accept"] = contact(DAVE[:16], DAVE, False)
    press(asked, *keys_for_command("REQUESTS"), *keys_for_command("ACCEPT_REQUEST"), "enter")
    assert client.calls[-1] == ("requests.accept", {"id": 7, "name": None})


def test_esc_in_the_accept_form_accepts_nothing(asked: App, client: FakeClient) -> None:
    press(asked, *keys_for_command("REQUESTS"), *keys_for_command("ACCEPT_REQUEST"))
    press(asked, *keys_for_command("BACK"))
    assert asked.view.dialog is None and "requests.accept" not in client.methods()


@pytest.mark.parametrize("key", keys_for_command("REJECT_REQUEST"))
def test_reject_drops_the_request_at_once(asked: App, client: FakeClient, key: str) -> None:
    press(asked, *keys_for_command("REQUESTS"), "down", key)  # erin's
    assert client.calls[-1] == ("requests.reject", {"id": 9})
    text = dialog_text(asked)
    assert ERIN[:10] not in text and DAVE[:10] in text and "1 pending" in text
    assert f"Rejected {ERIN[:10]}…: ignored for a week." in screen(asked, (100, 30))
    # The cursor is on what took its place; reject it too and the list is empty.
    press(asked, key)
    assert client.calls[-1] == ("requests.reject", {"id": 7})
    assert "No pending requests." in dialog_text(asked) and "requests: 0" in status_bar(asked)
    press(asked, key)  # nothing selected: nothing happens
    assert client.methods().count("requests.reject") == 2


@pytest.mark.parametrize("key", keys_for_command("BLOCK_REQUEST"))
def test_block_a_request_asks_first(asked: App, client: FakeClient, key: str) -> None:
    press(asked, *keys_for_command("REQUESTS"), key)
    assert f"Block {DAVE[:10]}…? Their requests are dropped unseen" in dialog_text(asked)
    press(asked, *keys_for_command("CANCEL"))
    assert isinstance(asked.view.dialog, dialogs.RequestsDialog)  # back in the list
    assert "requests.block" not in client.methods()
    press(asked, key, *keys_for_command("CONFIRM"))
    assert client.calls[-1] == ("requests.block", {"id": 7})
    assert isinstance(asked.view.dialog, dialogs.RequestsDialog)
    assert DAVE[:10] not in dialog_text(asked) and "1 pending" in dialog_text(asked)


def test_requests_answered_elsewhere_leave_on_the_next_poll(asked: App, client: FakeClient) -> None:
    press(asked, *keys_for_command("REQUESTS"))
    client.requests = [REQUESTS[1]]  # dave's accepted with the CLI
    client.status = {**status(), "requests": 1}
    asked.poll()
    assert client.methods()[-2:] == ["status", "requests.list"]
    assert DAVE[:10] not in dialog_text(asked) and "1 pending" in dialog_text(asked)
    asked.poll()
    assert client.methods()[-1] == "status"  # in step: nothing more to read


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", keys_for_command("SETTINGS"))
def test_block_unknown_toggles(app: App, client: FakeClient, key: str) -> None:
    app.view.focus_pane("contacts")
    press(app, key)
    text = dialog_text(app)
    assert "[ ] Block unknown: off" in text and "[ ] Invisible: off" in text
    client.results["settings.block_unknown"] = {"block_unknown": True}
    press(app, "enter")
    assert client.calls[-1] == ("settings.block_unknown", {"on": True})
    assert "[x] Block unknown: on" in dialog_text(app)
    assert "requests: 0 (unknown blocked)" in status_bar(app)
    client.results["settings.block_unknown"] = {"block_unknown": False}
    press(app, "enter")
    assert client.calls[-1] == ("settings.block_unknown", {"on": False})
    assert "[ ] Block unknown: off" in dialog_text(app)
    assert "unknown blocked" not in status_bar(app)


def test_invisible_toggles_and_shows_the_daemons_refusal(app: App, client: FakeClient) -> None:
    client.status = {**status(pow="on")}
    app.poll()
    client.results["settings.invisible"] = {"invisible": True}
    app.view.focus_pane("contacts")
    press(app, *keys_for_command("SETTINGS"), "down", "enter")
    assert client.calls[-1] == ("settings.invisible", {"on": True})
    assert "[x] Invisible: on" in dialog_text(app)
    assert "│ invisible │" in status_bar(app)
    assert "PoW" not in status_bar(app)
    client.results["settings.invisible"] = {"invisible": False}
    press(app, "enter")
    assert client.calls[-1] == ("settings.invisible", {"on": False})
    assert "invisible" not in status_bar(app) and "PoW on" in status_bar(app)
    del client.results["settings.invisible"]

    client.errors["settings.invisible"] = "the tcp transport has no invisible mode"
    press(app, "enter")
    assert "Not changed: the tcp transport has no invisible mode" in dialog_text(app)
    assert "[ ] Invisible: off" in dialog_text(app) and "invisible" not in status_bar(app)
