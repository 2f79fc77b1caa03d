"""onionmsg.contacts."""
