"""Reading the catalog and the user's config file from disk into a core ``Catalog``."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from freellm.core.catalog import Catalog, ConfigError, apply_config, load_config_text

__all__ = ["bundled_catalog", "load_catalog"]


def bundled_catalog() -> Catalog:
    """The catalog shipped in the package (``freellm/core/data/catalog.toml``)."""
    text = importlib.resources.files("freellm.core").joinpath("data/catalog.toml").read_text()
    return apply_config(Catalog(), load_config_text(text, origin="catalog.toml"))


def load_catalog(config_path: Path | None) -> Catalog:
    """The bundled catalog with the user's config file applied, if there is one.

    Raises :class:`~freellm.core.catalog.ConfigError` when the file cannot be read or is invalid;
    its message names the file and the bad key.
    """
    catalog = bundled_catalog()
    if config_path is None:
        return catalog
    try:
        text = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(config_path), f"cannot read it ({exc.strerror})") from None
    config = load_config_text(text, origin=str(config_path))
    try:
        return apply_config(catalog, config)
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc.path}", exc.problem) from None
