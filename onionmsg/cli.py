"""The command line. Its contract is public and stable: docs/usage.md documents it.

Data goes to stdout, diagnostics to stderr. Exit codes: 0 success, 1 a runtime error
(one clear sentence on stderr), 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onionmsg import __version__
from onionmsg.config import (
    PASSPHRASE_FILE_ENV,
    Home,
    HomeError,
    default_home,
    fsync_directory,
    write_private_file,
)
from onionmsg.contacts.contact_string import own_contact_string
from onionmsg.control.client import ControlClient, DaemonNotRunning
from onionmsg.crypto.identity import Identity
from onionmsg.errors import OnionmsgError
from onionmsg.mix.scheduler import DEFAULT_PROFILE, PROFILES, Profile
from onionmsg.store.db import Store, WrongPassphraseError
from onionmsg.store.keys import KeyParams


class PassphraseError(OnionmsgError):
    """No passphrase could be read."""


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """'off' -> 0; '90', '90s', '10m', '12h', '7d', '2w' -> seconds."""
    value = text.strip().lower()
    if value in ("off", "0", "never"):
        return 0
    number, unit = (value[:-1], value[-1]) if value[-1:] in _UNITS else (value, "s")
    if not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a duration like 30s, 10m, 7d")
    return int(number) * _UNITS[unit]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onionmsg",
        description="A serverless, metadata-resistant messenger over Tor onion services.",
    )
    parser.add_argument("--version", action="version", version=f"onionmsg {__version__}")
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="where this user's data lives (env ONIONMSG_HOME; default: the platform's "
        "user data directory)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug diagnostics")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def passphrase_options(sub: argparse.ArgumentParser, allow_none: bool) -> None:
        group = sub.add_mutually_exclusive_group()
        group.add_argument(
            "--passphrase-file",
            type=Path,
            help=f"read the passphrase from this file's first line (env {PASSPHRASE_FILE_ENV})",
        )
        if allow_none:
            group.add_argument(
                "--no-passphrase",
                action="store_true",
                help="store everything unprotected (anyone with the disk can read it)",
            )

    init = commands.add_parser("init", help="create your identity (your onion address)")
    passphrase_options(init, allow_none=True)

    address = commands.add_parser("address", help="print your onion address")
    address.add_argument(
        "--contact",
        action="store_true",
        help="print your signed onionmsg: contact string (onion address and I2P destination)",
    )
    passphrase_options(address, allow_none=False)

    passwd = commands.add_parser("passwd", help="change the passphrase (re-keys the store)")
    passphrase_options(passwd, allow_none=False)
    new = passwd.add_mutually_exclusive_group()
    new.add_argument(
        "--new-passphrase-file",
        type=Path,
        metavar="F",
        help="read the new passphrase from this file's first line",
    )
    new.add_argument(
        "--no-passphrase",
        action="store_true",
        help="remove the passphrase (anyone with the disk can then read everything)",
    )

    daemon = commands.add_parser("daemon", help="run your node")
    daemon.add_argument(
        "--transport",
        type=_transport_list,
        default="tor",
        metavar="NAMES",
        help="tor (default), i2p, or both as a list in order of preference (tor,i2p): "
        "reachable over each, contacts dialled over the first that works; tcp is for "
        "development on one machine",
    )
    daemon.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="where the tcp transport listens (default: a free port on 127.0.0.1)",
    )
    tor_source = daemon.add_mutually_exclusive_group()
    tor_source.add_argument(
        "--tor-control",
        metavar="ENDPOINT",
        help="use a running tor's control port: tcp:HOST:PORT, unix:/PATH, or 'auto' to try "
        "the usual ones",
    )
    tor_source.add_argument(
        "--launch-tor",
        action="store_true",
        help="launch a private tor with its data in the home (the default)",
    )
    daemon.add_argument(
        "--tor-password-file",
        type=Path,
        metavar="F",
        help="the control port's password, if it uses one",
    )
    daemon.add_argument("--tor-binary", metavar="PATH", help="the tor to launch")
    daemon.add_argument(
        "--i2p-sam",
        metavar="HOST:PORT",
        default="127.0.0.1:7656",
        help="the I2P router's SAM bridge for --transport i2p: HOST:PORT or unix:/PATH "
        "(default: 127.0.0.1:7656)",
    )
    daemon.add_argument(
        "--i2p-tunnel-length",
        type=int,
        choices=range(8),
        default=3,
        metavar="HOPS",
        help="hops per I2P tunnel (default 3; 0 only for a private test router)",
    )
    daemon.add_argument(
        "--cover",
        choices=sorted(PROFILES),
        default=DEFAULT_PROFILE,
        help=f"cover-traffic profile (default: {DEFAULT_PROFILE}; off sends at once)",
    )
    daemon.add_argument(
        "--cover-rate",
        type=float,
        metavar="CELLS_PER_S",
        help="custom payload-stream rate (overrides --cover's)",
    )
    daemon.add_argument(
        "--loop-rate", type=float, metavar="CELLS_PER_S", help="custom loop-stream rate"
    )
    passphrase_options(daemon, allow_none=False)

    ui = commands.add_parser(
        "ui",
        parents=[daemon],  # the in-process node's options, used when no daemon runs
        add_help=False,
        help="the console UI (the default command): attaches to the running daemon, or "
        "runs your node in-process while it is open",
    )
    ui.add_argument(
        "--theme",
        choices=["dark", "light", "no-colour"],
        help="colours (default: dark; no-colour when NO_COLOR is set)",
    )

    status = commands.add_parser("status", help="what the running daemon is doing")
    status.add_argument("--json", action="store_true")

    contacts = commands.add_parser("contacts", help="list or add contacts")
    contact_commands = contacts.add_subparsers(
        dest="contacts_command", metavar="ACTION", required=True
    )
    add = contact_commands.add_parser(
        "add", help="add a contact by onion address or onionmsg: contact string"
    )
    add.add_argument(
        "address",
        metavar="ADDRESS",
        help="an onion address, or a contact's onionmsg: string (its signature is checked)",
    )
    add.add_argument("--name", help="a name of your choosing for this contact")
    add.add_argument(
        "--tcp", metavar="HOST:PORT", help="(development) the contact's tcp transport endpoint"
    )
    add.add_argument(
        "--message",
        default="",
        help="a short note shown to them with your contact request (if they don't know you)",
    )
    for action, text in (
        ("block", "refuse a contact (or any address): nothing in, nothing out, no requests"),
        ("unblock", "undo block"),
    ):
        blocking = contact_commands.add_parser(action, help=text)
        blocking.add_argument("contact", metavar="CONTACT", help="a contact's name or address")
    verify = contact_commands.add_parser(
        "verify", help="show the safety number to compare with a contact, and mark them verified"
    )
    verify.add_argument("contact", metavar="CONTACT", help="a contact's name or address")
    verify.add_argument(
        "--yes", action="store_true", help="the numbers match: mark verified without asking"
    )
    expire = contact_commands.add_parser(
        "expire", help="delete messages with a contact, on both sides, some time after storing"
    )
    expire.add_argument("contact", metavar="CONTACT", help="a contact's name or address")
    expire.add_argument(
        "duration",
        metavar="DURATION",
        type=parse_duration,
        help="e.g. 30s, 10m, 12h, 7d, or 'off'",
    )
    listing = contact_commands.add_parser("list", help="list contacts")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    export = commands.add_parser(
        "export", help="write an encrypted backup of your identity and contacts to FILE"
    )
    export.add_argument("file", metavar="FILE", type=Path)
    export.add_argument("--history", action="store_true", help="include the message history")
    passphrase_options(export, allow_none=False)
    export.add_argument(
        "--backup-passphrase-file",
        type=Path,
        metavar="F",
        help="read the backup's passphrase from this file's first line",
    )
    restore = commands.add_parser(
        "import", help="restore a backup written by 'export' into a new home"
    )
    restore.add_argument("file", metavar="FILE", type=Path)
    restore.add_argument(
        "--home", type=Path, default=argparse.SUPPRESS, help="the new home (as onionmsg --home)"
    )
    passphrase_options(restore, allow_none=True)
    restore.add_argument(
        "--backup-passphrase-file",
        type=Path,
        metavar="F",
        help="read the backup's passphrase from this file's first line",
    )

    requests = commands.add_parser(
        "requests", help="contact requests from people you have not added (list, answer)"
    )
    requests.add_argument("--json", action="store_true", help="one JSON object per line")
    request_commands = requests.add_subparsers(dest="requests_command", metavar="ACTION")
    for action, text in (
        ("accept", "make the requester a contact"),
        ("reject", "drop the request (their requests are ignored for a week)"),
        ("block", "drop the request and everything from that address, for good"),
    ):
        answer = request_commands.add_parser(action, help=text)
        answer.add_argument("id", metavar="ID", type=int, help="the request's id")
        if action == "accept":
            answer.add_argument("--name", help="a name of your choosing for this contact")

    settings = commands.add_parser("settings", help="change a setting of the running daemon")
    setting_commands = settings.add_subparsers(dest="setting", metavar="SETTING", required=True)
    block_unknown = setting_commands.add_parser(
        "block-unknown", help="on: refuse every contact request (contacts still reach you)"
    )
    block_unknown.add_argument("value", choices=("on", "off"))
    invisible = setting_commands.add_parser(
        "invisible",
        help="on: withdraw your public address (no new requests, not seen online by it); "
        "contacts reach you through their endpoint onions",
    )
    invisible.add_argument("value", choices=("on", "off"))

    send = commands.add_parser("send", help="send a message")
    send.add_argument("contact", metavar="CONTACT", help="a contact's name or onion address")
    send.add_argument("text", metavar="TEXT", help="the message ('-' reads it from stdin)")

    testnet = commands.add_parser(
        "testnet",
        help="a private Tor network on 127.0.0.1 for development (up|down|status)",
        add_help=False,
    )
    testnet.add_argument("testnet_args", nargs=argparse.REMAINDER)

    messages = commands.add_parser("messages", help="print the message history")
    messages.add_argument("--json", action="store_true", help="one JSON object per line")
    messages.add_argument("--follow", action="store_true", help="keep printing as they come")
    messages.add_argument("--contact", help="only this contact's conversation")
    return parser


def _read_passphrase(
    args: argparse.Namespace, *, confirm: bool, prompt: str = "Passphrase"
) -> bytes:
    path = args.passphrase_file
    if path is None and prompt == "Passphrase" and os.environ.get(PASSPHRASE_FILE_ENV):
        path = Path(os.environ[PASSPHRASE_FILE_ENV])
    if path is not None:
        try:
            data: bytes = path.read_bytes()
        except OSError as error:
            raise PassphraseError(
                f"cannot read the passphrase file {path}: {error.strerror}"
            ) from None
        passphrase = data.split(b"\n", 1)[0].rstrip(b"\r")
    elif sys.stdin.isatty():
        passphrase = getpass.getpass(f"{prompt}: ").encode("utf-8")
        if confirm and getpass.getpass(f"{prompt} again: ").encode("utf-8") != passphrase:
            raise PassphraseError("the two passphrases differ")
    else:
        raise PassphraseError(
            "no passphrase: use --passphrase-file F, set ONIONMSG_PASSPHRASE_FILE, or run "
            "on a terminal"
        )
    if not passphrase:
        hint = " (use --no-passphrase to go without)" if prompt != "Backup passphrase" else ""
        raise PassphraseError(f"the {prompt.lower()} is empty{hint}")
    return passphrase


def _open_store(home: Home, args: argparse.Namespace, *, read_only: bool = False) -> Store:
    home.check_private()
    params = KeyParams.load(home.keyfile_path)
    pending = (
        KeyParams.load(home.pending_keyfile_path) if home.pending_keyfile_path.exists() else None
    )
    if not params.passphrase:
        # A store without a passphrase opens without asking, even if an interrupted
        # 'passwd' that was adding one left its new parameters behind before re-keying.
        try:
            return Store.open_with_passphrase(home.store_path, params, None, read_only=read_only)
        except WrongPassphraseError:
            if pending is None:
                raise
        passphrase = _read_passphrase(args, confirm=False) if pending.passphrase else None
    else:
        passphrase = _read_passphrase(args, confirm=False)
        try:
            return Store.open_with_passphrase(
                home.store_path, params, passphrase, read_only=read_only
            )
        except WrongPassphraseError:
            if pending is None:
                raise
    # A 'passwd' was interrupted after re-keying the store: the new parameters apply.
    store = Store.open_with_passphrase(home.store_path, pending, passphrase, read_only=read_only)
    if read_only:
        return store  # the next command that may write finishes the swap
    os.replace(home.pending_keyfile_path, home.keyfile_path)
    fsync_directory(home.root)
    return store


def cmd_passwd(home: Home, args: argparse.Namespace) -> int:
    lock = home.lock()  # no daemon may hold the store open while it is re-keyed
    try:
        store = _open_store(home, args)
        try:
            if args.no_passphrase:
                new_passphrase = None
            else:
                new_args = argparse.Namespace(passphrase_file=args.new_passphrase_file)
                new_passphrase = _read_passphrase(new_args, confirm=True, prompt="New passphrase")
            params = KeyParams.new(passphrase=new_passphrase is not None)
            new_key = params.derive(new_passphrase)
            # Crash-safe order: new parameters beside the old, re-key, then swap them in.
            params.save(home.pending_keyfile_path)
            store.rekey(new_key)
        finally:
            store.close()
        os.replace(home.pending_keyfile_path, home.keyfile_path)
        fsync_directory(home.root)
    finally:
        os.close(lock)
    if new_passphrase is None:
        print(_UNPROTECTED, file=sys.stderr)
    print("passphrase changed", file=sys.stderr)
    return 0


def cmd_init(home: Home, args: argparse.Namespace) -> int:
    if home.exists() or home.store_path.exists():
        raise HomeError(f"{home.root} already holds an identity: refusing to overwrite it")
    passphrase = None if args.no_passphrase else _read_passphrase(args, confirm=True)
    params = KeyParams.new(passphrase=passphrase is not None)
    key = params.derive(passphrase)
    home.create()
    identity = Identity.generate()
    store = Store.create(home.store_path, key, identity)
    store.close()
    params.save(home.keyfile_path)
    if passphrase is None:
        print(_UNPROTECTED, file=sys.stderr)
    print(identity.onion_address)
    return 0


_UNPROTECTED = (
    "warning: this identity is stored without a passphrase: anyone with this disk can read "
    "it, your contacts and your messages"
)


def cmd_address(home: Home, args: argparse.Namespace) -> int:
    try:
        with ControlClient(home.control_socket) as client:
            status = client.call("status")
        print(status["contact"] if args.contact else status["address"])
        if not status["passphrase"]:
            print(_UNPROTECTED, file=sys.stderr)
        return 0
    except DaemonNotRunning:
        pass
    store = _open_store(home, args)
    try:
        if args.contact:
            print(own_contact_string(store))
        else:
            print(store.identity().onion_address)
    finally:
        store.close()
    if not KeyParams.load(home.keyfile_path).passphrase:
        print(_UNPROTECTED, file=sys.stderr)
    return 0


def _cover_profile(name: str, payload_rate: float | None, loop_rate: float | None) -> Profile:
    profile = PROFILES[name]
    if payload_rate is None and loop_rate is None:
        return profile
    payload = profile.payload_rate if payload_rate is None else payload_rate
    loop = profile.loop_rate if loop_rate is None else loop_rate
    if payload < 0 or loop < 0 or payload > 100 or loop > 100:
        raise UsageError("cover rates are between 0 and 100 cells per second")
    return Profile("custom", payload, loop)


class UsageError(OnionmsgError):
    """The command line asks for something impossible."""


TRANSPORTS = ("tor", "i2p", "tcp")


def _transport_list(text: str) -> str:
    """``--transport``: one of TRANSPORTS or a comma list of them, each at most once."""
    names = text.split(",")
    unknown = [name for name in names if name not in TRANSPORTS]
    if unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"{text!r}: use tor, i2p or tcp, or several, each once, in order of preference "
            "(tor,i2p)"
        )
    return text


def _daemon_options(args: argparse.Namespace) -> Any:
    from onionmsg.daemon import DaemonOptions

    return DaemonOptions(
        args.transport,
        args.listen,
        args.verbose,
        tor_control=args.tor_control,
        tor_password_file=args.tor_password_file,
        tor_binary=args.tor_binary,
        cover=_cover_profile(args.cover, args.cover_rate, args.loop_rate),
        i2p_sam=args.i2p_sam,
        i2p_tunnel_length=args.i2p_tunnel_length,
    )


def cmd_ui(home: Home, args: argparse.Namespace) -> int:
    from onionmsg.ui.app import run_ui

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("the console UI needs a terminal (scripts: see 'onionmsg --help')")
    theme = args.theme or ("no-colour" if os.environ.get("NO_COLOR") else "dark")
    try:
        ControlClient(home.control_socket).close()
        store = None  # a daemon runs: attach to it
    except DaemonNotRunning:
        store = _open_store(home, args)  # asks for the passphrase before the UI starts
    return run_ui(home, store, _daemon_options(args), theme)


def cmd_daemon(home: Home, args: argparse.Namespace) -> int:
    from twisted.internet import defer, task

    from onionmsg.daemon import run_daemon, start_logging

    store = _open_store(home, args)
    options = _daemon_options(args)
    start_logging(sys.stderr, args.verbose)
    failure: list[OnionmsgError] = []

    async def main(reactor: Any) -> None:
        try:
            await run_daemon(reactor, home, store, options)
        except OnionmsgError as error:
            failure.append(error)

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit as exit_:
        if failure:
            raise failure[0] from None
        return int(exit_.code or 0)


def _print_json(document: Any) -> None:
    print(json.dumps(document, ensure_ascii=False), flush=True)


def _rate(cells_per_s: float) -> str:
    return "off" if cells_per_s == 0 else f"1 cell every {1 / cells_per_s:.3g} s"


def _transports(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each transport's own status snapshot by name (several with --transport tor,i2p)."""
    network = status["network"]
    members = network.get("transports")
    if isinstance(members, dict):
        return members
    return {str(status.get("transport", "?")): network}


