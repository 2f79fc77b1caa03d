"""onionmsg.wire."""
