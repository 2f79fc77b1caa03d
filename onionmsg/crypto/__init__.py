"""onionmsg.crypto."""
