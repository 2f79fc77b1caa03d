"""The error types users and peers can cause; one place, with user-facing docstrings."""


class OnionmsgError(Exception):
    """Base of every error onionmsg reports to a user."""


class ProtocolError(OnionmsgError):
    """A peer sent bytes that break the protocol; only that link is closed."""


class AddressError(OnionmsgError, ValueError):
    """The text is not a valid Tor v3 onion address."""
