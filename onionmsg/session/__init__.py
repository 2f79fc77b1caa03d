"""onionmsg.session."""
