"""onionmsg.mix."""
