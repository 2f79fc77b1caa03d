"""onionmsg.store."""
