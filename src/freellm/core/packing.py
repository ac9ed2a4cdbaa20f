"""The capacity strategy: send a request where it costs the least of what is left.

Theory of operation
-------------------
Free tiers mix request caps and token caps, per minute and per day. Walking the fallback chain
in order (the ``chain`` strategy) spends the first entry's budget on whatever comes: a key capped
at 100k tokens a day goes in minutes on 7,000-token prompts that a key capped at 250 requests a
day would have taken at no extra cost, and then the small requests that only fit the first key
find it empty. Which request goes where decides how many requests the same keys serve.

The ``capacity`` strategy prices every candidate slot that passed every filter by what this
request would take of it: for each cap, the request's cost (1 request, or its tokens) over what
is left of that cap before it. The tightest cap decides (the largest share): a request that takes
a tenth of what is left of one cap ends that key's day ten requests sooner, whatever its other
caps say. Day caps and minute caps are priced apart and weighed differently:

    price = day share + MINUTE_WEIGHT x minute share

The day share is the target's, not the key's: the keys of one model on one provider take the
same requests, so what a request costs that model is its share of what all of them have left
(1 of 100 requests across two keys of 50, not 1 of 50). Pricing each key alone made a model with
two keys look twice as dear against a model with one key of the same budget; pooled, a long
prompt is weighed against everything that could take it instead. Each key then adds its own day
share at ``KEY_WEIGHT`` (a thousandth), which orders a target's keys by their own headroom (load
spreads, as in the chain strategy) without moving the target against the others. (Pooling over
*every* target, as if all models were one budget, was tried and served less on the Azure traces:
models differ in context window and per-minute caps, so their budgets are not one pool.)

A day budget does not come back until its reset, so spending it is what costs later requests; a
minute budget refills within a minute, so spending it costs only the next few seconds' requests.
``MINUTE_WEIGHT`` (a tenth) keeps a nearly full minute from being free, so a burst spreads over
keys instead of waiting on one, without letting minute caps outvote the day. A slot with no
known cap costs nothing, and one whose only caps are per minute costs only their weighted share:
renewable capacity is used before scarce capacity.

The chain still means something: the user put the models they prefer first. A candidate's score
is its price plus :func:`preference`, ``PREFERENCE_STEP`` (0.01) per chain position, at most
``PREFERENCE_MAX`` (0.05). So an earlier entry wins unless a later one costs at least one point of
its tightest remaining budget less per position between them, and never more than five points:
a request that would take 5% more of what is left of some budget on the preferred model is
exactly the request that empties it early, and a preference stronger than that is what the
``chain`` strategy is for. Equal scores keep chain order, then key id (deterministic).

The bound also keeps planning lazy. Prices are never negative, so no target at chain position
``i`` or later can score below ``preference(i)``; the plan prices targets in chain order and
yields the best candidate as soon as no target left can beat it. While the first entry has room
(it usually has: a fresh day budget of 1,000 requests prices a request at 0.001), a plan looks
at one or two targets, as the chain strategy does.

A sticky session's model is not priced against the others: while it has room it goes first, as
in the chain strategy (a conversation that changes models mid-way costs more than any budget).

What it does not promise: to serve at least what the chain serves on every instance. Where it
first sends a request past the chain's key A to a key B that can take larger requests than A has
room for, requests one token larger than A has left, as many as B holds, make it serve one fewer
than the chain, and so for any rule that makes that move (``tests/core/test_packing.py`` checks
it; the README gives the argument and the smallest instance).

The threshold. Shares of what is left compare a token-capped budget with a request-capped one
at the rate of the moment (a request of ``s`` tokens against one request: ``s / tokens left``
against ``1 / requests left``), which sends medium requests to the token-capped keys while their
day is fresh and leaves them short for the small ones later. Where the router has seen enough
requests (:mod:`freellm.core.demand`), a token-capped target takes the requests up to the size
at which the token-capped and request-capped budgets run out together, at a day price of 0, and
larger ones only as a last resort (``LAST_RESORT``, above every share); the minute and key terms
stay, and a sticky session's model is exempt (it goes first while it has room). The plan puts
such a target off without pricing its keys until nothing cheaper is left.

Tried and not kept, measured with ``bench/capacity_replay.py``: pooling over every target
(models differ in context and minute caps), other weights for the chain and the minute, pricing
a token-capped key by the threshold instead of switching at it, and pacing a day budget over the
day.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

from freellm.core.catalog import Strategy
from freellm.core.ledger import Ledger, Slot, cooling

if TYPE_CHECKING:
    from freellm.core.catalog import Caps, Target
    from freellm.core.router import Topology

__all__ = [
    "KEY_WEIGHT",
    "LAST_RESORT",
    "MINUTE_WEIGHT",
    "PREFERENCE_MAX",
    "PREFERENCE_STEP",
    "Strategy",
    "budget",
    "day_pools",
    "preference",
    "prices",
]


MINUTE_WEIGHT: Final = 0.1
"""How much a share of a minute budget weighs against the same share of a day budget."""
PREFERENCE_STEP: Final = 0.01
"""What one chain position is worth, in shares of the tightest remaining budget."""
PREFERENCE_MAX: Final = 0.05
"""The most chain order can be worth: five positions' worth."""
LAST_RESORT: Final = 1.0
"""The day price of a token-capped target for a request above the threshold: all of a budget,
so every target with room goes before it, and it still serves when none has."""
KEY_WEIGHT: Final = 0.001
"""How much a key's own day share weighs beside its target's: enough to order the keys."""


