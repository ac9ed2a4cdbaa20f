"""The router: which (provider, model, key) should serve a request, in what order.

:func:`plan` reads one :class:`RouterState` snapshot and yields candidate :class:`Slot`\\ s lazily,
best first. Every candidate passes every filter on that snapshot:

- capability: tools when the request carries tools, vision when it carries images, JSON mode when
  it asks for it, and a context window that holds the prompt estimate plus the completion budget;
- key health (an ``invalid`` key is out) and cooldowns of the slot, its key and its model;
- caps: a candidate whose reservation would break any cap is skipped, never tried.

Order, under the ``chain`` strategy: ``auto`` walks the fallback chain; a model id walks the
providers that serve it (chain order first); ``provider/model`` stays on that provider. A live
sticky session's model comes first. Among the keys of one model, the key with the most headroom
on its tightest cap goes first (ties by key id), so load spreads instead of draining the first key.
Under the ``capacity`` strategy (``[router] strategy``, or the request's own), the same
candidates come cheapest first: :mod:`freellm.core.packing` prices each, the sticky session's
model still first.

The shell drives a plan: :func:`admit` re-checks a candidate against the *current* state and
reserves it in the same step (the snapshot may be stale by then), :meth:`Plan.after` applies an
outcome's failover rule (skip the provider, ask for a larger context), and when the plan runs dry
:meth:`Plan.no_capacity` says when the first candidate frees up.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType

import attrs

from freellm.core import demand as demand_
from freellm.core import health as health_
from freellm.core import ledger as ledger_
from freellm.core import outcome as outcome_
from freellm.core import packing
from freellm.core import sessions as sessions_
from freellm.core.catalog import (
    AUTO,
    AUTO_PREFIX,
    EMBEDDINGS_CHAIN,
    Catalog,
    ModelKind,
    Strategy,
    Target,
)
from freellm.core.ledger import Refusal, Slot, Ticket
from freellm.core.signals import Ceiling

__all__ = [
    "AUTO",
    "Admitted",
    "Key",
    "NoCapacity",
    "Plan",
    "RouteRequest",
    "RouterState",
    "Topology",
    "admit",
    "bind_session",
    "note_health",
    "observe",
    "plan",
    "reconfigure",
    "record",
]


@attrs.frozen
class RouteRequest:
    """What the router needs to know of a request: a chat completion (any door), or embeddings
    (``kind``), which only an embedding model serves and which ask for no completion."""

    model: str
    prompt_tokens: int
    max_tokens: int | None = None
    tools: bool = False
    vision: bool = False
    json: bool = False
    session: str | None = None
    kind: ModelKind = ModelKind.CHAT
    longest_input: int = 0  # embeddings: the estimate of the longest text
    strategy: Strategy | None = None  # None: the configured one (``[router] strategy``)


@attrs.frozen
class Key:
    """A provider key that routing may use: its id, and the secret sent with its requests.

    The secret is plaintext, in memory only (the store keeps it sealed); it is left out of
    ``repr`` so that no traceback, log line or test report prints it.
    """

    provider: str
    id: str
    secret: str = attrs.field(default="", repr=False)


def _sorted_keys(keys: Iterable[Key]) -> tuple[Key, ...]:
    return tuple(sorted(keys, key=lambda key: (key.provider, key.id)))


@attrs.frozen
class Topology:
    """The catalog and the enabled keys, with the slots of every model built once.

    ``keys`` are the keys routing may use, secrets included: one fact, held once. ``slots`` and
    the lookup by ``(provider, key id)`` are derived here and nowhere else.
    """

    catalog: Catalog
    keys: tuple[Key, ...] = attrs.field(default=(), converter=_sorted_keys)
    slots: Mapping[tuple[str, str], tuple[Slot, ...]] = attrs.field(init=False, eq=False)
    keyed_chain: tuple[Target, ...] = attrs.field(init=False, eq=False)
    keyed_chains: Mapping[str, tuple[Target, ...]] = attrs.field(init=False, eq=False)
    _by_ref: Mapping[tuple[str, str], Key] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        by_ref = {(key.provider, key.id): key for key in self.keys}
        slots: dict[tuple[str, str], tuple[Slot, ...]] = {}
        for provider_id, provider in self.catalog.providers.items():
            key_ids = [key.id for key in self.keys if key.provider == provider_id]
            for model in provider.models.values():
                slots[provider_id, model.id] = tuple(
                    Slot(provider_id, key_id, model, provider.daily_reset) for key_id in key_ids
                )
        object.__setattr__(self, "slots", MappingProxyType(slots))

        # The chain's targets that some key can serve: a request walks only these (most users
        # have keys for a few providers of a long chain).
        def keyed(chain: tuple[Target, ...]) -> tuple[Target, ...]:
            return tuple(t for t in chain if slots.get((t.provider, t.model.id)))

        object.__setattr__(self, "keyed_chain", keyed(self.catalog.chain_targets))
        chains = {name: keyed(chain) for name, chain in self.catalog.chains.items()}
        object.__setattr__(self, "keyed_chains", MappingProxyType(chains))
        object.__setattr__(self, "_by_ref", MappingProxyType(by_ref))

    def key(self, provider: str, key_id: str) -> Key | None:
        """The key ``key_id`` of ``provider``, if routing may use it now."""
        return self._by_ref.get((provider, key_id))

    @property
    def keyed_providers(self) -> frozenset[str]:
        """The providers of the catalog that have at least one usable key."""
        return frozenset(
            key.provider for key in self.keys if key.provider in self.catalog.providers
        )


@attrs.frozen
class RouterState:
    """Everything the router reads: one value, replaced after every transition, never mutated."""

    topology: Topology
    ledger: ledger_.Ledger = attrs.field(factory=ledger_.Ledger)
    health: health_.Health = attrs.field(factory=health_.Health)
    sessions: sessions_.Sessions = attrs.field(factory=sessions_.Sessions)
    demand: demand_.Demand = attrs.field(factory=demand_.Demand)  # the capacity strategy's

    @property
    def catalog(self) -> Catalog:
        return self.topology.catalog


@attrs.frozen
class NoCapacity:
    """No candidate can take the request. ``retry_at``: the earliest a refused one frees up
    (``None`` when none will by waiting: every candidate is invalid, too small, or there are none).
    """

    retry_at: float | None
    unknown_model: bool = False
    refusals: tuple[tuple[str, str], ...] = ()  # (provider/model[#key], reason), for diagnostics


@attrs.frozen
class Admitted:
    state: RouterState
    ticket: Ticket


def completion_budget(state: RouterState, request: RouteRequest) -> int:
    if request.kind is ModelKind.EMBEDDING:
        return 0
    if request.max_tokens is not None:
        return request.max_tokens
    return state.catalog.settings.default_completion_tokens


class Plan:
    """Candidates for one request, computed lazily from one snapshot. Iterate it once.

    The keys of one target are ranked together when the plan reaches that target; targets after
    it are not looked at until the plan gets there.
    """

    def __init__(self, state: RouterState, request: RouteRequest, now: float) -> None:
        self._state = state
        self._request = request
        self._now = now
        self._budget = completion_budget(state, request)
        self._tokens = request.prompt_tokens + self._budget
        self._max = state.catalog.settings.max_attempts
        self._yielded = 0
        self._skip_providers: set[str] = set()
        self._skip_targets: set[tuple[str, str]] = set()
        self._min_context = 0
        # What was set aside, explained only if nothing fits (explaining costs more than checking).
        self._set_aside: list[tuple[str, Slot | None, Refusal | None]] = []
        self.unknown_model = False
        self._targets = self._ordered_targets()
        self._next_target = 0
        self._pending: list[Slot] = []  # ranked keys of the current target, best last
        strategy = request.strategy or state.catalog.settings.strategy
        # The capacity strategy's candidates, priced: (score, position, key id, slot), a heap;
        # a target put off as a last resort stands for its keys (key id "").
        self._priced: list[tuple[float, int, str, Slot | Target]] | None = (
            [] if strategy is Strategy.CAPACITY else None
        )
        # What it expects the request to cost, and the size up to which token-capped budgets
        # take requests (None: no threshold; embeddings are sized by their inputs, not so).
        self._cost = demand_.estimate(request.prompt_tokens, request.max_tokens)
        self._star = (
            state.demand.star
            if strategy is Strategy.CAPACITY and request.kind is ModelKind.CHAT
            else None
        )
        self._observed = False

    @property
    def tokens(self) -> int:
        """What a reservation for this request counts: prompt estimate plus completion budget."""
        return self._tokens

    def __iter__(self) -> Iterator[Slot]:
        return self

    def __next__(self) -> Slot:
        if self._yielded >= self._max:
            raise StopIteration
        if self._priced is not None:
            slot = self._cheapest()
            self._yielded += 1
            return slot
        while not self._pending:
            if self._next_target >= len(self._targets):
                raise StopIteration
            target = self._targets[self._next_target]
            self._next_target += 1
            self._pending = self._rank(target)
        self._yielded += 1
        return self._pending.pop()

    def admit(self, state: RouterState, slot: Slot, *, now: float) -> Admitted | Refusal:
        """:func:`admit` ``slot`` for this request on the current ``state``.

        While ``state`` is still the one this plan was made from (nothing changed it since), the
        check the plan made stands, and the reservation is counted at the plan's own time
        without making it again.
        """
        if state is self._state:
            ledger, ticket = ledger_.book(state.ledger, slot, self._tokens, now=self._now)
            admitted = Admitted(
                RouterState(state.topology, ledger, state.health, state.sessions, state.demand),
                ticket,
            )
        else:
            verdict = admit(state, slot, self._tokens, now=now)
            if isinstance(verdict, Refusal):
                return verdict
            admitted = verdict
        if self._priced is None or self._observed or self._request.kind is not ModelKind.CHAT:
            return admitted
        self._observed = True  # once per request, whatever its attempts
        return Admitted(self._observe(admitted.state, now), admitted.ticket)

    def _observe(self, state: RouterState, now: float) -> RouterState:
        """``state`` with this request in the capacity strategy's histogram, and the threshold
        worked out again when it is due (over this request's candidates)."""
        demand = demand_.observe(state.demand, self._cost, now=now)
        if demand.star_due(now):
            tokens_left, requests_left, reach = packing.day_pools(
                state.ledger, state.topology, self._targets, now
            )
            star = demand_.threshold(demand, tokens_left, requests_left, reach, now=now)
            demand = attrs.evolve(demand, star=star, star_at=now)
        return RouterState(state.topology, state.ledger, state.health, state.sessions, demand)

    def refused(self, slot: Slot, refusal: Refusal) -> None:
        """Note that :func:`admit` refused ``slot`` (for :meth:`no_capacity`)."""
        self._set_aside.append((f"{slot.name}#{slot.key_id}", None, refusal))

    def cannot_serve(self, slot: Slot, reason: str) -> None:
        """Rule out ``slot``'s whole target: its dialect cannot express this request."""
        self._set_aside.append((slot.name, None, Refusal(reason, None)))
        self._skip_targets.add((slot.provider, slot.model.id))
        self._pending = []

    def after(self, slot: Slot, result: outcome_.Outcome) -> None:
        """Apply ``result``'s failover rule to the rest of this plan."""
        failover = result.rule.failover
        if failover is outcome_.Failover.NEXT_PROVIDER:
            self._skip_providers.add(slot.provider)
        elif failover is outcome_.Failover.NEXT_MODEL:
            self._skip_targets.add((slot.provider, slot.model.id))
        elif failover is outcome_.Failover.LARGER_CONTEXT:
            self._skip_targets.add((slot.provider, slot.model.id))
            if slot.model.context is not None:
                self._min_context = max(self._min_context, slot.model.context + 1)
        else:
            return
        self._pending = []  # the rest of this target's keys are ruled out with it

    def no_capacity(self) -> NoCapacity:
        """Why nothing fits, and the earliest time a candidate that was set aside frees up."""
        reasons = []
        retry_at: float | None = None
        for name, slot, refusal in self._set_aside:
            if refusal is None:
                assert slot is not None
                refusal = self._explain(slot)
            reasons.append((name, refusal.reason))
            if refusal.retry_at is not None and (retry_at is None or refusal.retry_at < retry_at):
                retry_at = refusal.retry_at
        return NoCapacity(retry_at, self.unknown_model, tuple(reasons))

    # -- internals --

    def _ordered_targets(self) -> tuple[Target, ...]:
        catalog = self._state.catalog
        request = self._request
        topology = self._state.topology
        name = catalog.alias(request.model)
        embedding = request.kind is ModelKind.EMBEDDING
        targets: tuple[Target, ...]
        if name == AUTO and not embedding:
            targets = topology.keyed_chain
        elif name == AUTO or name.startswith(AUTO_PREFIX):
            chain_name = EMBEDDINGS_CHAIN if name == AUTO else name.removeprefix(AUTO_PREFIX)
            chain = topology.keyed_chains.get(chain_name)
            if chain is None:
                self.unknown_model = True
                return ()
            targets = chain
            if embedding:
                targets = self._one_model(chain)
        else:
            named = catalog.resolve(name)
            if not named:
                self.unknown_model = True
                return ()
            slots = topology.slots
            targets = tuple(t for t in named if slots.get((t.provider, t.model.id)))
        if not targets:
            return ()
        binding = sessions_.lookup(
            self._state.sessions,
            request.session,
            now=self._now,
            ttl=catalog.settings.sticky_ttl_s,
        )
        if binding is not None:
            for index, target in enumerate(targets):
                if target.provider == binding.provider and target.model.id == binding.model:
                    self._sticky = True
                    return (target, *targets[:index], *targets[index + 1 :])
        return targets

    def _one_model(self, chain: tuple[Target, ...]) -> tuple[Target, ...]:
        """The targets of the first embedding model of ``chain`` (keyed ones only): vectors of
        two models do not mix, so ``auto`` for embeddings means one model, on any key of any
        provider that serves it, chain order first."""
        first = next((t for t in chain if t.model.kind is ModelKind.EMBEDDING), None)
        if first is None:
            return ()
        model_id = first.model.id
        slots = self._state.topology.slots
        serving = [t for t in chain if t.model.id == model_id]
        serving += [
            t
            for t in self._state.catalog.by_model.get(model_id, ())
            if t not in serving and slots.get((t.provider, t.model.id))
        ]
        return tuple(serving)

    _sticky = False  # the first target is a live sticky session's model

    def _cheapest(self) -> Slot:
        """The capacity strategy's next candidate: the least score among the targets priced so
        far, once no target left can score lower (:func:`freellm.core.packing.preference` bounds
        them from below), so that a plan prices only as far down the chain as it must."""
        priced = self._priced
        assert priced is not None
        targets = self._targets
        while True:
            while self._next_target < len(targets):
                position = self._next_target
                if priced and priced[0][0] <= packing.preference(position):
                    break
                self._next_target += 1
                self._price(targets[position], position)
            if not priced:
                raise StopIteration
            _, position, _, item = heapq.heappop(priced)
            if not isinstance(item, Slot):  # a target put off as a last resort: price it now
                self._price(item, position, last_resort=True)
            elif self._still_open(item):
                return item

    def _price(self, target: Target, position: int, *, last_resort: bool = False) -> None:
        """Price the keys of ``target`` that pass every filter into the plan's heap.

        A token-capped target for a request above the threshold scores at least
        ``LAST_RESORT``: it goes into the heap as itself, at that score, and its keys are priced
        only if the plan gets to it (most plans end before).
        """
        priced = self._priced
        assert priced is not None
        # A sticky session's model goes first while it has room: below any price, the
        # threshold's last resort included.
        sticky = position == 0 and self._sticky
        bonus = -1.0 if sticky else packing.preference(position)
        star = self._star
        fits = (
            None if star is None or sticky or target.model.caps.tpd is None else self._cost <= star
        )
        if fits is False and not last_resort:
            heapq.heappush(priced, (packing.LAST_RESORT + bonus, position, "", target))
            return
        slots = self._open_slots(target)
        if not slots:
            return
        ledger, now, tokens = self._state.ledger, self._now, self._tokens
        prices = packing.prices(ledger, slots, tokens, now, fits=fits)
        for slot, price in zip(slots, prices, strict=True):
            if price is None:
                self._set_aside.append((f"{target.name}#{slot.key_id}", slot, None))
            else:
                heapq.heappush(priced, (price + bonus, position, slot.key_id, slot))

    def _still_open(self, slot: Slot) -> bool:
        """Whether a priced ``slot`` survived what :meth:`after` and :meth:`cannot_serve` ruled
        out since it was priced (the chain strategy drops its ranked keys instead)."""
        if slot.provider in self._skip_providers:
            return False
        if (slot.provider, slot.model.id) in self._skip_targets:
            return False
        context = slot.model.context
        return not self._min_context or (context is not None and context >= self._min_context)

    def _open_slots(self, target: Target) -> tuple[Slot, ...]:
        """The keys of ``target`` that pass the filters of the target and of the key's health;
        what is left to check is each key's room."""
        provider = target.provider
        model = target.model
        if provider in self._skip_providers or (provider, model.id) in self._skip_targets:
            return ()
        set_aside = self._set_aside
        unfit = self._unfit(target)
        if unfit is not None:
            set_aside.append((target.name, None, Refusal(unfit, None)))
            return ()
        state = self._state
        ledger = state.ledger
        slots = state.topology.slots.get((provider, model.id), ())
        if ledger.cooldowns and ledger_.cooldown_of(ledger, target_scope(target), self._now):
            set_aside.extend((f"{target.name}#{slot.key_id}", slot, None) for slot in slots)
            return ()
        invalid = state.health.invalid
        if not invalid:
            return slots
        healthy = []
        for slot in slots:
            if slot.health_key in invalid:
                set_aside.append(
                    (f"{target.name}#{slot.key_id}", None, Refusal("invalid key", None))
                )
            else:
                healthy.append(slot)
        return tuple(healthy)

    def _rank(self, target: Target) -> list[Slot]:
        """The keys of ``target`` that pass every filter, best last (for ``pop``)."""
        set_aside = self._set_aside
        ledger, now, tokens = self._state.ledger, self._now, self._tokens
        ranked: list[tuple[float, str, Slot]] = []
        for slot in self._open_slots(target):
            room = ledger_.headroom(ledger, slot, tokens, now)
            if room is None:
                set_aside.append((f"{slot.name}#{slot.key_id}", slot, None))
            else:
                # Most headroom first, ties by key id; keys of one target are unique.
                ranked.append((room, slot.key_id, slot))
        ranked.sort(key=_best_first, reverse=True)  # best last
        return [slot for _, _, slot in ranked]

    def _unfit(self, target: Target) -> str | None:
        model = target.model
        request = self._request
        if model.kind is not request.kind:
            return "not an embedding model" if model.kind is ModelKind.CHAT else "not a chat model"
        if request.kind is ModelKind.EMBEDDING:
            # An embedding model's context is its limit per text, not per call.
            if model.context is not None and request.longest_input > model.context:
                return f"an input longer than its {model.context}-token limit"
            return None
        if request.tools and not model.tools:
            return "no tool calling"
        if request.vision and not model.vision:
            return "no vision"
        if request.json and not model.json:
            return "no JSON mode"
        if model.context is not None:
            if model.context < self._min_context:
                return "context smaller than one that was too small"
            if request.prompt_tokens + self._budget > model.context:
                return f"context window {model.context} too small"
        elif self._min_context:
            return "context window unknown"
        max_tokens = request.max_tokens
        if (
            model.max_output is not None
            and max_tokens is not None
            and max_tokens > model.max_output
        ):
            return f"max_tokens above the model's {model.max_output}"
        return None

    def _explain(self, slot: Slot) -> Refusal:
        """Why ``slot`` was set aside on this plan's snapshot, and when it frees up."""
        ledger, now = self._state.ledger, self._now
        model_cooldown = ledger_.cooldown_of(ledger, slot.model_scope, now)
        if model_cooldown is None:
            return ledger_.explain(ledger, slot, self._tokens, now)
        # Under its model's cooldown, a key that is blocked itself frees at the later of the two.
        until: float | None = model_cooldown.until
        if ledger_.headroom(ledger, slot, self._tokens, now) is None:
            freed = ledger_.explain(ledger, slot, self._tokens, now).retry_at
            until = None if freed is None else max(model_cooldown.until, freed)
        return Refusal(f"cooldown: {model_cooldown.reason}", until)


def target_scope(target: Target) -> ledger_.Scope:
    return (target.provider, None, target.model.id)


def _best_first(item: tuple[float, str, Slot]) -> tuple[float, str]:
    return -item[0], item[1]


def plan(state: RouterState, request: RouteRequest, *, now: float) -> Plan:
    """The candidates for ``request`` at ``now``, lazily, at most ``max_attempts`` of them."""
    return Plan(state, request, now)


def admit(state: RouterState, slot: Slot, tokens: int, *, now: float) -> Admitted | Refusal:
    """Re-check ``slot`` against the current ``state`` and reserve ``tokens`` on it.

    This is the authority: a plan's snapshot may be stale by the time its candidate is tried (its
    key may even have been removed since).
    """
    if state.topology.key(slot.provider, slot.key_id) is None:
        return Refusal("key removed", None)
    if not health_.is_routable(state.health, slot.provider, slot.key_id):
        return Refusal("invalid key", None)
    model_cooldown = ledger_.cooldown_of(state.ledger, slot.model_scope, now)
    if model_cooldown is not None:
        return Refusal(f"cooldown: {model_cooldown.reason}", model_cooldown.until)
    reserved = ledger_.reserve(state.ledger, slot, tokens, now=now)
    if isinstance(reserved, Refusal):
        return reserved
    ledger, ticket = reserved
    return Admitted(
        RouterState(state.topology, ledger, state.health, state.sessions, state.demand), ticket
    )


def record(
    state: RouterState,
    ticket: Ticket,
    result: outcome_.Outcome,
    *,
    tokens: int | None,
    now: float,
) -> RouterState:
    """``state`` after the call made under ``ticket`` ended with ``result``."""
    ledger, health = outcome_.record(
        state.ledger, state.health, ticket, result, tokens=tokens, now=now
    )
    return RouterState(state.topology, ledger, health, state.sessions, state.demand)


def observe(
    state: RouterState, slot: Slot, ceilings: tuple[Ceiling, ...], *, now: float
) -> RouterState:
    """``state`` with what ``slot``'s provider reported it has left (rate-limit headers)."""
    if not ceilings:
        return state
    ledger = ledger_.observe(state.ledger, slot, ceilings, now=now)
    return RouterState(state.topology, ledger, state.health, state.sessions, state.demand)


def note_health(
    state: RouterState,
    provider: str,
    key: str,
    event: health_.Event,
    *,
    now: float,
    error: str | None = None,
) -> RouterState:
    """``state`` after ``event`` happened to a key outside any request (a key check)."""
    updated = health_.apply(state.health, provider, key, event, now=now, error=error)
    if updated is state.health:
        return state
    return RouterState(state.topology, state.ledger, updated, state.sessions, state.demand)


def reconfigure(
    state: RouterState,
    topology: Topology,
    health: Mapping[tuple[str, str], health_.KeyHealth | None] = MappingProxyType({}),
) -> RouterState:
    """``state`` with new keys, secrets or chain (``topology``), and the health entries that were
    recorded elsewhere (``None``: the key was removed, its health goes with it). What the ledger
    and the sessions know is kept: usage belongs to keys that may come back."""
    table = state.health
    for (provider, key), entry in health.items():
        table = health_.replace(table, provider, key, entry)
    if topology == state.topology and table is state.health:
        return state
    return RouterState(topology, state.ledger, table, state.sessions, state.demand)


def bind_session(state: RouterState, session: str | None, slot: Slot, *, now: float) -> RouterState:
    """``state`` with ``session`` kept on ``slot``'s model (after a turn it answered)."""
    if session is None:
        return state
    settings = state.catalog.settings
    sessions = sessions_.bind(
        state.sessions,
        session,
        slot.provider,
        slot.model.id,
        now=now,
        ttl=settings.sticky_ttl_s,
        max_size=settings.max_sessions,
    )
    return RouterState(state.topology, state.ledger, state.health, sessions, state.demand)