def _network_state(network: dict[str, Any]) -> str:
    """One transport's state for people: tor's bootstrap, or the I2P router's readiness."""
    state = str(network.get("state", "?"))
    details: list[str] = []
    if "bootstrap_percent" in network:
        details.append(f"tor bootstrap {network['bootstrap_percent']}%")
    if "router_reachable" in network:
        details.append("router " + ("reachable" if network["router_reachable"] else "unreachable"))
        details.append("session " + ("ready" if network.get("session_ready") else "not ready"))
        details.append("tunnels " + ("ready" if network.get("tunnels_ready") else "not ready"))
    if network.get("error"):
        details.append(str(network["error"]))
    return state + (f" ({', '.join(details)})" if details else "")


def _network_lines(status: dict[str, Any]) -> list[str]:
    members = _transports(status)
    if len(members) == 1:
        (network,) = members.values()
        return [f"network:   {_network_state(network)}"]
    return [
        f"{'network:' if i == 0 else '':<10} {name}: {_network_state(network)}"
        for i, (name, network) in enumerate(members.items())
    ]


def _onion_lines(status: dict[str, Any]) -> list[str]:
    """Tor only: the identity onion (or invisible), its proof of work, endpoint onions."""
    network = _transports(status).get("tor", {})
    if "pow" not in network:
        return []
    if status.get("invisible"):
        identity = "withdrawn (invisible): contacts reach you by endpoint onions"
    else:
        identity = f"published; proof-of-work defence {network['pow']}"
    return [
        f"identity:  {identity}",
        f"endpoints: {network['endpoints']} endpoint onions "
        f"({network['endpoints_uploaded']} uploaded), {network['client_auth']} client keys",
    ]