def preference(position: int) -> float:
    """The score added for chain position ``position`` (0 is the first): the chain as a bounded
    preference. Never decreasing, so it is also the least score any later position can have."""
    return min(position * PREFERENCE_STEP, PREFERENCE_MAX)


def prices(
    ledger: Ledger, slots: Sequence[Slot], tokens: int, now: float, *, fits: bool | None = None
) -> list[float | None]:
    """What one request of ``tokens`` would take of each of ``slots`` (the keys of one target),
    ``None`` for a key that cannot take it at all (the very verdict of
    :func:`freellm.core.ledger.headroom`: the same cooldowns, caps, concurrency and
    provider-reported limits).

    ``fits``: for a token-capped target under a threshold (:mod:`freellm.core.demand`),
    whether the request is one it should take (its day price is then 0) or not
    (``LAST_RESORT``); ``None`` prices its share of the day budgets.

    The keys of one target are one pool: the day share is the request's share of what all the
    target's keys that can take it have left (:func:`budget`); each key adds its own minute share
    at ``MINUTE_WEIGHT`` and its own day share at ``KEY_WEIGHT``, which orders the target's keys
    by their own headroom without moving the target against the others.
    """
    budgets = [budget(ledger, slot, tokens, now) for slot in slots]
    pool_requests = pool_tokens = 0.0
    for left in budgets:
        if left is not None:
            pool_requests += left[0]
            pool_tokens += left[1]
    if not pool_requests:  # no key can take it (a key that can has a request left)
        return [None] * len(budgets)
    if fits is None:
        day = _share(pool_requests, pool_tokens, tokens)
    else:
        day = 0.0 if fits else LAST_RESORT
    return [
        None
        if left is None
        else day + MINUTE_WEIGHT * left[2] + KEY_WEIGHT * _share(left[0], left[1], tokens)
        for left in budgets
    ]


def _share(requests: float, tokens_left: float, tokens: int) -> float:
    """The larger of one request's share of ``requests`` and ``tokens``' of ``tokens_left``."""
    share = 1 / requests
    if tokens and tokens / tokens_left > share:
        share = tokens / tokens_left
    return share


INF: Final = float("inf")


