"""The resend timer: fires while something is unacknowledged, backs off, stops when done."""

from __future__ import annotations

import random

from twisted.internet.task import Clock

from onionmsg.delivery.retry import FIRST_RETRY, JITTER, MAX_RETRY, RetryTimer


def test_backoff_until_acknowledged() -> None:
    clock = Clock()
    fired: list[float] = []
    pending = [True]

    def resend() -> bool:
        fired.append(clock.seconds())
        return pending[0]

    timer = RetryTimer(clock, resend, random.Random(3))
    timer.arm()
    timer.arm()  # arming twice schedules one check
    assert len(clock.getDelayedCalls()) == 1
    for _ in range(7200):
        clock.advance(1)
    gaps = [b - a for a, b in zip([0.0, *fired], fired, strict=False)]
    for i, gap in enumerate(gaps):
        expected = min(MAX_RETRY, FIRST_RETRY * 2**i)
        assert expected * (1 - JITTER) - 1 <= gap <= expected * (1 + JITTER) + 1
    pending[0] = False
    clock.advance(MAX_RETRY * 2)
    count = len(fired)
    clock.advance(MAX_RETRY * 10)
    assert len(fired) == count  # nothing unacknowledged: the timer stopped
    assert not clock.getDelayedCalls()


def test_cancel() -> None:
    clock = Clock()
    timer = RetryTimer(clock, lambda: True, random.Random(1))
    timer.arm()
    timer.cancel()
    assert not clock.getDelayedCalls()


def test_the_first_wait_follows_what_the_node_says_at_each_arming() -> None:
    clock = Clock()
    first = [180.0]  # e.g. the `low` cover profile: a message and its Ack wait ~60 s
    fired: list[float] = []

    def resend() -> bool:
        fired.append(clock.seconds())
        return False  # acknowledged: no backoff, the next arming starts over

    timer = RetryTimer(clock, resend, random.Random(1), lambda: first[0])
    timer.arm()
    clock.advance(180 * (1 - JITTER) - 1)
    assert fired == []
    clock.advance(180 * 2 * JITTER + 2)
    assert len(fired) == 1
    first[0] = 15.0  # the profile changed to `high`
    timer.arm()
    clock.advance(15 * (1 + JITTER) + 1)
    assert len(fired) == 2
