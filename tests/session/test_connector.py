"""The per-contact connection policy, driven by a fake clock."""

from __future__ import annotations

import itertools
import random

from twisted.internet.task import Clock

from onionmsg.session.connector import FIRST_RETRY, JITTER, MAX_RETRY, Connector


def make() -> tuple[Connector, Clock, list[float]]:
    clock = Clock()
    dials: list[float] = []
    rng = random.Random(1)
    connector = Connector(clock, lambda: dials.append(clock.seconds()), rng)
    return connector, clock, dials


def test_start_dials_at_once() -> None:
    connector, _clock, dials = make()
    connector.start()
    assert dials == [0.0]
    assert connector.state == "dialing"


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    connector, clock, dials = make()
    connector.start()
    for attempt in range(10):
        connector.dial_failed()
        while len(dials) == attempt + 1:
            clock.advance(0.01)
    delays = [b - a for a, b in itertools.pairwise(dials)]
    assert len(delays) == 10
    for i, delay in enumerate(delays):
        expected = min(MAX_RETRY, FIRST_RETRY * 2**i)
        assert expected * (1 - JITTER) - 0.02 <= delay <= expected * (1 + JITTER) + 0.02
    assert max(delays) <= MAX_RETRY * (1 + JITTER) + 0.02


def test_success_resets_backoff_and_drop_redials_soon() -> None:
    connector, clock, dials = make()
    connector.start()
    for _ in range(5):
        connector.dial_failed()
        clock.advance(100)
    connector.link_established()
    assert connector.state == "connected"
    n = len(dials)
    clock.advance(1000)
    assert len(dials) == n  # nothing while connected
    connector.link_lost()
    clock.advance(1.0)
    assert len(dials) == n + 1
    connector.dial_failed()
    clock.advance(FIRST_RETRY * (1 + JITTER))
    assert len(dials) == n + 2  # backoff started over


def test_inbound_link_cancels_the_pending_retry() -> None:
    connector, clock, dials = make()
    connector.start()
    connector.dial_failed()
    connector.link_established()
    clock.advance(1000)
    assert dials == [0.0]
    assert not clock.getDelayedCalls()


def test_retry_now_skips_the_wait() -> None:
    connector, _clock, dials = make()
    connector.start()
    connector.dial_failed()
    connector.retry_now()
    assert len(dials) == 2
    connector.retry_now()  # already dialing: no second dial
    assert len(dials) == 2


def test_stop_cancels_everything() -> None:
    connector, clock, dials = make()
    connector.start()
    connector.dial_failed()
    connector.stop()
    clock.advance(1000)
    assert dials == [0.0]
    assert connector.state == "stopped"
    connector.dial_failed()  # late results after stop are ignored
    connector.link_lost()
    assert not clock.getDelayedCalls()
