"""onionmsg.delivery."""
