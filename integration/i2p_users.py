"""Users whose daemons reach the module's private i2pd (conftest.py's ``router``)."""

from __future__ import annotations

import os
import shutil

import pytest

from onionmsg.i2ptestnet import I2PRouter

needs_i2pd = pytest.mark.skipif(
    shutil.which("i2pd") is None and not os.path.exists("/usr/sbin/i2pd"),
    reason="i2pd is not installed (make system-deps)",
)


def i2p_options(router: I2PRouter) -> tuple[str, ...]:
    """The daemon options for the private router (zero-hop tunnels: the only kind one
    router on its own can build)."""
    return ("--i2p-sam", router.sam, "--i2p-tunnel-length", "0")
