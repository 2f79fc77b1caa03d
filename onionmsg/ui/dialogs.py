"""Dialogs over the main screen: questions, forms, the help screen, the address QR code.

A dialog gets its data and callbacks from the app and never calls the daemon itself.
Esc closes any dialog (the main view handles it); Enter presses the focused button.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import tzinfo
from typing import Any

import segno
import urwid

from onionmsg.crypto.identity import parse_onion_address
from onionmsg.errors import AddressError
from onionmsg.ui.keys import (
    command_for_key,
    help_sections,
    is_command_key,
    key_label,
    keys_for_command,
)
from onionmsg.ui.model import MessageView, RequestView, State, Status
from onionmsg.ui.sanitize import sanitize, sanitize_plain
from onionmsg.ui.views import human_bytes, human_seconds, short_address, styled

QR_BORDER = 2  # modules of quiet zone; scanners manage with two


class Dialog(urwid.WidgetWrap[urwid.Widget]):
    """A framed box with a title; ``height`` None sizes it to its content."""

    height: int | None = None

    def __init__(self, title: str, body: urwid.Widget) -> None:
        self.title = title
        frame = urwid.LineBox(body, title=f"{title} (Esc closes)", title_attr="dialog_title")
        super().__init__(urwid.AttrMap(frame, "dialog"))


def _button(label: str, on_press: Callable[[], None]) -> Any:
    button = urwid.Button(label, on_press=lambda _button: on_press())
    return urwid.AttrMap(button, "button", "button_focus")


def _buttons(*buttons: tuple[str, Callable[[], None]]) -> urwid.Widget:
    widgets = [_button(label, action) for label, action in buttons]
    width = max(len(label) for label, _ in buttons) + 4
    return urwid.GridFlow(widgets, width, 2, 0, "center")


class Confirm(Dialog):
    """A yes/no question; y and n answer it too."""

    def __init__(
        self, title: str, question: str, on_yes: Callable[[], None], on_no: Callable[[], None]
    ) -> None:
        self.on_yes, self.on_no = on_yes, on_no
        body = urwid.Pile(
            [
                urwid.Text(question),
                urwid.Divider(),
                _buttons(("Yes (y)", on_yes), ("No (n)", on_no)),
            ]
        )
        super().__init__(title, body)

    def keypress(self, size: tuple[()] | tuple[int] | tuple[int, int], key: str) -> str | None:
        if is_command_key("CONFIRM", key):
            self.on_yes()
            return None
        if is_command_key("CANCEL", key):
            self.on_no()
            return None
        return super().keypress(size, key)


class Info(Dialog):
    def __init__(
        self,
        title: str,
        body: list[urwid.Widget],
        on_close: Callable[[], None],
        extra: Sequence[tuple[str, Callable[[], None]]] = (),
        focus: int | None = None,
    ) -> None:
        buttons = _buttons(*extra, ("Close", on_close))
        focus_item = len(body) + 1 if focus is None else focus
        pile = urwid.Pile([*body, urwid.Divider(), buttons], focus_item=focus_item)
        super().__init__(title, pile)


class Form(Dialog):
    """Labelled one-line fields, an error line, OK and Cancel."""

    def __init__(
        self,
        title: str,
        fields: Sequence[tuple[str, str]],
        hint: str,
        on_submit: Callable[[list[str]], None],
        on_cancel: Callable[[], None],
    ) -> None:
        self.edits = [urwid.Edit("", initial) for _label, initial in fields]
        self.error = urwid.Text("")
        self._on_submit = on_submit
        rows: list[urwid.Widget] = [urwid.Text(hint), urwid.Divider()] if hint else []
        width = max(len(label) for label, _ in fields) + 2
        for (label, _initial), edit in zip(fields, self.edits, strict=True):
            rows.append(
                urwid.Columns([(width, urwid.Text(label + ":")), urwid.AttrMap(edit, "field")])
            )
        rows += [
            urwid.AttrMap(self.error, "error"),
            _buttons(("OK", self.submit), ("Cancel", on_cancel)),
        ]
        self.pile = urwid.Pile(rows, focus_item=len(rows) - len(fields) - 2)
        super().__init__(title, self.pile)

    def values(self) -> list[str]:
        return [edit.edit_text for edit in self.edits]

    def submit(self) -> None:
        self._on_submit(self.values())

    def show_error(self, text: str) -> None:
        self.error.set_text(text)

    def keypress(self, size: tuple[()] | tuple[int] | tuple[int, int], key: str) -> str | None:
        focus = self.pile.focus
        in_field = isinstance(focus, urwid.Columns)
        if key == "enter" and in_field:
            self.submit()
            return None
        if key == "tab" and in_field:  # next field, then the buttons
            position = self.pile.focus_position
            self.pile.focus_position = position + 1
            return None
        return super().keypress(size, key)


def add_contact_form(
    tcp: bool,
    on_submit: Callable[[str, str | None, str | None], None],
    on_cancel: Callable[[], None],
) -> Form:
    """The address is checked here first, so a typo gets its clear error at once."""
    fields = [("Address", ""), ("Name", "")] + ([("tcp host:port", "")] if tcp else [])
    form: Form

    def submit(values: list[str]) -> None:
        address = values[0].strip()
        try:
            parse_onion_address(address)
        except AddressError as error:
            form.show_error(str(error))
            return
        name = values[1].strip() or None
        endpoint = values[2].strip() or None if tcp else None
        on_submit(address, name, endpoint)

    form = Form(
        "Add a contact",
        fields,
        "Their onion address (56 letters and digits, .onion optional), and a name "
        "of your choosing.",
        submit,
        on_cancel,
    )
    return form


def _bind(function: Callable[[str], None], value: str) -> Callable[[], None]:
    return lambda: function(value)


def qr_rows(text: str) -> list[str]:
    """A QR code of ``text`` in half blocks: each character is two modules, one above the
    other, the glyph drawing the *light* modules (shown light on dark by the qr style)."""
    matrix = [list(row) for row in segno.make(text, error="L").matrix_iter(border=QR_BORDER)]
    if len(matrix) % 2:
        matrix.append([True] * len(matrix[0]))  # an odd last row: pad with dark
    glyphs = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}
    rows = []
    for top, bottom in zip(matrix[::2], matrix[1::2], strict=True):
        rows.append("".join(glyphs[(not a, not b)] for a, b in zip(top, bottom, strict=True)))
    return rows


def address_dialog(address: str, on_close: Callable[[], None]) -> Info:
    # Upper case fits QR's alphanumeric mode (a smaller code); base32 is case-free.
    code = "\n".join(qr_rows(f"{address}.onion".upper()))
    body: list[urwid.Widget] = [
        urwid.Text(f"{address}.onion", align="center"),
        urwid.Padding(urwid.AttrMap(urwid.Text(code, wrap="clip"), "qr"), "center", "pack"),
    ]
    return Info("My address", body, on_close)


def verify_dialog(
    name: str,
    safety_number: str,
    verified: bool,
    on_confirm: Callable[[], None],
    on_close: Callable[[], None],
) -> Info:
    groups = safety_number.split()
    lines = [" ".join(groups[i : i + 4]) for i in range(0, len(groups), 4)]
    shown = styled(sanitize(name), "peer")
    body: list[urwid.Widget] = [
        urwid.Text(["Safety number for you and ", *shown, ":"]),
        urwid.Divider(),
        urwid.Text(("help_key", "\n".join(lines)), align="center"),
        urwid.Divider(),
        urwid.Text(
            "Compare it with the number your contact sees, in person or over a channel "
            "you trust. If they are the same, nobody stands between you."
        ),
    ]
    if verified:
        body.append(urwid.Text(("verified", "Already marked verified ✓")))
        return Info("Verify", body, on_close)
    return Info("Verify", body, on_close, extra=[("They match: mark verified", on_confirm)])


class Scrolling(Dialog):
    """A dialog whose body is a long list (help, search results)."""

    height = -90  # percent of the screen

    def __init__(self, title: str, rows: list[urwid.Widget]) -> None:
        self.walker: urwid.SimpleFocusListWalker[Any] = urwid.SimpleFocusListWalker(rows)
        super().__init__(title, urwid.ListBox(self.walker))


def help_dialog() -> Scrolling:
    rows: list[urwid.Widget] = []
    for heading, bindings in help_sections():
        rows.append(urwid.Text(("pane_title", heading)))
        for keys, text in bindings:
            rows.append(
                urwid.Columns(
                    [(22, urwid.Text(("help_key", "  " + "  ".join(keys)))), urwid.Text(text)]
                )
            )
        rows.append(urwid.Divider())
    rows.append(
        urwid.Text(
            "Status bar: tor's progress (reachable once your onion service is published) "
            "and whether its proof-of-work defence (PoW) is on, 'invisible' when your "
            "address is withdrawn, pending contact requests (R shows them), and the "
            "cover-traffic profile with its cost and the cells waiting to leave. In the "
            "contact list ⊘ marks a blocked contact. A message shows queued (stored, waiting for a "
            "link), sent (on its way) or delivered (the contact has it). Text a peer "
            "chose is shown with visible escapes such as \\x1b for characters that could "
            "act on the terminal."
        )
    )
    return Scrolling("Help: every key", rows)


class ResultItem(urwid.WidgetWrap[urwid.Widget]):
    def __init__(self, message: MessageView, on_choose: Callable[[MessageView], None]) -> None:
        self.message, self.on_choose = message, on_choose
        when = f"{message.time:%Y-%m-%d %H:%M}" if message.time else ""
        who = "me" if message.direction == "out" else message.contact
        first_line = message.text.split("\n", 1)[0][:200]
        text = urwid.Text(
            [("time", when + " "), *styled(sanitize(who), "peer"), ": ", *sanitize(first_line)],
            wrap="ellipsis",
        )
        super().__init__(urwid.AttrMap(text, "dialog", "button_focus"))

    def selectable(self) -> bool:
        return True

    def keypress(self, size: tuple[()] | tuple[int] | tuple[int, int], key: str) -> str | None:
        if key == "enter":
            self.on_choose(self.message)
            return None
        return key


def search_results(
    query: str, messages: list[MessageView], on_choose: Callable[[MessageView], None]
) -> Scrolling:
    rows: list[urwid.Widget] = [ResultItem(m, on_choose) for m in reversed(messages)]
    if not rows:
        rows = [urwid.Text("Nothing found.")]
    title = f"{len(messages)} found: Enter opens"
    dialog = Scrolling(title, rows)
    dialog.title = f"Search: {query}"
    return dialog


def cover_dialog(
    profiles: Sequence[Any],
    current: str,
    on_choose: Callable[[str], None],
    on_close: Callable[[], None],
) -> Info:
    """One button per profile, with what it costs and what it adds to each message's wait."""
    body: list[urwid.Widget] = [
        urwid.Text(
            "Cover traffic sends cells on a schedule whether you chat or not, so an "
            "observer can't tell when you do. More cells: shorter waits, more bandwidth."
        ),
        urwid.Divider(),
    ]
    focus = None
    for profile in profiles:
        if profile.name == current:
            focus = len(body)
        mark = "(•)" if profile.name == current else "( )"
        if profile.name == "off":
            cost = "no cover, no wait"
        else:
            cost = (
                f"{human_bytes(round(profile.bytes_per_day()))}/day, "
                f"wait ~{human_seconds(profile.expected_latency())}"
            )
        label = f"{mark} {profile.name:<9} {cost}"
        body.append(_button(label, _bind(on_choose, profile.name)))
    return Info("Cover traffic", body, on_close, focus=focus)


