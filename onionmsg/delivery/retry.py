"""Resending unacknowledged envelopes on a live link, with backoff and jitter (sans-IO).

A link delivers in order, so a lost envelope is rare on a live link; but a peer that could
not open one (or crashed after reading it) never acknowledges it. The node re-arms this
timer whenever it sends; when it fires and envelopes are still unacknowledged, the node
sends them again (the peer deduplicates by id) and the next wait doubles, up to a cap.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

FIRST_RETRY = 15.0
MAX_RETRY = 600.0
JITTER = 0.25


class RetryTimer:
    def __init__(
        self,
        clock: IReactorTime,
        resend: Callable[[], bool],
        rng: random.Random,
        first: Callable[[], float] = lambda: FIRST_RETRY,
    ) -> None:
        """``resend`` sends what is unacknowledged and says whether there was anything;
        ``first`` gives the first wait (it may change: the cover profile sets it)."""
        self._clock = clock
        self._resend = resend
        self._rng = rng
        self._first = first
        self._delay = first()
        self._call: IDelayedCall | None = None

    def arm(self) -> None:
        """Something was sent: make sure a check is scheduled (backoff starts over)."""
        self._delay = self._first()
        if self._call is None or not self._call.active():
            self._schedule()

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self) -> None:
        wait = self._delay * (1 + self._rng.uniform(-JITTER, JITTER))
        self._call = self._clock.callLater(wait, self._fire)

    def _fire(self) -> None:
        self._call = None
        if self._resend():
            self._delay = min(MAX_RETRY, self._delay * 2)
            self._schedule()
