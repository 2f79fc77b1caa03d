"""A token bucket on an injected clock (sans-IO): how much a peer may make us do."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime


class TokenBucket:
    """``burst`` at once, then one more every ``interval`` seconds."""

    def __init__(self, clock: IReactorTime, burst: int, interval: float) -> None:
        self._clock = clock
        self._burst = burst
        self._interval = interval
        self._tokens = float(burst)
        self._last = clock.seconds()

    def allow(self) -> bool:
        now = self._clock.seconds()
        self._tokens = min(self._burst, self._tokens + (now - self._last) / self._interval)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
