"""What a simulated provider really does: its caps, how long it takes, and how it fails.

All values, no behaviour: :class:`~freellm.sim.fleet.Fleet` reads them once, when it is made.
Every constructor raises ``ValueError`` for a value out of range.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from freellm.sim.fakes.caps import FakeCaps

__all__ = ["REFUSAL_S", "Faults", "Latency", "Truth"]

REFUSAL_S = 0.05
"""How long a refusal (429, 401, 503) takes to arrive: providers answer those at once."""


def _at_least(low: float) -> Any:
    def check(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
        if not (low <= value < math.inf):
            raise ValueError(f"{attribute.name} must be finite and >= {low}, not {value!r}")

    return check


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (0 < value < math.inf):
        raise ValueError(f"{attribute.name} must be finite and > 0, not {value!r}")


def _share(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{attribute.name} must be within [0, 1], not {value!r}")


@attrs.frozen
class Latency:
    """How long an answer takes: `ttft_s` to the first token, then `tokens_per_s`.

    Each draw (the time to first token, the generation time) is multiplied by a uniform factor
    in ``[1 - jitter, 1 + jitter]``. A refusal takes `refusal_s`, without jitter.
    """

    ttft_s: float = attrs.field(default=0.5, validator=_at_least(0.0))
    tokens_per_s: float = attrs.field(default=150.0, validator=_positive)
    jitter: float = attrs.field(default=0.2, validator=_share)
    refusal_s: float = attrs.field(default=REFUSAL_S, validator=_at_least(0.0))


def _outages(value: Any) -> tuple[tuple[float, float], ...]:
    spans = tuple((float(start), float(end)) for start, end in value)
    for start, end in spans:
        if not start < end:
            raise ValueError(f"an outage must start before it ends, not [{start}, {end})")
    return spans


def _key_ids(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@attrs.frozen
class Faults:
    """Failures to inject.

    `error_rate`: the share of calls answered 503 (drawn per call from the fleet's seed);
    `outages`: ``[start, end)`` spans (epoch seconds) in which every call is answered 503;
    `invalid_keys`: key ids the provider refuses with its own invalid-key answer (a 401, or
    Gemini's 400 ``API_KEY_INVALID``).
    """

    error_rate: float = attrs.field(default=0.0, validator=_share)
    outages: tuple[tuple[float, float], ...] = attrs.field(default=(), converter=_outages)
    invalid_keys: frozenset[str] = attrs.field(default=frozenset(), converter=_key_ids)

    def down(self, now: float) -> bool:
        """Whether an outage covers `now`."""
        return any(start <= now < end for start, end in self.outages)


def _read_only_caps(value: Mapping[str, FakeCaps] | None) -> Mapping[str, FakeCaps] | None:
    return None if value is None else MappingProxyType(dict(value))


def _read_only_latencies(value: Mapping[str, Latency]) -> Mapping[str, Latency]:
    return MappingProxyType(dict(value))


@attrs.frozen
class Truth:
    """What one provider really enforces and how it behaves; None means "as configured".

    - `caps`: per model id, the caps each key really has on that model (a model left out keeps
      its configured caps). None: every model as the catalog configures it, ``account`` models
      sharing one counter per key, as freellm's ledger counts them.
    - `account`: caps each key really has across all the provider's models, on top of the
      per-model ones (OpenRouter's free tier). When given, it replaces the configured caps of
      the catalog's ``account`` models that `caps` does not name.
    - `latency`, and `model_latency` per model id where a model differs.
    - `faults` to inject.
    - `flavor`: the fake flavor whose headers and bodies the provider sends (see
      :mod:`freellm.sim.fakes.flavors`); None picks it from the provider's dialect and id.
    - `refused_count`: whether a call refused for a cap (429) still uses one request of the
      key's request caps (its tokens are not counted). True by default: OpenAI's rate-limit
      guide says "unsuccessful requests contribute to your per-minute limit, so continuously
      resending a request won't work", and freellm's ledger counts them so. The fake servers
      (live mode) do not: set it False to answer exactly as they do.
    """

    caps: Mapping[str, FakeCaps] | None = attrs.field(default=None, converter=_read_only_caps)
    account: FakeCaps | None = None
    latency: Latency = Latency()
    faults: Faults = Faults()
    model_latency: Mapping[str, Latency] = attrs.field(factory=dict, converter=_read_only_latencies)
    flavor: str | None = None
    refused_count: bool = True