def describe_status(status: dict[str, Any]) -> str:
    """The ``status`` snapshot for people (``--json`` gives all of it to scripts)."""
    cover = status["cover"]
    if cover["payload_rate"] == 0:
        cover_line = f"{cover['profile']}: cells leave at once, no cover traffic"
    else:
        cover_line = (
            f"{cover['profile']}: {_rate(cover['payload_rate'])}, "
            f"loop {_rate(cover['loop_rate'])}; "
            f"{cover['bytes_per_day'] / 1e6:.3g} MB/day; "
            f"mean extra wait {cover['expected_latency_s']:.3g} s"
        )
    lines = [
        f"address:   {status['address']}.onion",
        f"listening: {status['listening']}",
        *_network_lines(status),
        f"contacts:  {status['contacts']} ({status['online']} online)",
        f"requests:  {status['requests']} pending"
        + ("; refusing new ones (block-unknown)" if status["block_unknown"] else ""),
        *(_onion_lines(status)),
        f"cover:     {cover_line}",
        f"queue:     {cover['queued_cells']} cells (oldest {cover['oldest_queued_s']:.3g} s)",
        f"store:     {'passphrase-protected' if status['passphrase'] else 'NOT protected'}",
    ]
    twin = status.get("twin")
    if twin:
        lines.append(
            f"WARNING:   another running instance of this identity reached us "
            f"({twin['links']} times, last {twin['last_seen']}): stop one of them"
        )
    return "\n".join(lines)


