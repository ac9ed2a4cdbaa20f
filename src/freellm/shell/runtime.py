"""The running proxy: everything the web layer needs, opened and closed in one place.

:func:`open_runtime` reads the catalog and config, the encryption key, the store, the provider
keys (decrypted once, kept in memory only) and the persisted ledger, health and sessions; it
starts the background work (batched log writes, state persistence, key reloads, health probes) in
one nursery, and on the way out saves the state and flushes the logs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from freellm.core import health as health_
from freellm.core import ledger as ledger_
from freellm.core import sessions as sessions_
from freellm.core.catalog import Catalog, apply_config
from freellm.core.router import RouterState, Topology
from freellm.shell.config import load_catalog
from freellm.shell.dispatch import Dispatcher, RequestLog
from freellm.shell.metrics import Metrics
from freellm.shell.probes import is_due, run_probes
from freellm.shell.secrets import (
    SecretsError,
    Vault,
    load_master_key,
    new_unified_key,
    unified_key_matches,
)
from freellm.shell.store import AttemptRecord, KeyRecord, RequestRecord, Store, open_store
from freellm.shell.upstream import Timeouts, Upstreams, open_upstreams
from freellm.shell.vault_process import RemoteVault

__all__ = ["Runtime", "open_runtime", "read_unified_key"]

PERSIST_EVERY_S: Final = 5.0
UNIFIED_KEY_SETTING: Final = "unified_key"
UNIFIED_KEY_ID: Final = "unified"


@attrs.define
class Runtime:
    dispatcher: Dispatcher
    metrics: Metrics
    store: Store
    vault: RemoteVault
    upstreams: Upstreams
    unified_key: str = attrs.field(repr=False)
    created_unified_key: bool = False
    ready: bool = False
    clock: Callable[[], float] = time.time
    unopenable: set[str] = attrs.field(factory=set)  # key ids this vault cannot open

    def authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether the request carries the unified key (Bearer or ``x-api-key``), compared in
        constant time."""
        given: str | None = None
        for name, value in headers:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    given = token.strip()
            elif name == b"x-api-key" and given is None:
                given = value.decode("latin-1").strip()
        return unified_key_matches(given, self.unified_key)

    async def reload_keys(self) -> None:
        """Pick up keys added, removed, enabled or disabled in the store (by the CLI, say).

        A new key that this server's encryption key cannot open (the CLI ran with another one)
        stays out of routing and is not tried again; the server keeps running.
        """
        records = await self.store.list_keys()
        catalog = self.dispatcher.state.catalog
        wanted = {key for ids in _key_table(records, catalog).values() for key in ids}
        known = self.dispatcher.secrets
        opened: dict[str, str] = {}
        for record in records:  # one at a time: a key that does not open must not hide others
            if record.id not in wanted or record.id in known or record.id in self.unopenable:
                continue
            try:
                (opened[record.id],) = await self.vault.unseal_many(
                    [(record.id, record.provider, record.sealed)]
                )
            except SecretsError:
                self.unopenable.add(record.id)
        secrets = {key: known[key] for key in wanted if key in known} | opened
        keys = {
            provider: [key for key in ids if key in secrets]
            for provider, ids in _key_table(records, catalog).items()
        }
        keys = {provider: ids for provider, ids in keys.items() if ids}
        # No await from here on: read the state and replace it in one step.
        state = self.dispatcher.state
        self.dispatcher.secrets = secrets
        if keys != {p: list(ids) for p, ids in state.topology.keys.items() if ids}:
            present = {record.id for record in records}
            health = state.health
            for provider, key in list(health.keys.keys()):
                if key not in present:  # removed from the store: its health goes too
                    health = health_.forget(health, provider, key)
            self.dispatcher.state = attrs.evolve(
                state, topology=Topology(state.catalog, keys), health=health
            )

    def snapshot(self) -> dict[str, Any]:
        state = self.dispatcher.state
        return {
            "ledger": ledger_.to_data(ledger_.prune(state.ledger, now=self.clock())),
            "health": health_.to_data(state.health),
            "sessions": sessions_.to_data(state.sessions),
        }

    def log(self, entry: RequestLog) -> None:
        usage = entry.usage
        self.store.log_request(
            RequestRecord(
                id=entry.id,
                at=entry.at,
                model=entry.model,
                routed_via=entry.routed_via,
                status=entry.status,
                latency_ms=entry.latency_s * 1000,
                prompt_tokens=None if usage is None else usage.prompt_tokens,
                completion_tokens=None if usage is None else usage.completion_tokens,
                attempts=len(entry.attempts),
                stream=entry.stream,
                session=entry.session,
                error=entry.error,
            ),
            [
                AttemptRecord(
                    n=n,
                    provider=a.provider,
                    model=a.model,
                    key_id=a.key_id,
                    status=a.status,
                    error_class=a.outcome,
                    latency_ms=a.latency_s * 1000,
                    prompt_tokens=None if a.usage is None else a.usage.prompt_tokens,
                    completion_tokens=None if a.usage is None else a.usage.completion_tokens,
                )
                for n, a in enumerate(entry.attempts, start=1)
            ],
        )


