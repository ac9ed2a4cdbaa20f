"""What the recent requests looked like: a histogram of their sizes, and the size up to which a
token-capped budget should take them (the capacity strategy's threshold).

Theory of operation
-------------------
Where token caps and request caps are mixed, the requests that serve the most are the small ones
on the token-capped keys (a 500-token request takes 0.5% of 100k tokens) and the others on the
request-capped keys (any request is 1 of 250). Which sizes are "small" depends on the traffic:
the threshold is the size ``s`` at which both kinds of budget run out together when the requests
keep coming as they came,

    tokens left / (tokens per request of the requests up to s)
        = requests left / (share of the requests above s),

the requests above what any token-capped key can take at all (its context, its tokens a minute
or a day: its *reach*) counting on the right as they must. The router state keeps the sizes of
the requests it admitted (:func:`observe`), weighed so that the last hour counts twice the hour
before it; :func:`threshold` solves the balance on that histogram.

Sizes are estimates of what a request will cost: its prompt plus ``EXPECTED_COMPLETION``
tokens (or its ``max_tokens``, when smaller), not the completion budget the ledger reserves:
the day budgets are charged what was used, and a reservation of 1,024 completion tokens makes
a 100-token prompt look as dear as a 1,000-token one.

The histogram has ``PER_OCTAVE`` buckets per doubling of size (19% apart). Weights grow with time
(an observation at ``t`` weighs ``2 ** ((t - origin) / HALF_LIFE_S)``) instead of decaying the
older ones, so an observation touches one bucket; the origin moves when the weights grow large.
"""

from __future__ import annotations

import math
from typing import Final

import attrs

__all__ = [
    "EXPECTED_COMPLETION",
    "HALF_LIFE_S",
    "MIN_SEEN",
    "STAR_EVERY_S",
    "Demand",
    "estimate",
    "observe",
    "threshold",
]

PER_OCTAVE: Final = 4
BUCKETS: Final = 24 * PER_OCTAVE  # up to 16M tokens: every bigger request in the last bucket
HALF_LIFE_S: Final = 3600.0
"""How fast old requests stop counting: an hour ago weighs half of now."""
MIN_SEEN: Final = 20.0
"""Below this many (weighted) requests the histogram says nothing (``threshold`` is None)."""
EXPECTED_COMPLETION: Final = 256
"""What a completion is expected to cost when nothing smaller was asked (the public traces'
medians run from 13 to 350 tokens)."""
_REBASE_S: Final = 40 * HALF_LIFE_S  # weights stay below 2**40


STAR_EVERY_S: Final = 10.0
"""How long a threshold stands before the router works it out again (it moves slowly: the
budgets and the histogram change by a request at a time)."""


@attrs.frozen
class Demand:
    """Sizes of the recent requests: ``weights[i]`` for sizes in bucket ``i`` (see the module
    docstring), weighed relative to ``origin``; and the last threshold the router worked out
    (``star``, at ``star_at``; ``None``: none)."""

    weights: tuple[float, ...] = (0.0,) * BUCKETS
    origin: float | None = None
    star: float | None = None
    star_at: float | None = None

    def star_due(self, now: float) -> bool:
        """Whether the threshold is older than ``STAR_EVERY_S`` (or was never worked out)."""
        return self.star_at is None or now - self.star_at >= STAR_EVERY_S


def estimate(prompt_tokens: int, max_tokens: int | None) -> int:
    """What a request is expected to cost: its prompt and a typical completion."""
    completion = EXPECTED_COMPLETION if max_tokens is None else min(max_tokens, EXPECTED_COMPLETION)
    return prompt_tokens + completion


def _bucket(tokens: int) -> int:
    if tokens < 1:
        return 0
    return min(int(PER_OCTAVE * math.log2(tokens)), BUCKETS - 1)


def _upper(bucket: int) -> float:
    """The largest size of ``bucket`` (sizes in it are below this)."""
    return 2 ** ((bucket + 1) / PER_OCTAVE)


def _middle(bucket: int) -> float:
    return 2 ** ((bucket + 0.5) / PER_OCTAVE)


def observe(demand: Demand, tokens: int, *, now: float) -> Demand:
    """``demand`` with one more request of ``tokens`` (an estimate) seen at ``now``."""
    weights, origin = demand.weights, demand.origin
    if origin is None or now - origin > _REBASE_S:
        scale = 1.0 if origin is None else 2 ** ((origin - now) / HALF_LIFE_S)
        weights = tuple(weight * scale for weight in weights)
        origin = now
    index = _bucket(tokens)
    weight = 2 ** ((now - origin) / HALF_LIFE_S)
    weights = (*weights[:index], weights[index] + weight, *weights[index + 1 :])
    return Demand(weights, origin, demand.star, demand.star_at)


def threshold(
    demand: Demand, tokens_left: float, requests_left: float, reach: float, *, now: float
) -> float | None:
    """The size up to which token-capped budgets (``tokens_left`` in all, taking requests up to
    ``reach`` tokens) should take requests, the rest going to request-capped budgets
    (``requests_left``), so that both run out together when requests come as they came. ``None``
    when the histogram holds too few requests, or there is nothing to balance (no budget of one
    kind). The answer is a bucket's upper edge, or ``reach`` when the token-capped budgets last
    longer even taking every request they can and some need the request-capped ones. (When
    every request fits them, the largest still go to the request-capped budgets: those run out
    and the token-capped ones take the rest, which never serves fewer.)"""
    if tokens_left <= 0 or requests_left <= 0 or demand.origin is None:
        return None
    weights = demand.weights
    total = sum(weights)
    scale = 2 ** ((demand.origin - now) / HALF_LIFE_S)  # weights in requests "as of now"
    if total * scale < MIN_SEEN:
        return None
    tokens_per_request = 0.0  # of the requests up to the threshold, per request that comes
    share_below = 0.0
    best = None
    for index, weight in enumerate(weights):
        upper = _upper(index)
        if upper > reach:
            break
        if not weight:
            best = upper
            continue
        share = weight / total
        tokens_per_request += share * _middle(index)
        share_below += share
        # How many requests each kind of budget lasts, with the threshold at ``upper``.
        tokens_last = tokens_left / tokens_per_request
        requests_last = requests_left / (1 - share_below) if share_below < 1 else math.inf
        if tokens_last < requests_last:
            return best if best is not None else _upper(index - 1)
        best = upper
    return reach
