"""The console UI's controller: control-API replies and events in, new States out, to the view.

It runs on the Twisted reactor through ``urwid.TwistedEventLoop``; nothing blocks. The
app talks to the node only through the control API (``AsyncControlClient``), whether the
daemon runs on its own or in this process (``onionmsg`` with no daemon running).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import tzinfo
from pathlib import Path
from typing import Any, Protocol

import urwid
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from onionmsg.config import Home
from onionmsg.control.async_client import Event, connect_control
from onionmsg.daemon import DaemonOptions
from onionmsg.errors import OnionmsgError
from onionmsg.mix.scheduler import PROFILES
from onionmsg.store.db import Store
from onionmsg.ui import dialogs
from onionmsg.ui.model import MessageView, RequestView, State
from onionmsg.ui.sanitize import sanitize_plain
from onionmsg.ui.themes import colours, next_theme, palette
from onionmsg.ui.views import MainView, short_address

STATUS_POLL_SECONDS = 2.0  # queued cells change without an event; the rest comes as events


class Client(Protocol):
    def call(self, method: str, **params: Any) -> Deferred[Any]: ...


def _reason(failure: Failure) -> str:
    return failure.getErrorMessage() or repr(failure.value)


class App:
    def __init__(
        self,
        client: Client,
        *,
        theme: str = "dark",
        tz: tzinfo | None = None,
        in_process: bool = False,
    ) -> None:
        self.client = client
        self.theme = theme
        self.tz = tz
        self.in_process = in_process
        self.state = State()
        self.view = MainView(self, tz)
        self.loop: urwid.MainLoop | None = None
        self.finished: Deferred[None] = Deferred()
        self.view.update(self.state)

    # -- data in ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe first, then read everything: no event falls between the two."""
        await self.client.call("subscribe")
        status = await self.client.call("status")
        contacts = await self.client.call("contacts.list")
        history = await self.client.call("messages")
        state = self.state.with_status(status).with_contacts(contacts).with_history(history)
        self.set_state(state.select(state.selected))
        self.view.focus_pane("input" if state.contacts else "contacts")
        self.load_requests()
        self.redraw()

    def load_requests(self) -> None:
        """The pending requests (after any event could have changed them unseen)."""
        self._call(
            "requests.list",
            lambda items: self.set_state(self.state.with_requests(items)),
            lambda _reason: None,  # a daemon without contact requests: nothing to show
        )

    def set_state(self, state: State) -> None:
        self.state = state
        self.view.update(state)
        self.redraw()

    def redraw(self) -> None:
        if self.loop is not None and self.loop.screen.started:
            self.loop.draw_screen()

    def on_event(self, event: Event) -> None:
        kind = event.get("event")
        if kind == "message":
            self.set_state(self.state.with_message(event))
        elif kind == "contact":
            self.set_state(self.state.with_contact(event))
        elif kind == "contact_removed":
            self.set_state(self.state.without_contact(str(event.get("address"))))
        elif kind == "network":
            self.set_state(self.state.with_network(event))
        elif kind == "deleted" and type(event.get("seq")) is int:
            self.set_state(self.state.without_message(event["seq"]))
        elif kind == "request":
            self.set_state(self.state.with_request(event))

    def on_lost(self, reason: str) -> None:
        self.set_state(replace(self.state, connected=False, notice=f"{reason}: press q to quit"))

    def poll(self) -> None:
        def polled(status: dict[str, Any]) -> None:
            known = len(self.state.requests)
            self.set_state(self.state.with_status(status))
            # Answered elsewhere (the CLI), or dropped by the daemon: read them again.
            if self.state.status.pending_requests not in (None, known):
                self.load_requests()

        self._call("status", polled)

    def _call(
        self,
        method: str,
        on_result: Callable[[Any], None],
        on_error: Callable[[str], None] | None = None,
        **params: Any,
    ) -> None:
        def failed(failure: Failure) -> None:
            reason = _reason(failure)
            if on_error is not None:
                on_error(reason)
            else:
                self.notify(reason)

        def succeeded(result: Any) -> None:
            try:
                on_result(result)
            except Exception as error:  # a bug here must not kill the UI
                logging.getLogger(__name__).exception("handling %s", method)
                self.notify(f"internal error: {error}")

        self.client.call(method, **params).addCallbacks(succeeded, failed)

    def notify(self, text: str) -> None:
        self.set_state(self.state.with_notice(text))

    # -- actions (from the view) -----------------------------------------------------------

    def select(self, address: str) -> None:
        self.set_state(self.state.select(address).with_notice(""))

    def send(self, text: str) -> None:
        address = self.state.selected
        if address is None:
            self.notify("Add a contact first: press Esc, then a.")
            return

        def sent(message: dict[str, Any]) -> None:
            self.view.clear_input()
            self.set_state(self.state.with_message(message).with_notice(""))

        self._call("send", sent, contact=address, text=text)

    def toggle_fold(self, seq: int) -> None:
        self.set_state(self.state.toggle_fold(seq))

    def command(self, command: str) -> None:
        handler = getattr(self, f"do_{command.lower()}", None)
        if handler is not None:
            handler()

    def close_dialog(self) -> None:
        self.view.close_dialog()
        self.redraw()

    def do_help(self) -> None:
        self.view.open_dialog(dialogs.help_dialog(), tall=True)

    def do_quit(self) -> None:
        if self.in_process:
            question = (
                "Quit onionmsg? Your node stops with it: contacts can't reach you until "
                "you start it again (or run 'onionmsg daemon')."
            )
        else:
            question = "Quit onionmsg? The daemon keeps running and receiving messages."
        self.view.open_dialog(dialogs.Confirm("Quit", question, self.quit, self.close_dialog))

    def quit(self) -> None:
        self.view.close_dialog()
        if not self.finished.called:
            self.finished.callback(None)

    def _conversation_step(self, step: int) -> None:
        addresses = [c.address for c in self.state.contacts]
        if not addresses:
            return
        index = addresses.index(self.state.selected) if self.state.selected in addresses else 0
        self.select(addresses[(index + step) % len(addresses)])

    def do_next_conversation(self) -> None:
        self._conversation_step(1)

    def do_previous_conversation(self) -> None:
        self._conversation_step(-1)

    def do_add_contact(self) -> None:
        form: dialogs.Form

        def added(contact: dict[str, Any]) -> None:
            self.close_dialog()
            state = self.state.with_contact(contact)
            self.set_state(state.select(str(contact.get("address"))).with_notice(""))
            self.view.focus_pane("input")

        def submit(address: str, name: str | None, tcp: str | None) -> None:
            self._call("contacts.add", added, form.show_error, address=address, name=name, tcp=tcp)

        form = dialogs.add_contact_form(
            self.state.status.transport == "tcp", submit, self.close_dialog
        )
        self.view.open_dialog(form)

    def _selected_or_notice(self) -> str | None:
        if self.state.selected is None:
            self.notify("No contact selected: press a to add one.")
        return self.state.selected

    def do_rename_contact(self) -> None:
        address = self._selected_or_notice()
        contact = self.state.contact(address)
        if address is None or contact is None:
            return
        form: dialogs.Form

        def renamed(result: dict[str, Any]) -> None:
            self.close_dialog()
            self.set_state(self.state.with_contact(result))

        def submit(values: list[str]) -> None:
            name = values[0].strip() or None
            self._call("contacts.rename", renamed, form.show_error, contact=address, name=name)

        initial = contact.name if contact.name != address[:16] else ""
        form = dialogs.Form("Rename", [("Name", initial)], "", submit, self.close_dialog)
        self.view.open_dialog(form)

    def do_remove_contact(self) -> None:
        address = self._selected_or_notice()
        contact = self.state.contact(address)
        if address is None or contact is None:
            return

        def removed(result: dict[str, Any]) -> None:
            self.set_state(self.state.without_contact(address).with_notice("Contact removed."))

        def yes() -> None:
            self.close_dialog()
            self._call("contacts.remove", removed, contact=address)

        question = (
            f"Remove {sanitize_plain(contact.name)} and delete your whole history with them? "
            "They will not be able to reach you until you add them again."
        )
        self.view.open_dialog(dialogs.Confirm("Remove contact", question, yes, self.close_dialog))

    def do_verify_contact(self) -> None:
        address = self._selected_or_notice()
        if address is None:
            return

        def confirmed(result: dict[str, Any]) -> None:
            self.close_dialog()
            self.set_state(self.state.with_contact(result).with_notice("Marked verified ✓"))

        def show(result: dict[str, Any]) -> None:
            def confirm() -> None:
                self._call("contacts.verify", confirmed, contact=address, confirm=True)

            dialog = dialogs.verify_dialog(
                str(result.get("name")),
                str(result.get("safety_number")),
                result.get("verified") is True,
                confirm,
                self.close_dialog,
            )
            self.view.open_dialog(dialog)
            self.redraw()

        self._call("contacts.verify", show, contact=address, confirm=False)

    def do_my_address(self) -> None:
        if self.state.status.address:
            self.view.open_dialog(
                dialogs.address_dialog(self.state.status.address, self.close_dialog)
            )

    def do_search(self) -> None:
        form: dialogs.Form

        def choose(message: MessageView) -> None:
            self.close_dialog()
            self.select(message.address)
            self.view.messages.focus_seq(message.seq)
            self.view.focus_pane("messages")
            self.redraw()

        def found(results: list[dict[str, Any]], query: str) -> None:
            messages = [MessageView.from_api(r) for r in results if isinstance(r, dict)]
            self.view.open_dialog(dialogs.search_results(query, messages, choose), tall=True)
            self.redraw()

        def submit(values: list[str]) -> None:
            query = values[0]
            if not query.strip():
                form.show_error("Type something to look for.")
                return
            self._call("messages.search", lambda r: found(r, query), form.show_error, query=query)

        form = dialogs.Form("Search the history", [("Text", "")], "", submit, self.close_dialog)
        self.view.open_dialog(form)

    def do_cover(self) -> None:
        def chosen(name: str) -> None:
            def done(cover: dict[str, Any]) -> None:
                self.close_dialog()
                self.set_state(self.state.with_cover(cover).with_notice(f"Cover traffic: {name}"))

            self._call("cover.set", done, profile=name)

        dialog = dialogs.cover_dialog(
            list(PROFILES.values()), self.state.status.cover.profile, chosen, self.close_dialog
        )
        self.view.open_dialog(dialog)

    def do_block_contact(self) -> None:
        address = self._selected_or_notice()
        contact = self.state.contact(address)
        if address is None or contact is None:
            return
        name = sanitize_plain(contact.name)
        method = "contacts.unblock" if contact.blocked else "contacts.block"

        def done(result: dict[str, Any]) -> None:
            notice = f"{name} is blocked." if result.get("blocked") else f"{name} is unblocked."
            self.set_state(self.state.with_contact(result).with_notice(notice))

        def yes() -> None:
            self.close_dialog()
            self._call(method, done, contact=address)

        if contact.blocked:
            title = "Unblock contact"
            question = f"Unblock {name}? Their links are accepted again and messages flow."
        else:
            title = "Block contact"
            question = (
                f"Block {name}? The link closes and nothing goes in or out (no messages, "
                "no requests) until you unblock them. They are not told; your history stays."
            )
        self.view.open_dialog(dialogs.Confirm(title, question, yes, self.close_dialog))

    def do_requests(self) -> None:
        self.load_requests()
        self._open_requests()

    def _open_requests(self) -> None:
        dialog = dialogs.RequestsDialog(self.state, self.tz, self.answer_request)
        self.view.open_dialog(dialog, tall=True)
        self.redraw()

    def answer_request(self, command: str, request: RequestView) -> None:
        """Accept (asks for a name), reject, or block (asks first) one request."""
        shown = sanitize_plain(short_address(request.address))

        def answered(notice: str) -> Callable[[Any], None]:
            # The requests dialog, if open, follows the state: the request leaves it.
            return lambda _result: self.set_state(
                self.state.without_request(request.id).with_notice(notice)
            )

        if command == "REJECT_REQUEST":
            notice = f"Rejected {shown}: ignored for a week."
            self._call("requests.reject", answered(notice), id=request.id)
        elif command == "BLOCK_REQUEST":

            def block() -> None:
                self._open_requests()
                self._call("requests.block", answered(f"Blocked {shown}."), id=request.id)

            question = dialogs.request_block_question(request)
            self.view.open_dialog(dialogs.Confirm("Block", question, block, self._open_requests))
        elif command == "ACCEPT_REQUEST":
            form: dialogs.Form

            def accepted(contact: dict[str, Any]) -> None:
                self.close_dialog()
                state = self.state.without_request(request.id).with_contact(contact)
                name = sanitize_plain(str(contact.get("name")))
                state = state.select(str(contact.get("address")))
                self.set_state(state.with_notice(f"{name} is a contact now."))
                self.view.focus_pane("input")

            def submit(name: str | None) -> None:
                self._call("requests.accept", accepted, form.show_error, id=request.id, name=name)

            form = dialogs.accept_form(request, submit, self._open_requests)
            self.view.open_dialog(form)

    def do_settings(self, focus: str = "block_unknown") -> None:
        dialog: dialogs.SettingsDialog

        def toggle(name: str, on: bool) -> None:
            def done(result: dict[str, Any]) -> None:
                label = dialogs.SETTINGS_TEXT[name][0]
                self.set_state(
                    self.state.with_settings(result).with_notice(
                        f"{label}: {'on' if on else 'off'}"
                    )
                )
                self.do_settings(name)
                self.redraw()

            def refused(reason: str) -> None:
                dialog.show_error(reason)
                self.redraw()

            self._call(f"settings.{name}", done, refused, on=on)

        dialog = dialogs.SettingsDialog(self.state.status, toggle, self.close_dialog, focus)
        self.view.open_dialog(dialog)

    def do_theme(self) -> None:
        self.theme = next_theme(self.theme)
        if self.loop is not None:
            apply_theme(self.loop.screen, self.theme)
        self.notify(f"Theme: {self.theme}")


