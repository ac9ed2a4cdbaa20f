"""Small routing instances for the capacity tests: one provider per model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from freellm.core.catalog import Catalog, apply_config


def catalog_of(models: Sequence[Mapping[str, Any]]) -> Catalog:
    """One provider per model, one model each, chained in the given order."""
    config: dict[str, Any] = {"providers": {}, "router": {"chain": []}}
    for index, caps in enumerate(models):
        name = f"p{index}"
        config["providers"][name] = {
            "dialect": "openai",
            "base_url": f"http://127.0.0.1:9/{name}",
            "models": [{"id": "m", **caps}],
        }
        config["router"]["chain"].append(f"{name}/m")
    return apply_config(Catalog(), config)
