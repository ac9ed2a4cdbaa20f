"""Settings that apply live: keys, their secrets, the chain, the routing strategy and the unified
key, from the store.

Theory of operation
-------------------
The store is where settings live, and where the command line (another process) and, later, the
dashboard change them. SQLite's ``PRAGMA data_version`` moves whenever another connection
commits, and never for the server's own writes; :meth:`LiveSettings.refresh` asks for it once a
second and, when it moved, reloads everything in one pass (:meth:`LiveSettings.load`): a change
made with ``freellm keys ...``, ``chain set`` or ``token --regenerate`` reaches routing within
about a second, with no version row for writers to remember and no restart.

A reload opens only the secrets that are new or whose sealed bytes changed (in the vault helper
process), and replaces the router's topology, keys and secrets together, in one transition: a
key and its secret are one fact. A secret this server's encryption key cannot open stays out of
routing (the server keeps running) until it is replaced.

Key health has one source: what the server observes, in calls and probes, is the router state's
``health``; :meth:`LiveSettings.save_health` writes its changes into the keys table, which is
what ``freellm keys list`` and ``/api/keys`` read. The table row is also how a check made by the
command line reaches the server: a row that differs from what this server last wrote or read was
written by someone else, and the server adopts it.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Final

import attrs

from freellm.core import health as health_
from freellm.core import router
from freellm.core.catalog import Catalog, ConfigError, Strategy, with_chain
from freellm.core.keys import Refused, clean_secret
from freellm.core.router import Key, Topology
from freellm.shell.secrets import SecretsError
from freellm.shell.state import StateHolder
from freellm.shell.store import KeyRecord, Store
from freellm.shell.vault_process import RemoteVault

__all__ = [
    "STRATEGY_SETTING",
    "UNIFIED_KEY_ID",
    "UNIFIED_KEY_SETTING",
    "LiveSettings",
    "health_of",
    "with_strategy",
]

logger = logging.getLogger("freellm.settings")

UNIFIED_KEY_SETTING: Final = "unified_key"
UNIFIED_KEY_ID: Final = "unified"
STRATEGY_SETTING: Final = "strategy"
"""The routing strategy the dashboard chose (``chain`` or ``capacity``); absent: the config's."""


def with_strategy(catalog: Catalog, stored: object) -> Catalog:
    """``catalog`` with the strategy stored in the settings table, if it names one; a value
    that names none (written by hand, or by a later version) leaves the config's."""
    try:
        strategy = Strategy(stored)
    except ValueError:
        return catalog
    if strategy is catalog.settings.strategy:
        return catalog
    return attrs.evolve(catalog, settings=attrs.evolve(catalog.settings, strategy=strategy))


def health_of(record: KeyRecord) -> health_.KeyHealth:
    """A key's health as the keys table holds it."""
    state = health_.State(record.health) if record.health else health_.State.UNKNOWN
    return health_.KeyHealth(state, record.health_since, record.last_check, record.last_error)


