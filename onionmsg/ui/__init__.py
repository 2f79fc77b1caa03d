"""onionmsg.ui."""
