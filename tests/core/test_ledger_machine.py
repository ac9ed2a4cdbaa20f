"""The ledger against a simple model, under any sequence of events.

The model keeps every admitted request with its time and current charge (a plain list: exact, and
unbounded, which is fine for a test). After every step the ledger's decisions are checked against
it: no window of any cap ever holds more than the cap, a refused reservation changes nothing, a
refusal is explained by what the window holds give or take one bucket, cooldowns and provider
ceilings hold exactly as long as they say, and persistence round-trips to an equal ledger.
"""

import datetime as dt
import json
import zoneinfo
from collections import defaultdict

import attrs
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from freellm.core import ledger
from freellm.core.catalog import ROLLING, Caps, ModelSpec
from freellm.core.ledger import Refusal, Slot, Ticket
from freellm.core.signals import Ceiling

CAL_ZONE = "America/Los_Angeles"
LA = zoneinfo.ZoneInfo(CAL_ZONE)

PER_MODEL = ModelSpec("m1", Caps(rpm=3, rpd=6, tpm=900, tpd=2000, concurrency=3))
ACCOUNT_A = ModelSpec("a1", Caps(rpm=4, rpd=5, tpm=1200), account=True)
ACCOUNT_B = ModelSpec("a2", Caps(rpm=2, rpd=5, tpd=1500), account=True)
UNCAPPED = ModelSpec("free")

SLOTS = [
    Slot(provider, key, model, reset)
    for provider, reset in (("roll", ROLLING), ("cal", CAL_ZONE))
    for key in ("k1",)  # one key: windows fill up within 50 steps; key scopes still differ
    for model in (PER_MODEL, ACCOUNT_A, ACCOUNT_B, UNCAPPED)
]

START_TIMES = [
    dt.datetime(2026, 3, 7, 23, 58, tzinfo=LA).timestamp(),  # the night before spring-forward
    dt.datetime(2026, 10, 31, 23, 59, tzinfo=LA).timestamp(),  # before fall-back
    dt.datetime(2026, 6, 1, 12, 0, tzinfo=LA).timestamp(),
]
STEPS = st.sampled_from(
    [0.0, 0.001, 0.4, 1.0, 14.9, 59.999, 60.0, 61.0, 61.0, 900.0, 3600.0, 86_400.0]
)


@attrs.define
class Admitted:
    slot: Slot
    at: float
    charge: int
    settled: bool = False