def cmd_status(home: Home, args: argparse.Namespace) -> int:
    with ControlClient(home.control_socket) as client:
        status = client.call("status")
    if args.json:
        _print_json(status)
    else:
        print(describe_status(status))
    if not status["passphrase"]:
        print(_UNPROTECTED, file=sys.stderr)
    return 0


def cmd_contacts(home: Home, args: argparse.Namespace) -> int:
    with ControlClient(home.control_socket) as client:
        if args.contacts_command == "add":
            contact = client.call(
                "contacts.add",
                address=args.address,
                name=args.name,
                tcp=args.tcp,
                message=args.message,
            )
            print(f"added {contact['name']} ({contact['address']})")
            if not contact["accepted"]:
                print(
                    "They see your request the next time both of you are online; "
                    "messages wait until they accept."
                )
            return 0
        if args.contacts_command in ("block", "unblock"):
            result = client.call(f"contacts.{args.contacts_command}", contact=args.contact)
            print(f"{args.contacts_command}ed {result.get('name', result['address'])}")
            return 0
        if args.contacts_command == "verify":
            return _verify(client, args)
        if args.contacts_command == "expire":
            contact = client.call("contacts.expire", contact=args.contact, seconds=args.duration)
            when = f"{args.duration} s after they are stored" if args.duration else "never"
            print(f"messages with {contact['name']} sent from now on expire: {when}")
            return 0
        for contact in client.call("contacts.list"):
            if args.json:
                _print_json(contact)
            else:
                state = "offline"
                if contact["online"]:
                    via = contact.get("transport")
                    state = f"online over {via}" if via else "online"
                if contact["blocked"]:
                    state = "blocked"
                elif not contact["accepted"]:
                    state += ", request not answered yet"
                mark = "  verified" if contact["verified"] else ""
                print(f"{contact['name']:<20} {contact['address']}  {state}{mark}")
    return 0