class LiveSettings:
    """Keeps ``holder``'s keys and chain, and :attr:`unified_key`, as the store says.

    ``catalog`` is the catalog of the config file, before the chain the store may override.
    """

    def __init__(
        self,
        store: Store,
        vault: RemoteVault,
        holder: StateHolder,
        catalog: Catalog,
        *,
        unified_key: str,
    ) -> None:
        self.store = store
        self.vault = vault
        self.holder = holder
        self.catalog = catalog
        self.unified_key = unified_key
        self._version: int | None = None
        self._unified_blob: str | None = None
        self._secrets: dict[str, tuple[bytes, str]] = {}  # key id: (sealed, secret)
        # key id: the sealed bytes that did not open, or opened to a secret that cannot be sent
        self._unopenable: dict[str, bytes] = {}
        self._seen: dict[str, tuple[str, health_.KeyHealth]] = {}  # id: (provider, as stored)
        self._bad_chains: dict[str | None, tuple[str, ...]] = {}

    async def refresh(self) -> bool:
        """Reload if another process changed the store since the last look; whether it did."""
        version = await self.store.data_version()
        if version == self._version:
            return False
        await self.load()
        self._version = version
        return True

    async def load(self) -> None:
        """Read keys, chain and unified key from the store and apply them, in one transition.

        Raises ``RuntimeError`` if the vault helper fails, and the store's errors.
        """
        version = await self.store.data_version()
        records = await self.store.list_keys()
        chain = await self.store.get_chain()
        named = await self.store.get_named_chains()
        strategy = await self.store.get_setting(STRATEGY_SETTING)
        blob = await self.store.get_setting(UNIFIED_KEY_SETTING)
        if blob == self._unified_blob:
            blob = None  # unchanged: nothing to open
        replaced = await self._open_secrets(records, blob)
        # No await from here on: the state is read and replaced in one step.
        keys = [
            Key(record.provider, record.id, self._secrets[record.id][1])
            for record in records
            if record.enabled
            and record.provider in self.catalog.providers
            and record.id in self._secrets
        ]
        changed = self._adopt_health(records)
        for record in records:
            if record.id in replaced:  # a new secret is a new key to health: it starts over
                changed[record.provider, record.id] = None
        topology = Topology(with_strategy(self._with_chains(chain, named), strategy), keys)
        self.holder.apply(partial(router.reconfigure, topology=topology, health=changed))
        self._version = version

    async def save_health(self) -> None:
        """Write the health that changed since it was last written or read into the keys table."""
        state = self.holder.state
        rows = []
        for key_id, (provider, stored) in self._seen.items():
            current = state.health.of(provider, key_id)
            if current != stored:
                rows.append(
                    (
                        key_id,
                        None if current.state is health_.State.UNKNOWN else current.state.value,
                        current.since,
                        current.checked_at,
                        current.last_error,
                    )
                )
                self._seen[key_id] = (provider, current)
        if rows:
            await self.store.record_key_healths(rows)

    # -- internals --

    async def _open_secrets(self, records: list[KeyRecord], unified: str | None) -> set[str]:
        """Open the secrets that are new or changed, and the unified key's new blob (hex), if
        any: all in one call of the vault helper (a process each), or, when one of them does
        not open, one at a time, so that it keeps no other out. Returns the ids of the keys
        whose secret was replaced.

        Raises :class:`~freellm.shell.secrets.SecretsError` when the unified key does not open
        (another encryption key wrote it): the server keeps the one it has.
        """
        present = {record.id for record in records}
        for gone in set(self._secrets) - present:
            del self._secrets[gone]
        todo = [
            record
            for record in records
            if record.enabled
            and record.provider in self.catalog.providers
            and self._secrets.get(record.id, (None,))[0] != record.sealed
            and self._unopenable.get(record.id) != record.sealed
        ]
        items = [(record.id, record.provider, record.sealed) for record in todo]
        if unified is not None:
            items.append((UNIFIED_KEY_ID, "freellm", bytes.fromhex(unified)))
        if not items:
            return set()
        try:
            opened: list[str | None] = list(await self.vault.unseal_many(items))
        except SecretsError:
            opened = [await self._open_one(*item) for item in items]
        if unified is not None:
            key = opened.pop()
            if key is None:
                raise SecretsError("the stored unified key does not open with this server's key")
            self.unified_key, self._unified_blob = key, unified
        replaced = set()
        for record, opened_secret in zip(todo, opened, strict=True):
            # Every way in checks a secret; one stored before that, or written into the
            # database by hand, could still break the header it goes into.
            secret = None if opened_secret is None else clean_secret(opened_secret)
            if secret is None or isinstance(secret, Refused):
                why = (
                    "does not open with this server's encryption key"
                    if secret is None
                    else f"cannot be sent to its provider ({secret.message})"
                )
                logger.warning(
                    "key %s (%s) %s: it stays out of routing until it is replaced",
                    record.id,
                    record.provider,
                    why,
                )
                self._unopenable[record.id] = record.sealed
                self._secrets.pop(record.id, None)
                continue
            if record.id in self._secrets:
                replaced.add(record.id)
            self._secrets[record.id] = (record.sealed, secret)
        return replaced

    async def _open_one(self, key_id: str, provider: str, sealed: bytes) -> str | None:
        try:
            (secret,) = await self.vault.unseal_many([(key_id, provider, sealed)])
        except SecretsError:
            return None
        return secret

    def _adopt_health(
        self, records: list[KeyRecord]
    ) -> dict[tuple[str, str], health_.KeyHealth | None]:
        """Rows someone else wrote since this server last wrote or read them; and ``None`` for
        the keys that left the store."""
        changed: dict[tuple[str, str], health_.KeyHealth | None] = {}
        present = set()
        for record in records:
            present.add(record.id)
            stored = health_of(record)
            seen = self._seen.get(record.id)
            if seen is None or seen[1] != stored:
                changed[record.provider, record.id] = stored
            self._seen[record.id] = (record.provider, stored)
        for key_id in set(self._seen) - present:
            provider, _ = self._seen.pop(key_id)
            changed[provider, key_id] = None
        return changed

    def _with_chains(
        self, chain: list[str] | None, named: dict[str, list[tuple[str, bool]]]
    ) -> Catalog:
        """The config's catalog with the chains set in the store, each if still valid: a named
        chain that names a model the config no longer has is left out, not the others."""
        catalog = self._with_chain(self.catalog, None, tuple(chain or ()))
        for name, entries in named.items():
            enabled = tuple(entry for entry, on in entries if on)
            catalog = self._with_chain(catalog, name, enabled)
        return catalog

    def _with_chain(self, catalog: Catalog, name: str | None, entries: tuple[str, ...]) -> Catalog:
        try:
            return with_chain(catalog, entries, name)
        except ConfigError as exc:
            if entries != self._bad_chains.get(name):  # say it once, not every second
                which = "chain" if name is None else f"chain {name!r}"
                logger.warning("the stored %s is not valid with this config (%s)", which, exc)
                self._bad_chains[name] = entries
            return catalog