# -- who may reach me: contact requests, settings ----------------------------------------------


def _keys_hint(*commands: tuple[str, str]) -> str:
    """'a accept · r reject' from the key table, so the hint can't disagree with it."""
    return " · ".join(
        f"{key_label(keys_for_command(command)[0])} {word}" for command, word in commands
    )


class RequestItem(urwid.WidgetWrap[urwid.Widget]):
    """One request: when, whose address (short), their note; all of it the stranger's."""

    def __init__(self, request: RequestView, tz: tzinfo | None) -> None:
        self.request = request
        when = f"{request.time.astimezone(tz):%Y-%m-%d %H:%M}" if request.time else "?"
        note = sanitize(request.message) or [("offline", "(no note)")]
        row = urwid.Columns(
            [
                (17, urwid.Text(("time", when))),
                (12, urwid.Text(styled(sanitize(short_address(request.address)), "peer"))),
                urwid.Text(note),
            ],
            dividechars=1,
        )
        super().__init__(urwid.AttrMap(row, "dialog", "button_focus"))

    def selectable(self) -> bool:
        return True

    def keypress(self, size: tuple[()] | tuple[int] | tuple[int, int], key: str) -> str | None:
        return key


class RequestsDialog(Dialog):
    """The pending contact requests, redrawn as requests arrive (``follow``); the keys of
    the "requests" context act on the selected one through the app's callbacks."""

    def __init__(
        self,
        state: State,
        tz: tzinfo | None,
        on_answer: Callable[[str, RequestView], None],
    ) -> None:
        self.tz, self.on_answer = tz, on_answer
        self.walker: urwid.SimpleFocusListWalker[Any] = urwid.SimpleFocusListWalker([])
        self.listbox = urwid.ListBox(self.walker)
        hint = _keys_hint(
            ("ACCEPT_REQUEST", "accept"), ("REJECT_REQUEST", "reject"), ("BLOCK_REQUEST", "block")
        )
        self.summary = urwid.Text("")
        explanation = urwid.Text(
            "People who added you, with the note they sent. Until you accept, they are "
            "not contacts and learn nothing from you; if you reject or block, they are "
            "not told."
        )
        body = urwid.Pile(
            [
                ("pack", explanation),
                ("pack", urwid.Divider()),
                self.listbox,
                ("pack", urwid.Divider()),
                ("pack", self.summary),
                ("pack", urwid.Text(("help_key", hint))),
            ],
            focus_item=2,
        )
        super().__init__("Contact requests", body)
        self.follow(state)

    def follow(self, state: State) -> None:
        selected = self.selected()
        position = self.walker.focus or 0
        items = [RequestItem(r, self.tz) for r in state.requests]
        none: list[urwid.Widget] = [urwid.Text(("offline", "No pending requests."))]
        self.walker[:] = items or none
        # The same request stays selected; if it is gone, the one that took its place.
        ids = [item.request.id for item in items]
        if selected is not None and selected.id in ids:
            position = ids.index(selected.id)
        self.walker.set_focus(min(position, len(self.walker) - 1))
        count = len(state.requests)
        text = f"{count} pending" if count else ""
        if state.status.block_unknown:
            text += ("; " if text else "") + "block unknown is on: new requests are dropped"
        self.summary.set_text(text)

    def selected(self) -> RequestView | None:
        if not self.walker:
            return None
        widget, _position = self.walker.get_focus()
        return widget.request if isinstance(widget, RequestItem) else None

    def keypress(self, size: tuple[()] | tuple[int] | tuple[int, int], key: str) -> str | None:
        command = command_for_key(key, "requests")
        request = self.selected()
        if command in ("ACCEPT_REQUEST", "REJECT_REQUEST", "BLOCK_REQUEST"):
            if request is not None:
                self.on_answer(command, request)
            return None
        return super().keypress(size, key)


