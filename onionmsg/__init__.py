"""onionmsg: a serverless, metadata-resistant messenger over Tor onion services."""

__version__ = "0.1.0"
