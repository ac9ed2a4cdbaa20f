"""The chain presets: permutations of the chain they are given, in the order they promise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freellm.core.catalog import Caps, Catalog, Dialect, ModelSpec, ProviderSpec
from freellm.core.presets import PRESETS, preset


def catalog_of(models: dict[str, list[ModelSpec]]) -> Catalog:
    return Catalog(
        {
            provider: ProviderSpec(
                provider,
                provider,
                "http://127.0.0.1:1",
                Dialect.OPENAI,
                models={m.id: m for m in specs},
            )
            for provider, specs in models.items()
        }
    )


CATALOG = catalog_of(
    {
        "fast": [
            ModelSpec("small", Caps(rpd=14_400, tpd=500_000), context=8192),
            ModelSpec("big", Caps(rpd=1000), context=131_072, tools=True),
        ],
        "smart": [
            ModelSpec(
                "vision", Caps(rpd=250), context=1_000_000, tools=True, vision=True, json=True
            ),
            ModelSpec("open", Caps(), context=32_768, json=True),
        ],
    }
)
ALL = ["fast/small", "fast/big", "smart/vision", "smart/open"]


def test_most_capable_first_counts_features_then_context() -> None:
    order = preset("capable", ALL, CATALOG, keys={}, ttft_ms={})
    assert order == ["smart/vision", "fast/big", "smart/open", "fast/small"]


def test_fastest_first_follows_the_measured_time_to_first_token() -> None:
    measured = {"smart/open": 90.0, "fast/small": 120.0, "smart/vision": 400.0}
    order = preset("fastest", ALL, CATALOG, keys={}, ttft_ms=measured)
    assert order == ["smart/open", "fast/small", "smart/vision", "fast/big"]  # unmeasured last


def test_largest_daily_capacity_first_multiplies_by_the_keys_and_puts_unknown_caps_last() -> None:
    order = preset("daily", ALL, CATALOG, keys={"fast": 1, "smart": 10}, ttft_ms={})
    assert order == ["fast/small", "smart/vision", "fast/big", "smart/open"]
    order = preset("daily", ALL, CATALOG, keys={"fast": 1, "smart": 100}, ttft_ms={})
    assert order == ["smart/vision", "fast/small", "fast/big", "smart/open"]


def test_an_unknown_preset_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        preset("alphabetical", ALL, CATALOG, keys={}, ttft_ms={})


@given(
    st.sampled_from(PRESETS),
    st.permutations([*ALL, "gone/model", "fast/retired"]),
    st.dictionaries(st.sampled_from(["fast", "smart"]), st.integers(0, 50)),
    st.dictionaries(st.sampled_from(ALL), st.floats(1, 10_000)),
)
def test_a_preset_is_a_permutation_that_keeps_unranked_entries_in_order(
    name: str, entries: list[str], keys: dict[str, int], ttft: dict[str, float]
) -> None:
    order = preset(name, entries, CATALOG, keys=keys, ttft_ms=ttft)
    assert sorted(order) == sorted(entries)
    unknown = [e for e in entries if e in ("gone/model", "fast/retired")]
    assert order[-len(unknown) :] == unknown or name == "fastest"
    assert preset(name, order, CATALOG, keys=keys, ttft_ms=ttft) == order  # stable: idempotent