def accept_form(
    request: RequestView, on_submit: Callable[[str | None], None], on_cancel: Callable[[], None]
) -> Form:
    """Accepting asks for a name of the user's choosing (optional: else the address)."""
    note = sanitize_plain(request.message) or "(no note)"
    hint = f"{sanitize_plain(request.address)}.onion\nTheir note: {note}"

    def submit(values: list[str]) -> None:
        on_submit(values[0].strip() or None)

    return Form("Accept the request", [("Name", "")], hint, submit, on_cancel)


def request_block_question(request: RequestView) -> str:
    return (
        f"Block {sanitize_plain(short_address(request.address))}? Their requests are "
        "dropped unseen from now on, and they are not told. ('onionmsg contacts unblock "
        "ADDRESS' undoes it.)"
    )


SETTINGS_TEXT = {
    "block_unknown": (
        "Block unknown",
        "every contact request is dropped unseen; contacts still reach you",
    ),
    "invisible": (
        "Invisible",
        "your public address is withdrawn: nobody can send you a request or see you "
        "online by it; contacts with endpoint onions still reach you (tor only)",
    ),
}


class SettingsDialog(Info):
    """Who may reach me: one toggle per setting; the daemon's refusal shows in the dialog."""

    def __init__(
        self,
        status: Status,
        on_toggle: Callable[[str, bool], None],
        on_close: Callable[[], None],
        focus: str = "block_unknown",
    ) -> None:
        self.error = urwid.Text("")
        body: list[urwid.Widget] = []
        focus_index = 0
        for name, (label, text) in SETTINGS_TEXT.items():
            on = bool(getattr(status, name))
            if name == focus:
                focus_index = len(body)
            button = _button(
                f"[{'x' if on else ' '}] {label}: {'on' if on else 'off'}",
                _bind_toggle(on_toggle, name, not on),
            )
            body += [button, urwid.Text(("offline", f"    {text}"))]
        body.append(urwid.AttrMap(self.error, "error"))
        super().__init__("Settings", body, on_close, focus=focus_index)

    def show_error(self, text: str) -> None:
        self.error.set_text(f"Not changed: {text}")


def _bind_toggle(
    function: Callable[[str, bool], None], name: str, value: bool
) -> Callable[[], None]:
    return lambda: function(name, value)
