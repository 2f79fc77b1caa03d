"""The cover-traffic scheduler, driven by a fake clock and seeded RNGs."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from twisted.internet.task import Clock

from onionmsg.mix.scheduler import PROFILES, CellScheduler, Departure, Profile


def run(
    profile: Profile,
    seconds: float,
    *,
    busy: bool,
    seed: int = 7,
    contacts: tuple[str, ...] = ("bob", "carol"),
) -> tuple[list[tuple[float, Departure]], CellScheduler]:
    clock = Clock()
    log: list[tuple[float, Departure]] = []
    scheduler = CellScheduler(
        clock,
        profile,
        lambda d: log.append((clock.seconds(), d)),
        lambda: contacts,
        timing_rng=random.Random(seed),
        choice_rng=random.Random(seed + 1),
    )
    scheduler.start()
    step = 0.25
    for tick in range(int(seconds / step)):
        if busy and tick % 12 == 0:  # a message every 3 s
            scheduler.queue(contacts[tick % len(contacts)], 2)
        clock.advance(step)
    return log, scheduler


def test_off_sends_real_cells_at_once_and_nothing_else() -> None:
    clock = Clock()
    log: list[Departure] = []
    scheduler = CellScheduler(clock, PROFILES["off"], log.append, lambda: ["b"])
    scheduler.start()
    clock.advance(3600)
    assert log == []
    scheduler.queue("b", 3)
    assert log == [Departure("real", "b")] * 3
    assert not clock.getDelayedCalls()


@pytest.mark.parametrize("name", ["low", "standard", "high"])
def test_departure_times_do_not_depend_on_traffic(name: str) -> None:
    idle, _ = run(PROFILES[name], 3600, busy=False)
    busy, scheduler = run(PROFILES[name], 3600, busy=True)
    assert [t for t, _ in idle] == [t for t, _ in busy]  # the very same instants
    assert {d.kind for _, d in idle} <= {"drop", "loop"}
    assert scheduler.sent["real"] > 0


def test_real_cells_only_leave_in_payload_slots_in_order() -> None:
    profile = Profile("ticks", payload_rate=2.0, loop_rate=0.0, constant=True)
    clock = Clock()
    log: list[tuple[float, Departure]] = []
    scheduler = CellScheduler(
        clock,
        profile,
        lambda d: log.append((clock.seconds(), d)),
        lambda: ["bob", "carol"],
        timing_rng=random.Random(3),
    )
    scheduler.start()
    scheduler.queue("bob", 3)
    scheduler.queue("carol", 2)
    scheduler.queue("bob", 1)
    for _ in range(40):
        clock.advance(0.25)
    real = [(t, d.contact) for t, d in log if d.kind == "real"]
    assert [c for _, c in real] == ["bob", "bob", "bob", "carol", "carol", "bob"]
    for t, _ in log:
        assert math.isclose(t * 2, round(t * 2), abs_tol=1e-6)  # only on the 0.5 s ticks
    assert len(log) == len({t for t, _ in log})  # one cell per slot: the rate never rises


@pytest.mark.parametrize("name", ["low", "standard", "high"])
def test_rates_match_lambda_over_a_long_run(name: str) -> None:
    profile = PROFILES[name]
    hours = 24 if name != "high" else 2
    log, _ = run(profile, hours * 3600, busy=False, seed=11)
    for kind, rate in (("drop", profile.payload_rate), ("loop", profile.loop_rate)):
        expected = rate * hours * 3600
        count = sum(1 for _, d in log if d.kind == kind)
        assert abs(count - expected) < 4 * math.sqrt(expected), (kind, count, expected)


def test_poisson_gaps_are_exponential() -> None:
    clock = Clock()
    times: list[float] = []
    profile = Profile("p", payload_rate=1.0, loop_rate=0.0)
    scheduler = CellScheduler(
        clock,
        profile,
        lambda d: times.append(clock.seconds()),
        lambda: ["b"],
        timing_rng=random.Random(5),
    )
    scheduler.start()
    for _ in range(500_000):
        clock.advance(0.01)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert abs(sum(gaps) / len(gaps) - 1.0) < 0.05
    # Exponential with rate 1: P(gap > t) = exp(-t), at a few quantiles.
    for t in (0.5, 1.0, 2.0):
        observed = sum(1 for g in gaps if g > t) / len(gaps)
        assert abs(observed - math.exp(-t)) < 0.03, (t, observed)


def test_drop_cells_only_to_connected_contacts_and_none_when_alone() -> None:
    log, _ = run(PROFILES["high"], 600, busy=False, contacts=("bob", "carol", "dave"))
    drops = {d.contact for _, d in log if d.kind == "drop"}
    assert drops == {"bob", "carol", "dave"}
    log, _ = run(PROFILES["high"], 600, busy=False, contacts=())
    assert {d.kind for _, d in log} == {"loop"}


def test_queue_length_age_forget_and_profile_change() -> None:
    clock = Clock()
    log: list[Departure] = []
    scheduler = CellScheduler(
        clock, PROFILES["low"], log.append, lambda: ["bob"], timing_rng=random.Random(2)
    )
    scheduler.start()
    scheduler.queue("bob", 2)
    scheduler.queue("carol", 1)
    clock.advance(0.01)
    assert scheduler.queue_length == 3 and scheduler.oldest_age() == pytest.approx(0.01)
    scheduler.forget("carol")
    assert scheduler.queue_length == 2
    scheduler.set_profile(PROFILES["off"])  # the user chose speed: what waits leaves now
    assert [d.kind for d in log].count("real") == 2
    assert scheduler.queue_length == 0


def test_switching_from_off_to_cover_at_run_time_starts_both_streams() -> None:
    clock = Clock()
    log: list[tuple[float, Departure]] = []
    scheduler = CellScheduler(
        clock,
        PROFILES["off"],
        lambda d: log.append((clock.seconds(), d)),
        lambda: ["bob"],
        timing_rng=random.Random(5),
        choice_rng=random.Random(6),
    )
    scheduler.start()
    clock.advance(10)
    scheduler.set_profile(PROFILES["high"])
    scheduler.queue("bob", 1)
    assert log == []  # the real cell now waits for a slot
    for _ in range(120):
        clock.advance(0.25)
    kinds = [d.kind for _, d in log]
    assert kinds.count("real") == 1
    assert kinds.count("drop") > 20 and kinds.count("loop") > 0
    assert all(t > 10 for t, _ in log)


def test_a_profile_set_before_start_or_after_stop_schedules_nothing() -> None:
    clock = Clock()
    log: list[Departure] = []
    scheduler = CellScheduler(clock, PROFILES["off"], log.append, lambda: ["bob"])
    scheduler.set_profile(PROFILES["high"])
    assert not clock.getDelayedCalls()
    scheduler.start()
    assert clock.getDelayedCalls()
    scheduler.stop()
    scheduler.set_profile(PROFILES["standard"])
    assert not clock.getDelayedCalls()
    clock.advance(60)
    assert log == []


def test_profiles_state_their_costs() -> None:
    low = PROFILES["low"]
    assert 2e6 < low.bytes_per_day() < 4e6  # about Pond's budget
    assert low.expected_latency() == pytest.approx(30)
    constant = Profile("c", payload_rate=0.5, loop_rate=0.0, constant=True)
    assert constant.expected_latency() == pytest.approx(1.0)
    assert PROFILES["off"].bytes_per_day() == 0
