"""``python -m onionmsg`` is the ``onionmsg`` command."""

from onionmsg.cli import main

raise SystemExit(main())
