"""The request machine: every row of the attempt's transition table, the answers it gives, and a
state machine over any interleaving of upstream events, client disconnects and key removals."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from freellm.core import router
from freellm.core.attempt import FINAL, TRANSITIONS, Attempt, Bounds, Phase, ProtocolError
from freellm.core.catalog import Catalog, apply_config
from freellm.core.chat import ChatShape, inspect_request
from freellm.core.exchange import ClientPhase, Effect, Exchange, Send, Settle, Start
from freellm.core.ledger import Ticket
from freellm.core.outcome import TransportError
from freellm.core.router import Key, RouterState, Topology
from openai_wire import DONE, chunk, completion

NOW = 1_780_000_000.0
CONFIG = {
    "providers": {
        "alpha": {
            "dialect": "openai",
            "base_url": "http://127.0.0.1:9/alpha",
            "models": [{"id": "m", "rpm": 100, "concurrency": 2, "context": 32_000}],
        },
        "beta": {
            "dialect": "openai",
            "base_url": "http://127.0.0.1:9/beta",
            "models": [{"id": "m", "rpm": 100, "context": 32_000}],
        },
    },
    "router": {"chain": ["alpha/m", "beta/m"]},
}
CATALOG = apply_config(Catalog(), CONFIG)
KEYS = (Key("alpha", "a1", "sk-a1"), Key("alpha", "a2", "sk-a2"), Key("beta", "b1", "sk-b1"))
BOUNDS = Bounds(max_answer_bytes=4000, max_error_bytes=100, max_event_bytes=300)


def shape(stream: bool, model: str = "auto") -> tuple[ChatShape, dict[str, Any]]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    checked = inspect_request(body)
    assert isinstance(checked, ChatShape)
    return checked, body


def exchange(state: RouterState, *, stream: bool, n: int = 0) -> Exchange:
    checked, body = shape(stream)
    return Exchange(state, checked, body, id=f"req_{n}", session=f"s{n}", now=NOW, bounds=BOUNDS)


def admitted(state: RouterState, ex: Exchange) -> tuple[RouterState, Attempt]:
    for slot in ex.plan:
        state = ex.admit(slot, state, now=NOW)
        if ex.attempt is not None:
            return state, ex.attempt
    raise AssertionError("nothing admitted")


COMPLETION = json.dumps(completion("ok")).encode()


# --- every row of the table --------------------------------------------------------------------


def in_phase(phase: Phase, *, stream: bool = True) -> tuple[Exchange, Attempt]:
    """An exchange whose attempt is in ``phase``."""
    ex = exchange(RouterState(Topology(CATALOG, KEYS)), stream=stream)
    _, attempt = admitted(RouterState(Topology(CATALOG, KEYS)), ex)
    if phase is Phase.RESERVED:
        return ex, attempt
    if phase is Phase.CANCELLED:
        ex.cancel(now=NOW)
        return ex, attempt
    if phase is Phase.BROKEN:
        ex.fail(TransportError.CONNECT, now=NOW)
        return ex, attempt
    ex.head(200, {}, now=NOW)
    if phase is Phase.STREAMING:
        ex.data(chunk("a"), now=NOW)
    elif phase is Phase.DONE:
        ex.data(chunk("a") + DONE, now=NOW)
    assert attempt.phase is phase
    return ex, attempt


EVENTS = {
    "head": lambda ex: ex.head(200, {}, now=NOW),
    "data": lambda ex: ex.data(chunk("b"), now=NOW),
    "end": lambda ex: ex.end(now=NOW),
    "fail": lambda ex: ex.fail(TransportError.TIMEOUT, now=NOW),
    "crash": lambda ex: ex.crash("a bug", now=NOW),
}


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("event", sorted(EVENTS))
def test_each_phase_takes_exactly_the_events_of_its_rows(phase: Phase, event: str) -> None:
    ex, attempt = in_phase(phase)
    if (phase, event) in TRANSITIONS:
        EVENTS[event](ex)
        assert attempt.phase in TRANSITIONS[phase, event]
    else:
        with pytest.raises(ProtocolError):
            EVENTS[event](ex)
        assert attempt.phase is phase  # refused, nothing changed


@pytest.mark.parametrize("phase", list(Phase))
def test_a_cancellation_settles_an_attempt_in_progress_and_nothing_else(phase: Phase) -> None:
    ex, _ = in_phase(phase)
    settles = [e for e in ex.cancel(now=NOW) if isinstance(e, Settle)]
    assert len(settles) == (0 if phase in FINAL else 1)
    assert ex.client is ClientPhase.DONE
    assert ex.cancel(now=NOW) == []  # and a second one does nothing


def test_every_final_phase_was_reached_by_one_settlement() -> None:
    for phase in FINAL:
        ex = exchange(RouterState(Topology(CATALOG, KEYS)), stream=True)
        _, attempt = admitted(RouterState(Topology(CATALOG, KEYS)), ex)
        effects: list[Effect] = []
        if phase is Phase.CANCELLED:
            effects += ex.cancel(now=NOW)
        elif phase is Phase.BROKEN:
            effects += ex.fail(TransportError.PROTOCOL, now=NOW)
        else:
            effects += ex.head(200, {}, now=NOW) + ex.data(chunk("a") + DONE, now=NOW)
        assert attempt.phase is phase
        assert [type(e) for e in effects].count(Settle) == 1


# --- answers -----------------------------------------------------------------------------------


def run(state: RouterState, ex: Exchange, effects: list[Effect]) -> RouterState:
    for effect in effects:
        if not isinstance(effect, Start | Send):
            state = effect(state)
    return state


def test_a_json_answer_settles_then_starts_and_ends_the_response_in_one_step() -> None:
    state = RouterState(Topology(CATALOG, KEYS))
    ex = exchange(state, stream=False)
    state, _ = admitted(state, ex)
    assert ex.head(200, {}, now=NOW) == []
    assert ex.data(COMPLETION[:20], now=NOW) == []
    effects = ex.data(COMPLETION[20:], now=NOW) + ex.end(now=NOW)
    kinds = [type(e).__name__ for e in effects]
    assert kinds == ["Bind", "Settle", "Start", "Send"]  # the state first, then the writes
    start, send = effects[2], effects[3]
    assert isinstance(start, Start)
    assert isinstance(send, Send)
    assert start.status == 200
    assert not send.more
    assert json.loads(send.data)["choices"][0]["message"]["content"] == "ok"
    assert dict(start.headers)[b"x-fallback-trail"] == b"alpha/m=ok"
    state = run(state, ex, effects)
    assert sum(u.inflight for u in state.ledger.usage.values()) == 0
    assert ex.client is ClientPhase.DONE


def test_a_failure_after_the_stream_started_ends_it_with_an_error_event() -> None:
    state = RouterState(Topology(CATALOG, KEYS))
    ex = exchange(state, stream=True)
    state, _ = admitted(state, ex)
    ex.head(200, {}, now=NOW)
    started = ex.data(chunk("partial"), now=NOW)
    assert [type(e).__name__ for e in started] == ["Bind", "Start", "Send"]
    effects = ex.fail(TransportError.PROTOCOL, now=NOW)
    assert [type(e).__name__ for e in effects] == ["Settle", "Send"]
    tail = effects[1]
    assert isinstance(tail, Send)
    assert b"event: error\n" in tail.data
    assert tail.data.endswith(DONE)
    assert not tail.more
    with pytest.raises(ProtocolError):
        ex.admit(next(iter(ex.plan), None) or ex.attempts[0].slot, state, now=NOW)


# --- any interleaving --------------------------------------------------------------------------

STATUSES = st.sampled_from([200, 201, 204, 400, 401, 404, 429, 500, 503])
PIECES = st.sampled_from(
    [
        chunk("x"),
        chunk("y") + DONE,
        DONE,
        b'data: {"error": {"message": "overloaded"}}\n\n',
        b"data: " + b"z" * 400 + b"\n\n",  # an event over the bound
        COMPLETION[:30],
        COMPLETION[30:],
        COMPLETION,
        b"x" * 200,
        b'{"error": {"message": "Rate limit reached, per day"}}',
    ]
)
ERRORS = st.sampled_from(list(TransportError))


class Requests(RuleBasedStateMachine):
    """Several requests at once, one state holder, keys that come and go, clients that leave.

    Every effect is carried out as the shell would; the model beside it counts tickets.
    """

    def __init__(self) -> None:
        super().__init__()
        self.state = RouterState(Topology(CATALOG, KEYS))
        self.now = NOW
        self.active: list[Exchange] = []
        self.serial = 0
        # Tickets by identity (two can be equal by value); the list keeps them alive, so that
        # no id() is reused.
        self.tickets: list[Ticket] = []
        self.reserved: set[int] = set()
        self.settled: list[int] = []
        self.writes: dict[str, list[Effect]] = {}

    def carry_out(self, ex: Exchange, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Start | Send):
                self.writes.setdefault(ex.id, []).append(effect)
                continue
            if isinstance(effect, Settle):
                self.settled.append(id(effect.ticket))
            self.state = effect(self.state)
        if ex.answered:
            self.active.remove(ex)

    def pick(self, index: int) -> Exchange:
        return self.active[index % len(self.active)]

    @precondition(lambda self: len(self.active) < 3)
    @rule(stream=st.booleans())
    def a_request_arrives(self, stream: bool) -> None:
        self.serial += 1
        self.active.append(exchange(self.state, stream=stream, n=self.serial))

    @precondition(lambda self: self.active)
    @rule(index=st.integers(0, 2))
    def the_next_candidate_is_admitted(self, index: int) -> None:
        ex = self.pick(index)
        if ex.attempt is not None and ex.attempt.phase not in FINAL:
            return
        slot = next(ex.plan, None)
        if slot is None:
            self.carry_out(ex, ex.exhausted(self.state, now=self.now))
            return
        self.state = ex.admit(slot, self.state, now=self.now)
        if ex.attempt is not None and ex.attempt.phase is Phase.RESERVED:
            self.tickets.append(ex.attempt.ticket)
            self.reserved.add(id(ex.attempt.ticket))

    def in_progress(self, index: int, *phases: Phase) -> Exchange | None:
        if not self.active:
            return None
        ex = self.pick(index)
        attempt = ex.attempt
        if attempt is None or attempt.phase not in phases:
            return None
        return ex

    @rule(index=st.integers(0, 2), status=STATUSES, limited=st.booleans())
    def a_head_arrives(self, index: int, status: int, limited: bool) -> None:
        ex = self.in_progress(index, Phase.RESERVED)
        if ex is not None:
            headers = {"x-ratelimit-remaining-requests": "5", "x-ratelimit-limit-requests": "9"}
            self.carry_out(ex, ex.head(status, headers if limited else {}, now=self.now))

    @rule(index=st.integers(0, 2), piece=PIECES)
    def body_bytes_arrive(self, index: int, piece: bytes) -> None:
        ex = self.in_progress(index, Phase.HEAD, Phase.STREAMING)
        if ex is not None:
            self.carry_out(ex, ex.data(piece, now=self.now))

    @rule(index=st.integers(0, 2))
    def the_body_ends(self, index: int) -> None:
        ex = self.in_progress(index, Phase.HEAD, Phase.STREAMING)
        if ex is not None:
            self.carry_out(ex, ex.end(now=self.now))

    @rule(index=st.integers(0, 2), error=ERRORS)
    def the_transport_fails(self, index: int, error: TransportError) -> None:
        ex = self.in_progress(index, Phase.RESERVED, Phase.HEAD, Phase.STREAMING)
        if ex is not None:
            self.carry_out(ex, ex.fail(error, now=self.now))

    @rule(index=st.integers(0, 2))
    def something_crashes(self, index: int) -> None:
        ex = self.in_progress(index, Phase.RESERVED, Phase.HEAD, Phase.STREAMING)
        if ex is not None:
            self.carry_out(ex, ex.crash("a bug", now=self.now))

    @precondition(lambda self: self.active)
    @rule(index=st.integers(0, 2))
    def a_client_goes_away(self, index: int) -> None:
        ex = self.pick(index)
        self.carry_out(ex, ex.cancel(now=self.now))

    @rule(key=st.sampled_from(KEYS), present=st.booleans())
    def a_key_is_removed_or_added(self, key: Key, present: bool) -> None:
        keys = {k for k in self.state.topology.keys if k != key} | ({key} if present else set())
        topology = Topology(CATALOG, keys)
        self.state = router.reconfigure(self.state, topology)

    @rule(seconds=st.floats(0, 120))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def every_ticket_is_settled_at_most_once(self) -> None:
        assert len(self.settled) == len(set(self.settled))
        assert set(self.settled) <= self.reserved

    @invariant()
    def in_flight_counts_the_attempts_in_progress(self) -> None:
        open_attempts = sum(
            1 for ex in self.active if ex.attempt is not None and ex.attempt.phase not in FINAL
        )
        assert sum(u.inflight for u in self.state.ledger.usage.values()) == open_attempts
        assert len(self.reserved) - len(self.settled) == open_attempts

    @invariant()
    def each_response_starts_once_and_ends_once(self) -> None:
        for writes in self.writes.values():
            assert isinstance(writes[0], Start)
            assert [type(w) for w in writes[1:]] == [Send] * (len(writes) - 1)
            sends = [w for w in writes if isinstance(w, Send)]
            assert all(s.more for s in sends[:-1])

    def teardown(self) -> None:
        for ex in list(self.active):
            self.carry_out(ex, ex.cancel(now=self.now))
        assert self.active == []
        assert sorted(self.settled) == sorted(self.reserved)  # every ticket, exactly once
        assert sum(u.inflight for u in self.state.ledger.usage.values()) == 0
        for writes in self.writes.values():
            last = writes[-1]
            assert isinstance(last, Send)
            assert not last.more  # every response that started has ended


Requests.TestCase.settings = settings(max_examples=200, stateful_step_count=40)
test_any_interleaving_settles_every_ticket_once_and_leaves_nothing_in_flight = Requests.TestCase