def cmd_requests(home: Home, args: argparse.Namespace) -> int:
    with ControlClient(home.control_socket) as client:
        if args.requests_command is None:
            for request in client.call("requests.list"):
                if args.json:
                    _print_json(request)
                else:
                    # The note is a stranger's text: shown as a repr, so nothing in it can
                    # act on the terminal.
                    print(f"{request['id']:>4}  {request['time']}  {request['address']}")
                    if request["message"]:
                        print(f"      {request['message']!r}")
            return 0
        params: dict[str, Any] = {"id": args.id}
        if args.requests_command == "accept" and args.name:
            params["name"] = args.name
        result = client.call(f"requests.{args.requests_command}", **params)
    if args.requests_command == "accept":
        print(f"accepted: {result['name']} ({result['address']}) is a contact now")
    else:
        print(f"request {args.id}: {result['state']}")
    return 0


def cmd_settings(home: Home, args: argparse.Namespace) -> int:
    with ControlClient(home.control_socket) as client:
        client.call(f"settings.{args.setting.replace('-', '_')}", on=args.value == "on")
    print(f"{args.setting}: {args.value}")
    return 0


def _verify(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.call("contacts.verify", contact=args.contact, confirm=False)
    print(f"Safety number for you and {result['name']}:\n\n    {result['safety_number']}\n")
    print(
        f"Compare it with the number {result['name']} sees, in person or over a channel you "
        "trust. If they are the same, nobody stands between you."
    )
    confirm = args.yes
    if not confirm and sys.stdin.isatty():
        confirm = input("Do the numbers match? [y/N] ").strip().lower() in ("y", "yes")
    if confirm:
        client.call("contacts.verify", contact=args.contact, confirm=True)
        print(f"{result['name']} is now marked verified.")
    elif not args.yes:
        print("Not marked verified (run again with --yes once you have compared them).")
    return 0


def cmd_send(home: Home, args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    with ControlClient(home.control_socket) as client:
        message = client.call("send", contact=args.contact, text=text)
    print(message["id"])
    return 0


def _print_message(message: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json({k: v for k, v in message.items() if k != "event"})
        return
    arrow = "->" if message["direction"] == "out" else "<-"
    status = f" [{message['status']}]" if message["direction"] == "out" else ""
    # Peers choose this text: never let it drive the terminal.
    text = "".join(
        ch if ch.isprintable() or ch == "\n" else repr(ch)[1:-1] for ch in message["text"]
    )
    print(f"{message['time']} {arrow} {message['contact']}{status}: {text}", flush=True)


def cmd_messages(home: Home, args: argparse.Namespace) -> int:
    with ControlClient(home.control_socket, timeout=None if args.follow else 30.0) as client:
        if args.follow:
            client.call("subscribe")
        last = 0
        for message in client.call("messages", contact=args.contact):
            _print_message(message, args.json)
            last = max(last, message["seq"])
        if args.follow:
            for event in client.events():
                if event.get("event") != "message":
                    continue
                if args.contact and args.contact not in (event["contact"], event["address"]):
                    continue
                if event["direction"] == "in" and event["seq"] <= last:
                    continue
                _print_message(event, args.json)
    return 0


def _backup_passphrase(args: argparse.Namespace, *, confirm: bool) -> bytes:
    source = argparse.Namespace(passphrase_file=args.backup_passphrase_file)
    return _read_passphrase(source, confirm=confirm, prompt="Backup passphrase")


def cmd_export(home: Home, args: argparse.Namespace) -> int:
    """Read-only beside a running daemon: see docs/usage.md ("Backup and restore")."""
    from onionmsg.backup import seal_backup, take_backup

    store = _open_store(home, args, read_only=True)
    try:
        backup = take_backup(store, history=args.history, now_ms=time.time_ns() // 1_000_000)
    finally:
        store.close()
    data = seal_backup(backup, _backup_passphrase(args, confirm=True))
    try:
        write_private_file(args.file, data)
    except OSError as error:
        raise HomeError(f"cannot write {args.file}: {error.strerror}") from None
    contacts, messages = (backup.table(n) for n in ("contacts", "messages"))
    what = f"{len(contacts.rows) if contacts else 0} contacts"
    if messages is not None:
        what += f", {len(messages.rows)} messages"
    print(
        f"backup of {backup.identity.onion_address} ({what}) written to {args.file}; "
        "anyone with this file and its passphrase can be you: keep both apart and safe",
        file=sys.stderr,
    )
    return 0


def cmd_import(home: Home, args: argparse.Namespace) -> int:
    from onionmsg.backup import check_header, open_backup, restore_backup

    if home.root.exists() and (not home.root.is_dir() or any(home.root.iterdir())):
        raise HomeError(f"{home.root} is not empty: a backup is restored into a new home only")
    try:
        data = args.file.read_bytes()
    except OSError as error:
        raise HomeError(f"cannot read {args.file}: {error.strerror}") from None
    check_header(data)  # a clear error before any passphrase is asked for
    backup = open_backup(data, _backup_passphrase(args, confirm=False))
    passphrase = None if args.no_passphrase else _read_passphrase(args, confirm=True)
    params = KeyParams.new(passphrase=passphrase is not None)
    key = params.derive(passphrase)
    created = not home.root.exists()
    home.create()
    try:
        store = Store.create(home.store_path, key, backup.identity)
        try:
            restore_backup(store, backup, now_ms=time.time_ns() // 1_000_000)
        finally:
            store.close()
        params.save(home.keyfile_path)
    except BaseException:
        # Leave the home as we found it: nothing half restored.
        for leftover in home.root.iterdir():
            leftover.unlink()
        if created:
            home.root.rmdir()
        raise
    if passphrase is None:
        print(_UNPROTECTED, file=sys.stderr)
    print(
        "restored; every contact gets a new encrypted session when you next connect. "
        "Run this identity on one machine only: stop the daemon of any other copy first",
        file=sys.stderr,
    )
    print(backup.identity.onion_address)
    return 0


def cmd_testnet(home: Home, args: argparse.Namespace) -> int:
    from onionmsg import testnet

    return testnet.main(args.testnet_args)


COMMANDS = {
    "testnet": cmd_testnet,
    "init": cmd_init,
    "address": cmd_address,
    "daemon": cmd_daemon,
    "passwd": cmd_passwd,
    "status": cmd_status,
    "contacts": cmd_contacts,
    "requests": cmd_requests,
    "settings": cmd_settings,
    "send": cmd_send,
    "export": cmd_export,
    "import": cmd_import,
    "messages": cmd_messages,
    "ui": cmd_ui,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:  # no command: the console UI
        args = parser.parse_args([*(sys.argv[1:] if argv is None else argv), "ui"])
    home = Home(args.home or default_home())
    # Everything we create (store, its WAL, sockets, tor's data) is private to the user.
    os.umask(0o077)
    try:
        return COMMANDS[args.command](home, args)
    except OnionmsgError as error:
        print(f"onionmsg: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