def apply_theme(screen: Any, theme: str) -> None:
    screen.register_palette(palette(theme))
    screen.set_terminal_properties(colors=colours(theme))
    screen.clear()


async def run_app(
    reactor: Any, socket_path: Path, *, theme: str, in_process: bool, log_path: Path
) -> None:
    """Attach to the daemon behind ``socket_path`` and run the UI until the user quits."""
    # urwid and our handlers log with the standard library; never onto the UI's terminal.
    logging.basicConfig(filename=log_path, level=logging.WARNING, force=True)
    holder: list[App] = []
    client = await connect_control(
        reactor,
        socket_path,
        on_event=lambda event: holder[0].on_event(event) if holder else None,
        on_lost=lambda reason: holder[0].on_lost(reason) if holder else None,
    )
    app = App(client, theme=theme, in_process=in_process)
    holder.append(app)
    screen = urwid.display.raw.Screen()
    loop = urwid.MainLoop(
        app.view,
        palette(theme),
        screen=screen,
        event_loop=urwid.TwistedEventLoop(reactor, manage_reactor=False),
        handle_mouse=False,
    )
    app.loop = loop
    poll = LoopingCall(app.poll)
    poll.clock = reactor
    # SIGTERM or SIGHUP: leave the UI (and restore the terminal) before the reactor stops.
    trigger = reactor.addSystemEventTrigger("before", "shutdown", app.quit)
    loop.start()
    try:
        # Ctrl-C is a key (quit, after asking), not a signal; stop() restores the tty.
        screen.tty_signal_keys(intr="undefined")
        apply_theme(screen, theme)
        await app.start()
        poll.start(STATUS_POLL_SECONDS, now=False)
        await app.finished
    finally:
        if poll.running:
            poll.stop()
        loop.stop()
        client.close()
        reactor.removeSystemEventTrigger(trigger)