def day_pools(
    ledger: Ledger, topology: Topology, targets: Iterable[Target], now: float
) -> tuple[float, float, float]:
    """What ``targets``' keys have left of their day budgets: tokens on the token-capped ones,
    requests on the ones capped by requests alone, and the largest request a token-capped one
    takes at all (its reach: context, tokens a minute, tokens a day)."""
    tokens_left = requests_left = reach = 0.0
    usage = ledger.usage
    for target in targets:
        caps = target.model.caps
        tpd, rpd = caps.tpd, caps.rpd
        if tpd is None and rpd is None:
            continue
        for slot in topology.slots.get((target.provider, target.model.id), ()):
            used = usage.get(slot.usage_key)
            used_requests, used_tokens = (0, 0) if used is None else used.day.totals(now)
            if tpd is not None:
                tokens_left += max(0, tpd - used_tokens)
            elif rpd is not None:
                requests_left += max(0, rpd - used_requests)
        if tpd is not None:
            largest = min(tpd, caps.tpm or tpd, target.model.context or tpd)
            reach = max(reach, float(largest))
    return tokens_left, requests_left, reach


def budget(
    ledger: Ledger, slot: Slot, tokens: int, now: float
) -> tuple[float, float, float] | None:
    """What is left of ``slot``'s day budgets before this request (requests, tokens; ``inf``
    without such a cap) and the share of its minute budgets the request takes, or ``None``
    when ``slot`` cannot take it at all (the very verdict of :func:`freellm.core.ledger.headroom`:
    the same cooldowns, caps, concurrency and provider-reported limits).

    This runs for every key of every target a capacity plan looks at, so, like ``headroom``, it
    is written out for speed.
    """
    if ledger.cooldowns and cooling(ledger, slot, now):
        return None
    caps = slot.model.caps
    usage = ledger.usage.get(slot.usage_key)
    if usage is None:
        if caps.empty:
            return INF, INF, 0.0
        return _unused(caps, tokens)
    cap = caps.concurrency
    if cap is not None and usage.inflight >= cap:
        return None

    minute = 0.0
    day_requests = day_tokens = INF
    rpm, tpm, rpd, tpd = caps.rpm, caps.tpm, caps.rpd, caps.tpd
    if rpm is not None or tpm is not None:
        used_requests, used_tokens = usage.minute.totals(now)
        if rpm is not None:
            left = rpm - used_requests
            if left < 1:
                return None
            minute = 1 / left
        if tpm is not None:
            left = tpm - used_tokens
            if left < tokens:
                return None
            if tokens and tokens / left > minute:
                minute = tokens / left
    if rpd is not None or tpd is not None:
        used_requests, used_tokens = usage.day.totals(now)
        if rpd is not None:
            day_requests = rpd - used_requests
            if day_requests < 1:
                return None
        if tpd is not None:
            day_tokens = tpd - used_tokens
            if day_tokens < tokens:
                return None

    for limit in usage.limits:
        if limit.until <= now:
            continue
        requests = limit.dimension == "requests"
        cost = 1 if requests else tokens
        if limit.remaining < cost:
            return None
        if limit.window == "day":
            if requests:
                day_requests = min(day_requests, limit.remaining)
            else:
                day_tokens = min(day_tokens, limit.remaining)
        elif cost:  # a minute, or a window the provider did not name: assume it refills
            minute = max(minute, cost / limit.remaining)
    return day_requests, day_tokens, minute


def _unused(caps: Caps, tokens: int) -> tuple[float, float, float] | None:
    """:func:`budget` of a key nothing has been counted on yet: its caps whole."""
    if caps.concurrency is not None and caps.concurrency < 1:
        return None
    minute = 0.0
    rpm, tpm, rpd, tpd = caps.rpm, caps.tpm, caps.rpd, caps.tpd
    if rpm is not None:
        if rpm < 1:
            return None
        minute = 1 / rpm
    if tpm is not None:
        if tpm < tokens:
            return None
        if tokens and tokens / tpm > minute:
            minute = tokens / tpm
    if (rpd is not None and rpd < 1) or (tpd is not None and tpd < tokens):
        return None
    return (INF if rpd is None else rpd), (INF if tpd is None else tpd), minute
