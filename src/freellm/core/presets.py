"""Orders for the fallback chain that the dashboard offers as presets.

Each preset reorders the entries it is given (a permutation: nothing added, nothing dropped);
entries it knows nothing about keep their relative order after the ones it can rank.

- ``capable``: most capable first: more of tools, vision and JSON mode, then the larger context
  window, then the larger output.
- ``fastest``: the lowest time to first token measured by this server (the analytics of the last
  days); models not measured yet follow, in their current order.
- ``daily``: the largest daily capacity first: requests per day across every key the user has
  for the provider (an unknown daily cap ranks after every known one), then tokens per day.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from freellm.core.catalog import Catalog, ModelSpec

__all__ = ["PRESETS", "preset"]

PRESETS: Final = ("capable", "fastest", "daily")


def preset(
    name: str,
    entries: Sequence[str],
    catalog: Catalog,
    *,
    keys: Mapping[str, int],
    ttft_ms: Mapping[str, float],
) -> list[str]:
    """``entries`` (``provider/model``) in the order of preset ``name``.

    ``keys`` counts the user's keys per provider; ``ttft_ms`` is the measured time to first token
    per ``provider/model``. Raises ``ValueError`` for an unknown preset.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: one of {', '.join(PRESETS)}")
    ranked: list[tuple[tuple[float, ...], int, str]] = []
    unranked: list[str] = []
    for position, entry in enumerate(entries):
        model = _model(catalog, entry)
        rank: tuple[float, ...] | None
        if name == "fastest":
            measured = ttft_ms.get(entry)
            rank = None if measured is None else (measured,)
        elif model is None:
            rank = None
        elif name == "capable":
            features = model.tools + model.vision + model.json
            rank = (-features, -(model.context or 0), -(model.max_output or 0))
        else:
            provider = entry.partition("/")[0]
            count = keys.get(provider, 0)
            rpd, tpd = model.caps.rpd, model.caps.tpd
            rank = (
                1.0 if rpd is None else 0.0,  # known caps first: an unknown one may be small
                -(rpd or 0) * count,
                -(tpd or 0) * count,
            )
        if rank is None:
            unranked.append(entry)
        else:
            ranked.append((rank, position, entry))
    ranked.sort()
    return [entry for _, _, entry in ranked] + unranked


def _model(catalog: Catalog, entry: str) -> ModelSpec | None:
    provider_id, _, model_id = entry.partition("/")
    provider = catalog.providers.get(provider_id)
    return None if provider is None else provider.models.get(model_id)
