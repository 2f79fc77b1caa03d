"""onionmsg.control."""