def run_ui(home: Home, store: Store | None, options: DaemonOptions, theme: str) -> int:
    """``onionmsg`` with no command: attach to the daemon, or run the node in-process
    (``store`` given) exactly as ``onionmsg daemon`` would, for as long as the UI is open."""
    from twisted.internet import defer, task

    from onionmsg.daemon import start_daemon, start_logging

    # The terminal belongs to the UI: diagnostics go to a file in the home.
    log_file = open(home.log_path if store else home.root / "ui.log", "a")  # noqa: SIM115
    start_logging(log_file, options.verbose)
    failure: list[OnionmsgError] = []

    async def main(reactor: Any) -> None:
        cleaned_up: Deferred[None] = Deferred()
        reactor.addSystemEventTrigger("before", "shutdown", lambda: cleaned_up)
        daemon = None
        try:
            if store is not None:
                daemon = await start_daemon(reactor, home, store, options)
            await run_app(
                reactor,
                home.control_socket,
                theme=theme,
                in_process=daemon is not None,
                log_path=home.root / "ui.log",
            )
        except OnionmsgError as error:
            failure.append(error)
        finally:
            try:
                if daemon is not None:
                    await daemon.stop()
            finally:
                cleaned_up.callback(None)

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit as exit_:
        if failure:
            raise failure[0] from None
        return int(exit_.code or 0)
    finally:
        log_file.close()
