"""Shared integration fixtures: a private Tor network on 127.0.0.1 for the whole session,
a private i2pd for each module that asks for one."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from integration.users import User
from onionmsg.i2ptestnet import I2PRouter
from onionmsg.testnet import TestNet


@pytest.fixture(scope="session")
def tor_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNet]:
    """3 authorities, 2 relays and 2 bootstrapped client tors (client1, client2).

    The tors die with this pytest process even if teardown never runs.
    """
    net = TestNet(tmp_path_factory.mktemp("tornet"), owner_pid=os.getpid())
    net.up()
    try:
        yield net
    finally:
        net.down()


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[I2PRouter]:
    """One private i2pd (loopback-only network namespace) per test module: i2pd answers
    SESSION CREATE only on its 20 s readiness poll, so a module's users share it."""
    router = I2PRouter(tmp_path_factory.mktemp("i2pd"))
    router.start()
    try:
        yield router
    finally:
        router.stop()


@pytest.fixture
def users() -> Iterator[list[User]]:
    """Users a test started; their daemons are killed when it ends, whatever happened."""
    started: list[User] = []
    yield started
    for user in started:
        if user.daemon is not None:
            user.daemon.kill()
            user.daemon.wait()
