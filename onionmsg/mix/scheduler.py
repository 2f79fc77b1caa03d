"""When cells leave: one payload stream and one loop stream per node, after Loopix (sans-IO).

The scheduler owns no socket. Driven by an injected clock and RNG, it decides at each
event of its payload stream which cell goes where:

* the next *real* cell, oldest first across all contacts (one queue per node, so a
  chatty contact cannot starve the others and the cost does not grow with contacts);
* otherwise a *drop* cell to a connected contact chosen at random, which the contact
  discards: on the wire both are one encrypted 996-byte cell;

and at each event of its loop stream, a loop cell to the node's own address.

Payload events are a Poisson process of rate ``payload_rate`` (exponential gaps) or, in
``constant`` mode, fixed ticks every ``1/payload_rate`` (batching rounds). With the
``off`` profile real cells leave at once and nothing else is sent.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from onionmsg.wire.cells import CELL_SIZE

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Profile:
    """A cover-traffic budget. Rates are cells per second; 0 turns a stream off."""

    name: str
    payload_rate: float
    loop_rate: float
    constant: bool = False

    @property
    def immediate(self) -> bool:
        return self.payload_rate == 0

    def bytes_per_day(self) -> float:
        """Cells this node sends per day, in bytes of cells (Tor adds its own overhead)."""
        return (self.payload_rate + self.loop_rate) * SECONDS_PER_DAY * CELL_SIZE

    def expected_latency(self) -> float:
        """Mean wait of a real cell for its slot, on an otherwise idle node, in seconds.

        Poisson: the wait for the next event is exponential, mean 1/rate (memoryless).
        Constant ticks: a cell arrives uniformly within a round, mean 1/(2 rate).
        """
        if self.immediate:
            return 0.0
        return 1 / (2 * self.payload_rate) if self.constant else 1 / self.payload_rate


PROFILES = {
    profile.name: profile
    for profile in (
        Profile("off", 0.0, 0.0),
        # About Pond's budget: one cell per ~30 s, ~3 MB a day.
        Profile("low", 1 / 30, 1 / 300),
        Profile("standard", 1 / 5, 1 / 60),
        Profile("high", 2.0, 1 / 5),
    )
}


# What a daemon runs unless told otherwise: the observer test (integration/test_observer.py)
# shows an idle and a chatting node look alike with cover on; `off` is a choice for speed.
DEFAULT_PROFILE = "standard"


@dataclass(frozen=True)
class Departure:
    """A cell the node must write now: ``kind`` is "real", "drop" or "loop"."""

    kind: str
    contact: str | None  # the contact's address; None for a loop cell


class CellScheduler:
    """Decides when each cell leaves. The node reports queued real cells and live links."""

    def __init__(
        self,
        clock: IReactorTime,
        profile: Profile,
        send: Callable[[Departure], None],
        connected: Callable[[], Sequence[str]],
        *,
        timing_rng: random.Random | None = None,
        choice_rng: random.Random | None = None,
    ) -> None:
        """The RNGs default to the operating system's CSPRNG (an observer must not be able
        to predict the schedule from past departures, as it could with Mersenne Twister);
        tests pass seeded ones. They are two streams so that the departure times never
        depend on anything else drawn (such as which contact gets a drop cell, drawn only
        when idle): idle and busy schedules are then the very same sequence of times."""
        self._clock = clock
        self._timing = timing_rng or random.SystemRandom()
        self._choice = choice_rng or random.SystemRandom()
        self._send = send
        self._connected = connected
        self._profile = profile
        self._queue: deque[tuple[str, float]] = deque()  # (contact, time queued)
        self._payload: IDelayedCall | None = None
        self._loop: IDelayedCall | None = None
        # Started and not stopped. Not "a timer is pending": the off profile has none, and
        # a switch from off to a cover profile at run time must start its streams.
        self._running = False
        # Each stream's next event, in absolute time: the process is defined in time, so
        # a late timer (a busy reactor) does not stretch the following gaps.
        self._next_payload = 0.0
        self._next_loop = 0.0
        self.sent = {"real": 0, "drop": 0, "loop": 0}

    @property
    def profile(self) -> Profile:
        return self._profile

    def start(self) -> None:
        self._running = True
        self._next_payload = self._next_loop = self._clock.seconds()
        self._schedule_payload()
        self._schedule_loop()

    def stop(self) -> None:
        self._running = False
        for call in (self._payload, self._loop):
            if call is not None and call.active():
                call.cancel()
        self._payload = self._loop = None

    def set_profile(self, profile: Profile) -> None:
        running = self._running
        self.stop()
        self._profile = profile
        if running:
            self.start()
        if profile.immediate:
            self._flush()

    def queue(self, contact: str, cells: int = 1) -> None:
        """``cells`` real cells for ``contact`` wait for slots (or leave now with ``off``)."""
        now = self._clock.seconds()
        self._queue.extend((contact, now) for _ in range(cells))
        if self._profile.immediate:
            self._flush()

    def forget(self, contact: str) -> None:
        """The contact's link is gone: its cells leave with the next link instead."""
        self._queue = deque(item for item in self._queue if item[0] != contact)

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    def oldest_age(self) -> float:
        if not self._queue:
            return 0.0
        return self._clock.seconds() - self._queue[0][1]

    def _flush(self) -> None:
        while self._queue:
            contact, _ = self._queue.popleft()
            self._depart(Departure("real", contact))

    def _depart(self, departure: Departure) -> None:
        self.sent[departure.kind] += 1
        self._send(departure)

    def _gap(self, rate: float) -> float:
        return 1 / rate if self._profile.constant else self._timing.expovariate(rate)

    def _schedule_payload(self) -> None:
        if self._profile.payload_rate > 0:
            self._next_payload += self._gap(self._profile.payload_rate)
            delay = max(0.0, self._next_payload - self._clock.seconds())
            self._payload = self._clock.callLater(delay, self._payload_slot)

    def _schedule_loop(self) -> None:
        if self._profile.loop_rate > 0:
            self._next_loop += self._timing.expovariate(self._profile.loop_rate)
            delay = max(0.0, self._next_loop - self._clock.seconds())
            self._loop = self._clock.callLater(delay, self._loop_slot)

    def _payload_slot(self) -> None:
        self._payload = None
        if self._queue:
            contact, _ = self._queue.popleft()
            self._depart(Departure("real", contact))
        else:
            connected = list(self._connected())
            if connected:
                self._depart(Departure("drop", self._choice.choice(connected)))
        self._schedule_payload()

    def _loop_slot(self) -> None:
        self._loop = None
        self._depart(Departure("loop", None))
        self._schedule_loop()