class LedgerMachine(RuleBasedStateMachine):
    tickets = Bundle("tickets")

    def __init__(self) -> None:
        super().__init__()
        self.ledger = ledger.Ledger()
        self.now = START_TIMES[0]
        self.admitted: dict[int, Admitted] = {}
        self.by_ticket: dict[int, int] = {}  # id(ticket): equal tickets are distinct calls
        self.cooldowns: dict[ledger.Scope, float] = {}
        # (usage key, dimension, window) -> [until, remaining]
        self.ceilings: dict[tuple[ledger.UsageKey, str, str], list[float]] = {}

    @initialize(start=st.sampled_from(START_TIMES))
    def start(self, start: float) -> None:
        self.now = start

    # -- events --

    @rule(step=STEPS | st.floats(0, 200, allow_nan=False))
    def advance(self, step: float) -> None:
        self.now += step

    @rule(target=tickets, slot=st.sampled_from(SLOTS), tokens=st.integers(0, 1000))
    def reserve(self, slot: Slot, tokens: int) -> object:
        before = self.ledger
        result = ledger.reserve(self.ledger, slot, tokens, now=self.now)
        if isinstance(result, Refusal):
            assert self.ledger is before  # a refusal changes nothing
            event(f"refused: {result.reason.split(':')[0]}")
            self._check_refusal_is_explained(slot, tokens, result)
            return multiple()  # nothing to settle
        self.ledger, ticket = result
        self._check_admission_allowed(slot, tokens)
        index = len(self.admitted)
        self.admitted[index] = Admitted(slot, self.now, tokens)
        self.by_ticket[id(ticket)] = index
        for ceiling_key, entry in self.ceilings.items():
            if ceiling_key[0] == slot.usage_key and self.now < entry[0]:
                entry[1] -= 1 if ceiling_key[1] == "requests" else tokens
        return ticket

    @rule(ticket=consumes(tickets), fraction=st.floats(0, 1), failed=st.booleans())
    def settle(self, ticket: Ticket, fraction: float, failed: bool) -> None:
        if id(ticket) not in self.by_ticket:
            return  # released by a restart: the shell that held it is gone
        actual = 0 if failed else int(ticket.tokens * fraction)  # a 429: the request stays
        self.ledger = ledger.settle(self.ledger, ticket, tokens=actual)
        entry = self.admitted[self.by_ticket.pop(id(ticket))]
        entry.charge = actual
        entry.settled = True

    @rule(
        slot=st.sampled_from(SLOTS),
        scope_kind=st.sampled_from(["slot", "key"]),
        wait=STEPS | st.floats(0.001, 500, allow_nan=False),
    )
    def cool_down(self, slot: Slot, scope_kind: str, wait: float) -> None:
        scope: ledger.Scope = (
            (slot.provider, slot.key_id, slot.model.id)
            if scope_kind == "slot"
            else (slot.provider, slot.key_id, None)
        )
        until = self.now + wait
        self.ledger = ledger.cool_down(self.ledger, scope, until=until, reason="429")
        self.cooldowns[scope] = max(self.cooldowns.get(scope, 0.0), until)

    @rule(
        slot=st.sampled_from(SLOTS),
        dimension=st.sampled_from(["requests", "tokens"]),
        remaining=st.integers(0, 1500),
        reset=st.none() | st.floats(0.5, 300, allow_nan=False),
    )
    def provider_says(
        self, slot: Slot, dimension: str, remaining: int, reset: float | None
    ) -> None:
        ceiling = Ceiling(
            dimension=dimension,  # type: ignore[arg-type]
            window="minute",
            remaining=remaining,
            limit=None,
            reset_at=None if reset is None else self.now + reset,
        )
        self.ledger = ledger.observe(self.ledger, slot, [ceiling], now=self.now)
        until = self.now + (60.0 if reset is None else reset)
        self.ceilings[slot.usage_key, dimension, "minute"] = [until, remaining]

    @precondition(lambda self: bool(self.by_ticket))
    @rule()
    def restart(self) -> None:
        """A crash and restart: persisted, reloaded, in-flight calls released."""
        self.ledger = ledger.release_inflight(
            ledger.from_data(json.loads(json.dumps(ledger.to_data(self.ledger))))
        )
        for index in self.by_ticket.values():
            self.admitted[index].settled = True
        self.by_ticket.clear()

    # -- checks --

    def _usage_of(self, usage_key: ledger.UsageKey) -> list[Admitted]:
        return [a for a in self.admitted.values() if a.slot.usage_key == usage_key]

    def _check_admission_allowed(self, slot: Slot, tokens: int) -> None:
        for scope in (
            (slot.provider, slot.key_id, slot.model.id),
            (slot.provider, slot.key_id, None),
        ):
            assert self.cooldowns.get(scope, float("-inf")) <= self.now, "admitted while cooling"
        for (usage_key, dimension, _), (until, remaining) in self.ceilings.items():
            if usage_key == slot.usage_key and self.now < until:
                cost = 1 if dimension == "requests" else tokens
                assert cost <= remaining, "admitted past a provider-reported ceiling"

    def _check_refusal_is_explained(self, slot: Slot, tokens: int, refusal: Refusal) -> None:
        """The ledger may be stricter than exact, but only by what one bucket can hold; and at
        ``retry_at``, with nothing else happening but the calls in flight ending (when, no one
        can know: a concurrency cap's retry_at is when to look again), the same request is
        admitted."""
        if refusal.retry_at is not None:
            assert refusal.retry_at > self.now
            ended = ledger.release_inflight(self.ledger)
            later = ledger.reserve(ended, slot, tokens, now=refusal.retry_at)
            assert not isinstance(later, Refusal), f"still refused at retry_at: {later}"
        if refusal.reason.startswith("cooldown"):
            scopes = [
                (slot.provider, slot.key_id, slot.model.id),
                (slot.provider, slot.key_id, None),
            ]
            assert any(self.cooldowns.get(scope, 0.0) > self.now for scope in scopes)
            return
        if refusal.reason.startswith("provider limit"):
            assert any(
                usage_key == slot.usage_key
                and self.now < until
                and (1 if dimension == "requests" else tokens) > remaining
                for (usage_key, dimension, _), (until, remaining) in self.ceilings.items()
            ), "provider limit refused without cause"
            return
        if refusal.reason == "concurrency":
            in_flight = sum(
                1
                for index in self.by_ticket.values()
                if self.admitted[index].slot.usage_key == slot.usage_key
            )
            assert slot.model.caps.concurrency is not None
            assert in_flight + 1 > slot.model.caps.concurrency
            return
        caps = slot.model.caps
        usage = self._usage_of(slot.usage_key)
        name = refusal.reason.split(":")[0]
        if name in ("rpm", "tpm"):
            span = 60.0 + 1.0
        elif slot.daily_reset == ROLLING:
            span = 86_400.0 + 900.0
        else:
            span = None
        if span is None:
            today = _local_date(self.now)
            recent = [a for a in usage if _local_date(a.at) == today]
        else:
            recent = [a for a in usage if self.now - span < a.at <= self.now]
        cap = getattr(caps, name)
        if name in ("rpm", "rpd"):
            assert len(recent) + 1 > cap, f"{name} refused without cause"
        else:
            assert sum(a.charge for a in recent) + tokens > cap, f"{name} refused without cause"

    @invariant()
    def no_window_ever_exceeds_its_cap(self) -> None:
        """At every admission, the windows ending then hold no more than the admitted model's caps.

        Time only moves forward, so any window's newest admission bounds the whole window: this
        covers every window, not only those ending at an admission.
        """
        groups: dict[ledger.UsageKey, list[Admitted]] = defaultdict(list)
        for entry in self.admitted.values():  # in admission order
            groups[entry.slot.usage_key].append(entry)
        for entries in groups.values():
            for last, entry in enumerate(entries):
                so_far = entries[: last + 1]
                caps = entry.slot.model.caps  # account models of a key share one usage
                t = entry.at
                minute = [e for e in so_far if t - 60 < e.at]
                if entry.slot.daily_reset == ROLLING:
                    day = [e for e in so_far if t - 86_400 < e.at]
                else:
                    day = [e for e in so_far if _local_date(e.at) == _local_date(t)]
                _assert_within(caps.rpm, len(minute), "rpm")
                _assert_within(caps.tpm, sum(e.charge for e in minute), "tpm")
                _assert_within(caps.rpd, len(day), "rpd")
                _assert_within(caps.tpd, sum(e.charge for e in day), "tpd")

    @invariant()
    def requests_in_flight_stay_under_concurrency(self) -> None:
        for usage_key, usage in self.ledger.usage.items():
            in_flight = sum(
                1 for i in self.by_ticket.values() if self.admitted[i].slot.usage_key == usage_key
            )
            assert usage.inflight == in_flight
        for slot in SLOTS:
            cap = slot.model.caps.concurrency
            if cap is not None:
                found = self.ledger.usage.get(slot.usage_key)
                assert found is None or found.inflight <= cap

    @invariant()
    def windows_never_under_count(self) -> None:
        for usage_key, usage in self.ledger.usage.items():
            entries = self._usage_of(usage_key)
            requests, tokens = usage.minute.totals(self.now)
            exact = [e for e in entries if self.now - 60 < e.at <= self.now]
            assert requests >= len(exact)
            assert tokens >= sum(e.charge for e in exact)

    @invariant()
    def persistence_round_trips_to_an_equal_ledger(self) -> None:
        data = json.loads(json.dumps(ledger.to_data(self.ledger)))
        assert ledger.from_data(data) == self.ledger

    @invariant()
    def cooldowns_end_exactly_when_they_say(self) -> None:
        for scope, until in self.cooldowns.items():
            found = ledger.cooldown_of(self.ledger, scope, self.now)
            if self.now < until:
                assert found is not None
                assert found.until == until
            else:
                assert found is None


def _assert_within(cap: int | None, used: int, name: str) -> None:
    if cap is not None:
        assert used <= cap, f"{name} exceeded: {used} > {cap}"


def _local_date(at: float) -> dt.date:
    return dt.datetime.fromtimestamp(at, LA).date()


LedgerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
TestLedgerMachine = LedgerMachine.TestCase
