"""The main screen: contact list, conversation, input line, status bar; all drawn from a State.

``MainView.update(state)`` redraws from a snapshot; keys the panes do not use go to the
``Actions`` the app gives it (and so to the control API). Every string a peer could
have chosen (names, messages) goes through ``sanitize`` before it reaches a widget.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import date, datetime, tzinfo
from typing import Any, ClassVar, Protocol, runtime_checkable

import urwid

from onionmsg.ui.keys import command_for_key, is_command_key, key_label, keys_for_command
from onionmsg.ui.model import ContactView, MessageView, State, Status
from onionmsg.ui.sanitize import Markup, fold, sanitize

CONTACTS_WIDTH = 24
STATUS_WIDTH = 9  # "delivered"
Size = tuple[()] | tuple[int] | tuple[int, int]  # urwid's widget sizes
PANES = ("contacts", "messages", "input")


def styled(markup: Markup, attr: str) -> Markup:
    """Sanitized markup in one attribute; its escapes keep theirs, so they stand out."""
    return [(attr, part) if isinstance(part, str) else part for part in markup]


@runtime_checkable
class LiveDialog(Protocol):
    """A dialog that shows part of the State and is redrawn with it (the requests)."""

    def follow(self, state: State) -> None: ...


class Actions(Protocol):
    def select(self, address: str) -> None: ...
    def send(self, text: str) -> None: ...
    def toggle_fold(self, seq: int) -> None: ...
    def command(self, command: str) -> None: ...


def short_address(address: str) -> str:
    return f"{address[:10]}…" if len(address) > 11 else address


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def human_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds else "0 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def network_text(status: Status) -> tuple[str, bool]:
    """The status bar's network part, and whether it needs the user's attention."""
    network = status.network
    if status.transport == "tcp":
        return f"tcp (no anonymity): {network.state}", False
    if "," in status.transport:  # several at once: "tor reachable, i2p ready"
        return network.state, not network.reachable
    if status.transport == "i2p":
        text = f"i2p: {network.state}"
        return (text + f" ({network.error})" if network.error else text), not network.reachable
    if network.reachable:
        return "tor: reachable", False
    if network.state == "hidden":  # invisible, and no endpoint onion to publish yet
        return "tor: hidden", False
    if network.state == "bootstrapping":
        text = f"tor: bootstrap {network.bootstrap_percent or 0}%"
        if network.bootstrap_phase:
            text += f" {network.bootstrap_phase}"
        return text, True
    text = f"tor: {network.state}"
    if network.state == "publishing":
        text += " onion service"
    if network.error:
        text += f" ({network.error})"
    return text, True


def status_line(state: State) -> list[Any]:
    status = state.status
    network, alert = network_text(status)
    cover = status.cover
    if cover.profile == "off":
        cover_text = "cover: off"
    else:
        cover_text = (
            f"cover: {cover.profile} {human_bytes(cover.bytes_per_day)}/day "
            f"~{human_seconds(cover.expected_latency_s)}"
        )
    parts: list[Any] = [("status_alert" if alert else "status", network)]
    if status.transport == "tor" and status.network.pow and not status.invisible:
        # Tor's proof-of-work defence on the identity onion (withdrawn when invisible).
        parts.append(f", PoW {status.network.pow}")
    if status.invisible:
        parts.append(" │ invisible")
    if status.pending_requests is not None:
        requests = f" │ requests: {status.pending_requests}"
        if status.block_unknown:
            requests += " (unknown blocked)"
        parts.append(("status_alert", requests) if status.pending_requests else requests)
    elif status.block_unknown:
        parts.append(" │ unknown blocked")
    parts.append(f" │ {cover_text}, {cover.queued_cells} queued")
    if not state.connected:
        parts.append(("status_alert", " │ daemon gone"))
    return parts


def contact_state(contact: ContactView) -> str:
    """What the contact list says under the address beside online/offline, if anything."""
    if contact.blocked:
        return "blocked"
    if not contact.accepted:
        return "request not answered"
    return ""


class ContactItem(urwid.WidgetWrap[urwid.Widget]):
    """Two rows: ● name  (unread) ✓ / short address, online or offline; a third when the
    contact is blocked or has not answered our request."""

    def __init__(self, contact: ContactView, unread: int, selected: bool) -> None:
        self.address = contact.address
        marker = "⊘" if contact.blocked else "●" if contact.online else "○"
        name: Markup = sanitize(contact.name)
        first: list[Any] = [
            (2, urwid.Text(marker)),
            urwid.Text(name, wrap="ellipsis"),
        ]
        if unread:
            first.append(("pack", urwid.Text(("unread", f" ({unread})"))))
        if contact.verified:
            first.append(("pack", urwid.Text(("verified", " ✓"))))
        second = urwid.Text(
            (
                "offline" if not contact.online else "contact",
                "  "
                + short_address(contact.address)
                + (" online" if contact.online else " offline"),
            ),
            wrap="ellipsis",
        )
        rows: list[urwid.Widget] = [urwid.Columns(first), second]
        if extra := contact_state(contact):
            rows.append(urwid.Text(("offline", f"  {extra}"), wrap="ellipsis"))
        body = urwid.Pile(rows)
        mark = "contact_focus"
        super().__init__(urwid.AttrMap(body, "contact_focus" if selected else "contact", mark))

    def selectable(self) -> bool:
        return True

    def keypress(self, size: Size, key: str) -> str | None:
        return key


class NavListBox(urwid.ListBox[Any]):
    """A ListBox that also understands the vi-style keys of the key table."""

    _NATIVE: ClassVar[dict[str, str]] = {
        "GO_UP": "up",
        "GO_DOWN": "down",
        "PAGE_UP": "page up",
        "PAGE_DOWN": "page down",
    }

    def keypress(self, size: tuple[int] | tuple[int, int], key: str) -> str | None:  # type: ignore[override]  # urwid's ListBox narrows the size
        command = command_for_key(key, "lists")
        if command in self._NATIVE:
            return super().keypress(size, self._NATIVE[command])
        count = len(self.body)  # type: ignore[arg-type]  # our walkers are lists
        if command in ("GO_TOP", "GO_BOTTOM") and count:
            self.set_focus(0 if command == "GO_TOP" else count - 1)
            if command == "GO_BOTTOM":
                self.set_focus_valign("bottom")
            return None
        return super().keypress(size, key)


class ContactList(urwid.WidgetWrap[urwid.Widget]):
    def __init__(self) -> None:
        self.walker: urwid.SimpleFocusListWalker[Any] = urwid.SimpleFocusListWalker([])
        self.listbox = NavListBox(self.walker)
        self.empty = urwid.Filler(
            urwid.Text(("offline", "No contacts yet.\nPress a to add one."), align="center"),
            valign="top",
        )
        super().__init__(self.listbox)

    def update(self, state: State) -> None:
        items = [
            ContactItem(c, state.unread.get(c.address, 0), c.address == state.selected)
            for c in state.contacts
        ]
        self.walker[:] = items
        self._w = self.listbox if items else self.empty
        for index, item in enumerate(items):
            if item.address == state.selected:
                self.walker.set_focus(index)

    def focused_address(self) -> str | None:
        if not self.walker:
            return None
        widget, _position = self.walker.get_focus()
        return widget.address if isinstance(widget, ContactItem) else None

    def selectable(self) -> bool:
        return True


def day_label(day: date, today: date) -> str:
    if day == today:
        return "Today"
    if (today - day).days == 1:
        return "Yesterday"
    return f"{day:%A} {day.day} {day:%B %Y}"


class MessageItem(urwid.WidgetWrap[urwid.Widget]):
    def __init__(self, message: MessageView, unfolded: bool, tz: tzinfo | None) -> None:
        self.seq = message.seq
        when = message.time.astimezone(tz) if message.time else None
        stamp = f"{when:%H:%M}" if when else "--:--"
        if message.direction == "out":
            body: Markup = [("me", "me")]
        else:
            body = styled(sanitize(message.contact), "peer")
        body.append(": ")
        folded = fold(message.text)
        shown = message.text if unfolded else folded.text
        body.extend(sanitize(shown, multiline=True) or [""])
        if folded.hidden_chars and not unfolded:
            more = (
                f"{folded.hidden_lines} more lines"
                if folded.hidden_lines
                else f"{folded.hidden_chars} more characters"
            )
            body.append(("fold", f"\n[… {more}: Enter unfolds]"))
        elif folded.hidden_chars:
            body.append(("fold", "\n[Enter folds]"))
        state = message.status if message.direction == "out" else ""
        row = urwid.Columns(
            [
                (6, urwid.Text(("time", stamp))),
                urwid.Text(body),
                (
                    STATUS_WIDTH + 1,
                    urwid.Text(
                        ("msg_queued" if state == "queued" else "msg_status", state),
                        align="right",
                    ),
                ),
            ]
        )
        super().__init__(urwid.AttrMap(row, "text", "msg_focus"))

    def selectable(self) -> bool:
        return True

    def keypress(self, size: Size, key: str) -> str | None:
        return key


class MessageList(urwid.WidgetWrap[urwid.Widget]):
    def __init__(self, tz: tzinfo | None = None, today: Callable[[], date] | None = None) -> None:
        self.tz = tz
        self.today = today or (lambda: datetime.now(tz).date())
        self.walker: urwid.SimpleFocusListWalker[Any] = urwid.SimpleFocusListWalker([])
        self.listbox = NavListBox(self.walker)
        self.placeholder = urwid.Text("")
        self.empty = urwid.Filler(self.placeholder, valign="middle")
        self._shown: tuple[str | None, tuple[MessageView, ...], frozenset[int]] | None = None
        super().__init__(self.empty)

    def update(self, state: State) -> None:
        history = state.conversation()
        key = (state.selected, history, state.unfolded)
        if key == self._shown:
            return
        same_conversation = self._shown is not None and self._shown[0] == state.selected
        at_bottom = not self.walker or self.walker.focus == len(self.walker) - 1
        focused = self.focused_seq()
        self._shown = key
        items: list[urwid.Widget] = []
        last_day: date | None = None
        today = self.today()
        for message in history:
            day = message.time.astimezone(self.tz).date() if message.time else None
            if day is not None and day != last_day:
                items.append(
                    urwid.AttrMap(
                        urwid.Text(f"── {day_label(day, today)} ──", align="center"), "day"
                    )
                )
                last_day = day
            items.append(MessageItem(message, message.seq in state.unfolded, self.tz))
        self.walker[:] = items
        if not history:
            self.placeholder.set_text(self._placeholder(state))
            self._w = self.empty
            return
        self._w = self.listbox
        target = len(items) - 1
        if same_conversation and not at_bottom and focused is not None:
            target = next(
                (i for i, w in enumerate(items) if getattr(w, "seq", None) == focused), target
            )
        self.walker.set_focus(target)

    @staticmethod
    def _placeholder(state: State) -> Any:
        if state.selected is None:
            return [
                ("pane_title", "Welcome to onionmsg.\n\n"),
                "Press a to add a contact by their onion address,\n"
                "i to show yours (text and QR code),\nF1 or ? for every key.",
            ]
        return ("offline", "No messages yet. Type below and press Enter.")

    def focused_seq(self) -> int | None:
        if not self.walker:
            return None
        widget, _position = self.walker.get_focus()
        seq = getattr(widget, "seq", None)
        return seq if isinstance(seq, int) else None

    def focus_seq(self, seq: int) -> None:
        for index, widget in enumerate(self.walker):
            if getattr(widget, "seq", None) == seq:
                self.walker.set_focus(index)
                self.listbox.set_focus_valign("middle")

    def selectable(self) -> bool:
        return True


class InputLine(urwid.Edit):
    """The message being written: Enter sends, Alt-Enter starts a new line."""

    def __init__(self, on_send: Callable[[str], None]) -> None:
        super().__init__(("input_prompt", "> "), multiline=True)
        self._on_send = on_send

    def keypress(self, size: tuple[int], key: str) -> str | None:  # type: ignore[override]  # as urwid's Edit
        if is_command_key("SEND", key):
            text = self.edit_text
            if text.strip():
                self._on_send(text)
            return None
        if is_command_key("NEWLINE", key):
            self.insert_text("\n")
            return None
        return super().keypress(size, key)


class MainView(urwid.WidgetWrap[urwid.Widget]):
    def __init__(self, actions: Actions, tz: tzinfo | None = None) -> None:
        self.actions = actions
        self.state = State()
        self.header = urwid.Text("onionmsg", wrap="ellipsis")
        self.help_hint = urwid.Text(
            f"{key_label(keys_for_command('HELP')[0])} help  "
            f"{key_label(keys_for_command('QUIT')[0])} quit",
            align="right",
        )
        self.contacts = ContactList()
        self.messages = MessageList(tz)
        self.title = urwid.Text("", wrap="ellipsis")
        self.title_map = urwid.AttrMap(self.title, "pane_title")
        self.input = InputLine(actions.send)
        self.notice = urwid.Text("", wrap="ellipsis")
        self.status = urwid.Text("", wrap="ellipsis")
        self.conversation = urwid.Pile(
            [
                ("pack", self.title_map),
                self.messages,
                ("pack", urwid.AttrMap(urwid.Divider("─"), "divider")),
                ("pack", urwid.AttrMap(self.input, "input")),
            ],
            focus_item=3,
        )
        self.columns = urwid.Columns(
            [
                (CONTACTS_WIDTH, self.contacts),
                (1, urwid.AttrMap(urwid.SolidFill("│"), "divider")),
                self.conversation,
            ],
            focus_column=0,
        )
        header = urwid.AttrMap(urwid.Columns([self.header, ("pack", self.help_hint)]), "header")
        self.footer = urwid.Pile([urwid.AttrMap(self.status, "status")])
        self.frame = urwid.Frame(self.columns, header=header, footer=self.footer)
        self.dialog: urwid.Widget | None = None
        super().__init__(self.frame)

    # -- dialogs ---------------------------------------------------------------------------

    def open_dialog(self, dialog: urwid.Widget, *, tall: bool = False) -> None:
        self.dialog = dialog
        self._w = urwid.Overlay(
            dialog,
            self.frame,
            align="center",
            width=("relative", 90),
            valign="middle",
            height=("relative", 90) if tall else "pack",
            min_width=40,
        )

    def close_dialog(self) -> None:
        self.dialog = None
        self._w = self.frame

    # -- drawing ---------------------------------------------------------------------------

    def update(self, state: State) -> None:
        self.state = state
        dialog: object = self.dialog  # (mypy can't see a Widget being a LiveDialog)
        if isinstance(dialog, LiveDialog):
            dialog.follow(state)
        status = state.status
        online = sum(1 for c in state.contacts if c.online)
        header = f"onionmsg · me: {short_address(status.address)}"
        header += f" · {online}/{len(state.contacts)} online"
        if not status.passphrase:
            header += " · no passphrase!"
        self.header.set_text(header)
        self.contacts.update(state)
        self.messages.update(state)
        contact = state.contact(state.selected)
        if contact is None:
            self.title.set_text(" No conversation")
        else:
            title: list[Any] = [" ", *sanitize(contact.name)]
            title.append(" · online" if contact.online else " · offline")
            if contact.blocked:
                title.append(("status_alert", " · blocked (b unblocks)"))
            elif not contact.accepted:
                title.append(" · request not answered: messages wait")
            if contact.verified:
                title.append(("verified", " · verified ✓"))
            else:
                title.append(" · not verified (v)")
            title.append(f" · {short_address(contact.address)}")
            self.title.set_text(title)
        self.status.set_text(status_line(state))
        rows: list[Any] = []
        if state.notice:
            rows.append(urwid.AttrMap(urwid.Text(state.notice, wrap="ellipsis"), "notice"))
        rows.append(urwid.AttrMap(self.status, "status"))
        self.footer.contents.clear()
        for row in rows:
            self.footer.contents.append((row, self.footer.options()))

    # -- focus -----------------------------------------------------------------------------

    def pane(self) -> str:
        if self.columns.focus_position == 0:
            return "contacts"
        return "input" if self.conversation.focus_position == 3 else "messages"

    def focus_pane(self, pane: str) -> None:
        if pane == "contacts":
            self.columns.focus_position = 0
        else:
            self.columns.focus_position = 2
            self.conversation.focus_position = 3 if pane == "input" else 1
        attr = "pane_title" if pane == "contacts" else "pane_title_focus"
        attr_map: dict[Hashable, Hashable] = {None: attr}
        self.title_map.set_attr_map(attr_map)

    def clear_input(self) -> None:
        self.input.set_edit_text("")

    # -- keys ------------------------------------------------------------------------------

    def keypress(self, size: Size, key: str) -> str | None:
        if self.dialog is not None:
            unhandled = super().keypress(size, key)
            command = command_for_key(unhandled, "dialog") if unhandled else None
            if command == "BACK":
                self.close_dialog()
            elif command == "QUIT" and unhandled != "q":  # q may be meant for a field
                self.actions.command(command)
            return None
        pane = self.pane()
        before = self.contacts.focused_address()
        unhandled = super().keypress(size, key)
        after = self.contacts.focused_address()
        if pane == "contacts" and after is not None and after != before:
            self.actions.select(after)  # the conversation follows the cursor
        if unhandled is None:
            return None
        command = command_for_key(unhandled, pane)
        if command is None:
            return unhandled
        if command in ("NEXT_PANE", "PREVIOUS_PANE"):
            step = 1 if command == "NEXT_PANE" else -1
            self.focus_pane(PANES[(PANES.index(pane) + step) % len(PANES)])
        elif command == "BACK":
            self.focus_pane("contacts")
        elif command == "OPEN" and after is not None:
            self.actions.select(after)
            self.focus_pane("input")
        elif command == "UNFOLD":
            seq = self.messages.focused_seq()
            if seq is not None:
                self.actions.toggle_fold(seq)
        else:
            self.actions.command(command)
        return None
