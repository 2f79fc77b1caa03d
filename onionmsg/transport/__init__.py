"""onionmsg.transport."""
