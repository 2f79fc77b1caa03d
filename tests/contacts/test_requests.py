"""The rules for strangers' contact requests (onionmsg/contacts/requests.py)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from onionmsg.contacts.requests import (
    GATE_BURST,
    GATE_INTERVAL,
    MAX_MESSAGE_CHARS,
    REJECTED_FOR_MS,
    Action,
    Known,
    RequestError,
    RequestState,
    Verdict,
    clean_message,
    decide,
    request_gate,
    transition,
)


def test_a_new_address_is_recorded_once_and_then_only_refreshed() -> None:
    assert decide(None, block_unknown=False, now_ms=0, gate_open=True) is Verdict.NEW
    pending = Known(RequestState.PENDING, 0)
    assert decide(pending, block_unknown=False, now_ms=10, gate_open=False) is Verdict.UPDATE


def test_block_unknown_and_a_closed_gate_drop_new_requests() -> None:
    assert decide(None, block_unknown=True, now_ms=0, gate_open=True) is Verdict.DROP
    assert decide(None, block_unknown=False, now_ms=0, gate_open=False) is Verdict.DROP


def test_blocked_is_forever_and_rejected_for_a_week() -> None:
    blocked = Known(RequestState.BLOCKED, 0)
    assert decide(blocked, block_unknown=False, now_ms=10**15, gate_open=True) is Verdict.DROP
    rejected = Known(RequestState.REJECTED, 0)
    week = REJECTED_FOR_MS
    assert decide(rejected, block_unknown=False, now_ms=week - 1, gate_open=True) is Verdict.DROP
    assert decide(rejected, block_unknown=False, now_ms=week, gate_open=True) is Verdict.NEW


@pytest.mark.parametrize(
    ("state", "action", "expected"),
    [
        (RequestState.PENDING, Action.ACCEPT, None),
        (RequestState.PENDING, Action.REJECT, RequestState.REJECTED),
        (RequestState.PENDING, Action.BLOCK, RequestState.BLOCKED),
        (RequestState.REJECTED, Action.BLOCK, RequestState.BLOCKED),
        (RequestState.REJECTED, Action.ACCEPT, None),
    ],
)
def test_allowed_transitions(
    state: RequestState, action: Action, expected: RequestState | None
) -> None:
    assert transition(state, action) is expected


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (RequestState.BLOCKED, Action.ACCEPT),
        (RequestState.BLOCKED, Action.REJECT),
        (RequestState.REJECTED, Action.REJECT),
    ],
)
def test_other_transitions_are_clear_errors(state: RequestState, action: Action) -> None:
    with pytest.raises(RequestError, match=f"a {state.value} request cannot be"):
        transition(state, action)


def test_the_gate_allows_a_burst_then_one_per_interval() -> None:
    clock = Clock()
    gate = request_gate(clock)
    assert [gate.allow() for _ in range(GATE_BURST + 1)] == [True] * GATE_BURST + [False]
    clock.advance(GATE_INTERVAL / 2)
    assert not gate.allow()
    clock.advance(GATE_INTERVAL / 2)
    assert gate.allow()
    assert not gate.allow()
    clock.advance(GATE_INTERVAL * 1000)  # a quiet day refills the burst, no more
    assert sum(gate.allow() for _ in range(GATE_BURST * 2)) == GATE_BURST


def test_clean_message_removes_what_could_fool_a_reader() -> None:
    hostile = "hi\x1b]0;pwned\x07 \u202eevil\u202c\u200b\n\nthere" + "e\u0301\u0301\u0301"
    assert clean_message(hostile) == "hi ]0;pwned evil there" + "e\u0301"


@given(st.text())
def test_clean_message_is_short_and_has_no_controls(text: str) -> None:
    cleaned = clean_message(text)
    assert len(cleaned) <= MAX_MESSAGE_CHARS
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in cleaned)
    assert cleaned == cleaned.strip()