def _key_table(records: list[KeyRecord], catalog: Catalog) -> dict[str, list[str]]:
    """The enabled keys of every provider in the catalog."""
    keys: dict[str, list[str]] = {}
    for record in records:
        provider = catalog.providers.get(record.provider)
        if record.enabled and provider is not None:
            keys.setdefault(record.provider, []).append(record.id)
    return keys


async def read_unified_key(store: Store, vault: Vault | RemoteVault) -> tuple[str, bool]:
    """The unified key, made and stored (sealed) on first use; and whether it was just made."""
    sealed = await store.get_setting(UNIFIED_KEY_SETTING)
    if sealed is not None:
        blob = bytes.fromhex(sealed)
        if isinstance(vault, RemoteVault):
            (key,) = await vault.unseal_many([(UNIFIED_KEY_ID, "freellm", blob)])
            return key, False
        return vault.unseal(UNIFIED_KEY_ID, "freellm", blob), False
    key = new_unified_key()
    if isinstance(vault, RemoteVault):
        blob = await vault.seal(UNIFIED_KEY_ID, "freellm", key)
    else:
        blob = vault.seal(UNIFIED_KEY_ID, "freellm", key)
    await store.set_setting(UNIFIED_KEY_SETTING, blob.hex())
    return key, True


async def with_user_chain(catalog: Catalog, store: Store) -> Catalog:
    """The catalog with the chain set by ``freellm chain set``, if any."""
    chain = await store.get_chain()
    if not chain:
        return catalog
    return apply_config(catalog, {"router": {"chain": chain}})


@asynccontextmanager
async def open_runtime(
    data_dir: Path,
    config_path: Path | None,
    *,
    env: Mapping[str, str],
    clock: Callable[[], float] = time.time,
    timeouts: Timeouts | None = None,
    probes: bool = True,
) -> AsyncIterator[Runtime]:
    """Everything a server needs, with its background work running.

    Raises :class:`~freellm.core.catalog.ConfigError` for a bad config and
    :class:`~freellm.shell.secrets.SecretsError` for an encryption key that is malformed or does
    not open the stored secrets: start-up stops with that message.
    """
    catalog = load_catalog(config_path)
    vault = RemoteVault(load_master_key(data_dir, env.get("ENCRYPTION_KEY")))
    async with (
        open_store(data_dir / "freellm.db") as store,
        open_upstreams(timeouts) as upstreams,
    ):
        unified_key, created = await read_unified_key(store, vault)
        catalog = await with_user_chain(catalog, store)
        records = await store.list_keys()
        enabled = [r for r in records if r.enabled]
        opened = await vault.unseal_many([(r.id, r.provider, r.sealed) for r in enabled])
        secrets = dict(zip((r.id for r in enabled), opened, strict=True))
        state = RouterState(Topology(catalog, _key_table(records, catalog)))
        saved = await store.load_state("router")
        if saved is not None:
            state = attrs.evolve(
                state,
                ledger=ledger_.release_inflight(ledger_.from_data(saved["ledger"])),
                health=health_.from_data(saved["health"]),
                sessions=sessions_.from_data(saved["sessions"]),
            )
        metrics = Metrics()
        runtime = Runtime(
            dispatcher=Dispatcher(state, secrets, upstreams, clock=clock),
            metrics=metrics,
            store=store,
            vault=vault,
            upstreams=upstreams,
            unified_key=unified_key,
            created_unified_key=created,
            clock=clock,
        )
        runtime.dispatcher.observers = (metrics.observe, runtime.log)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(store.run_writer)
                nursery.start_soon(_persist, runtime)
                if probes:
                    await nursery.start(_probe, runtime)
                runtime.ready = True
                try:
                    yield runtime
                finally:
                    runtime.ready = False
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await store.save_state("router", runtime.snapshot())


async def _persist(runtime: Runtime) -> None:
    while True:
        await trio.sleep(PERSIST_EVERY_S)
        await runtime.store.save_state("router", runtime.snapshot())
        await runtime.reload_keys()


async def _probe(
    runtime: Runtime, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    dispatcher = runtime.dispatcher

    def due(now: float) -> list[tuple[Any, str, str]]:
        state = dispatcher.state
        found = []
        for provider_id, key_ids in state.topology.keys.items():
            spec = state.catalog.providers[provider_id]
            for key_id in key_ids:
                checked = state.health.of(provider_id, key_id).checked_at
                if is_due(checked, now) and key_id in dispatcher.secrets:
                    found.append((spec, key_id, dispatcher.secrets[key_id]))
        return found

    def report(provider: str, key_id: str, event: health_.Event, note: str | None) -> None:
        state = dispatcher.state
        updated = health_.apply(
            state.health, provider, key_id, event, now=runtime.clock(), error=note
        )
        dispatcher.state = attrs.evolve(state, health=updated)

    await run_probes(due, report, runtime.upstreams, clock=runtime.clock, task_status=task_status)
