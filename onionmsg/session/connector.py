"""Keeping a link to one contact up: dial, back off with jitter, redial when it drops.

A sans-IO Automat machine driven by an injected clock and RNG; the node supplies the
``dial`` callback (which must eventually call ``dial_failed`` or ``link_established``).

    stopped --start--> dialing --dial_failed--> waiting --retry_due--> dialing
    dialing/waiting --link_established--> connected --link_lost--> waiting
    any --stop--> stopped
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from automat import TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall, IReactorTime

FIRST_RETRY = 1.0
MAX_RETRY = 60.0
RECONNECT_DELAY = 0.5  # after an established link drops: come back soon, but jittered
JITTER = 0.25


class ConnectorInputs(Protocol):
    def start(self) -> None: ...
    def dial_failed(self) -> None: ...
    def link_established(self) -> None: ...
    def link_lost(self) -> None: ...
    def retry_due(self) -> None: ...
    def retry_now(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class ConnectorCore:
    clock: IReactorTime
    dial: Callable[[], None]
    rng: random.Random
    failures: int = 0
    retry: IDelayedCall | None = None
    state_name: str = "stopped"

    def schedule(self, inputs: ConnectorInputs, base: float) -> None:
        self.cancel()
        delay = base * (1 + self.rng.uniform(-JITTER, JITTER))
        self.retry = self.clock.callLater(delay, inputs.retry_due)

    def next_backoff(self) -> float:
        delay: float = min(MAX_RETRY, FIRST_RETRY * 2 ** min(self.failures, 16))
        self.failures += 1
        return delay

    def cancel(self) -> None:
        if self.retry is not None and self.retry.active():
            self.retry.cancel()
        self.retry = None


def _build() -> type:
    builder = TypeMachineBuilder(ConnectorInputs, ConnectorCore)
    stopped = builder.state("stopped")
    dialing = builder.state("dialing")
    waiting = builder.state("waiting")
    connected = builder.state("connected")

    def dial(inputs: ConnectorInputs, core: ConnectorCore) -> None:
        core.cancel()
        core.state_name = "dialing"
        core.dial()

    def back_off(inputs: ConnectorInputs, core: ConnectorCore) -> None:
        core.state_name = "waiting"
        core.schedule(inputs, core.next_backoff())

    def up(inputs: ConnectorInputs, core: ConnectorCore) -> None:
        core.cancel()
        core.failures = 0
        core.state_name = "connected"

    def down(inputs: ConnectorInputs, core: ConnectorCore) -> None:
        core.state_name = "waiting"
        core.schedule(inputs, RECONNECT_DELAY)

    def halt(inputs: ConnectorInputs, core: ConnectorCore) -> None:
        core.cancel()
        core.state_name = "stopped"

    stopped.upon(ConnectorInputs.start).to(dialing)(dial)
    dialing.upon(ConnectorInputs.dial_failed).to(waiting)(back_off)
    waiting.upon(ConnectorInputs.retry_due).to(dialing)(dial)
    # A user action (a new message) skips the wait: dial now, keep the backoff count.
    waiting.upon(ConnectorInputs.retry_now).to(dialing)(dial)
    for state in (dialing, waiting, connected):
        state.upon(ConnectorInputs.link_established).to(connected)(up)
        state.upon(ConnectorInputs.stop).to(stopped)(halt)
    # An inbound link may come up while we dial; the dial's own failure is then moot.
    connected.upon(ConnectorInputs.dial_failed).loop().returns(None)
    connected.upon(ConnectorInputs.link_lost).to(waiting)(down)
    # A superseded duplicate link going away while another is up changes nothing here;
    # the node only reports link_lost for the link it uses.
    for state in (dialing, waiting):
        state.upon(ConnectorInputs.link_lost).loop().returns(None)
    for state in (stopped, dialing, connected):
        state.upon(ConnectorInputs.retry_due).loop().returns(None)
        state.upon(ConnectorInputs.retry_now).loop().returns(None)
    stopped.upon(ConnectorInputs.stop).loop().returns(None)
    stopped.upon(ConnectorInputs.dial_failed).loop().returns(None)
    stopped.upon(ConnectorInputs.link_established).loop().returns(None)
    stopped.upon(ConnectorInputs.link_lost).loop().returns(None)
    dialing.upon(ConnectorInputs.start).loop().returns(None)
    waiting.upon(ConnectorInputs.start).loop().returns(None)
    connected.upon(ConnectorInputs.start).loop().returns(None)
    return builder.build()  # type: ignore[return-value]


_ConnectorMachine = _build()


class Connector:
    """The connection policy for one contact."""

    def __init__(
        self, clock: IReactorTime, dial: Callable[[], None], rng: random.Random | None = None
    ) -> None:
        rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._core = ConnectorCore(clock, dial, rng)
        self._machine: ConnectorInputs = _ConnectorMachine(self._core)
        self.start = self._machine.start
        self.dial_failed = self._machine.dial_failed
        self.link_established = self._machine.link_established
        self.link_lost = self._machine.link_lost
        self.retry_now = self._machine.retry_now
        self.stop = self._machine.stop

    @property
    def state(self) -> str:
        """For status output and tests; the machine, not this name, decides behaviour."""
        return self._core.state_name
