"""The running proxy: everything the web layer needs, opened and closed in one place.

:func:`open_runtime` reads the catalog and config, the encryption key, the store, the keys and
the chain (:class:`~freellm.shell.live.LiveSettings`) and the persisted ledger and sessions into
the one :class:`~freellm.shell.state.StateHolder`, then runs the background jobs in one nursery
(:class:`~freellm.shell.background.Background`: none of them can take the server down):

- ``log writer``: the request log, written in batches;
- ``settings``: changes other processes made to the store, applied within about a second, and the
  key health the server observed, written back;
- ``state``: the ledger and the sessions, saved every few seconds and soon after a cooldown
  starts (:mod:`freellm.shell.persistence`, which also says what a restart after a crash keeps);
- ``log retention``: requests older than ``[store] keep_days``, pruned hourly;
- ``key checks``: each key probed every few minutes.

On the way out it saves the state (marked as a clean stop) and the health and flushes the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from freellm.core.catalog import Timeouts
from freellm.core.router import RouterState, Topology
from freellm.shell.background import Background
from freellm.shell.config import load_catalog
from freellm.shell.dispatch import Dispatcher, RequestLog
from freellm.shell.events import Events
from freellm.shell.live import UNIFIED_KEY_ID, UNIFIED_KEY_SETTING, LiveSettings
from freellm.shell.logins import Logins
from freellm.shell.metrics import Metrics
from freellm.shell.persistence import COOLDOWN_TICK_S, Persistence, recover, restore
from freellm.shell.probes import PROBE_TICK_S, jittered, probe_due
from freellm.shell.secrets import Vault, load_master_key, new_unified_key, unified_key_matches
from freellm.shell.state import StateHolder
from freellm.shell.store import AttemptRecord, RequestRecord, Store, open_store
from freellm.shell.upstream import Upstreams, open_upstreams
from freellm.shell.vault_process import RemoteVault

__all__ = ["Runtime", "open_runtime", "read_unified_key"]

logger = logging.getLogger("freellm.runtime")

SETTINGS_EVERY_S: Final = 1.0
PRUNE_EVERY_S: Final = 3600.0
DAY_S: Final = 86_400.0
REVOKED_SESSIONS_SETTING: Final = "revoked_sessions"


@attrs.define
class Runtime:
    holder: StateHolder
    dispatcher: Dispatcher
    metrics: Metrics
    store: Store
    upstreams: Upstreams
    settings: LiveSettings
    background: Background
    logins: Logins
    persistence: Persistence
    events: Events = attrs.field(factory=Events)
    tasks: trio.Nursery | None = None  # for short work started by a request, outliving it
    created_unified_key: bool = False
    ready: bool = False
    clock: Callable[[], float] = time.time

    @property
    def unified_key(self) -> str:
        return self.settings.unified_key

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

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """``/readyz``: 503 until the server runs; then 200, ``degraded`` while a background
        job fails (it still serves), with every job's detail."""
        if not self.ready:
            return 503, {"status": "starting"}
        status = "ready" if self.background.healthy else "degraded"
        return 200, {"status": status, "background": self.background.report()}

    async def save_logouts(self) -> None:
        """Remember the sessions logged out before their time, across restarts."""
        await self.store.set_setting(REVOKED_SESSIONS_SETTING, self.logins.revoked or None)

    def publish(self, entry: RequestLog) -> None:
        """A request, for the dashboard's live feed (no prompt, no key id)."""
        if not self.events.subscribers:
            return  # the common case: nobody is watching, and nothing is built
        usage = entry.usage
        self.events.publish(
            "request",
            {
                "id": entry.id,
                "at": entry.at,
                "model": entry.model,
                "routed_via": entry.routed_via,
                "status": entry.status,
                "latency_ms": round(entry.latency_s * 1000, 1),
                "attempts": len(entry.attempts),
                "prompt_tokens": None if usage is None else usage.prompt_tokens,
                "completion_tokens": None if usage is None else usage.completion_tokens,
                "trail": [
                    {"target": f"{a.provider}/{a.model}", "outcome": a.outcome.value}
                    for a in entry.attempts
                ],
                "error": entry.error,
            },
        )

    async def prune_log(self) -> None:
        keep_days = self.holder.state.catalog.store.keep_days
        await self.store.prune_requests(self.clock() - keep_days * DAY_S)

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
                ttft_ms=None if entry.ttft_s is None else entry.ttft_s * 1000,
            ),
            [
                AttemptRecord(
                    n=n,
                    provider=a.provider,
                    model=a.model,
                    key_id=a.key_id,
                    status=a.status,
                    error_class=a.outcome.value,
                    latency_ms=a.latency_s * 1000,
                    prompt_tokens=None if a.usage is None else a.usage.prompt_tokens,
                    completion_tokens=None if a.usage is None else a.usage.completion_tokens,
                )
                for n, a in enumerate(entry.attempts, start=1)
            ],
        )


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
    not open the stored unified key: start-up stops with that message.
    """
    catalog = load_catalog(config_path)
    vault = RemoteVault(load_master_key(data_dir, env.get("ENCRYPTION_KEY")))
    async with (
        open_store(data_dir / "freellm.db") as store,
        open_upstreams(timeouts or catalog.timeouts, catalog.pool) as upstreams,
    ):
        unified_key, created = await read_unified_key(store, vault)
        holder = StateHolder(RouterState(Topology(catalog)))
        unclean = await restore(holder, store)
        settings = LiveSettings(store, vault, holder, catalog, unified_key=unified_key)
        await settings.load()
        if unclean is not None:
            total_s = (timeouts or catalog.timeouts).total
            await recover(holder, store, unclean, now=clock(), total_s=total_s)
        persistence = Persistence(holder, store, clock)
        # Before the first request, so that a crash from here on is known as one. A store that
        # cannot write does not stop the server: the state job tries again, and /readyz says so.
        await _first_save(persistence)
        metrics = Metrics()
        background = Background(clock)
        revoked = await store.get_setting(REVOKED_SESSIONS_SETTING)
        logins = Logins(
            lambda: settings.unified_key,
            clock=clock,
            lifetime_s=lambda: holder.state.catalog.dashboard.session_hours * 3600,
            revoked=revoked if isinstance(revoked, dict) else None,
        )
        runtime = Runtime(
            holder=holder,
            dispatcher=Dispatcher(holder, upstreams, clock=clock),
            metrics=metrics,
            store=store,
            upstreams=upstreams,
            settings=settings,
            background=background,
            logins=logins,
            persistence=persistence,
            created_unified_key=created,
            clock=clock,
        )
        runtime.dispatcher.observers = (metrics.observe, runtime.log, runtime.publish)
        metrics.watch(lambda: runtime.dispatcher.active, upstreams.connections)

        async def settings_round() -> None:
            await settings.refresh()
            await settings.save_health()

        try:
            async with trio.open_nursery() as nursery:
                runtime.tasks = nursery
                jobs: list[tuple[str, Callable[[], Any], Any]] = [
                    ("log writer", store.write_round, 0.0),
                    ("settings", settings_round, SETTINGS_EVERY_S),
                    ("state", persistence.round, COOLDOWN_TICK_S),
                    ("log retention", runtime.prune_log, PRUNE_EVERY_S),
                ]
                if probes:
                    check = partial(probe_due, holder, upstreams, clock=clock)
                    jobs.append(("key checks", check, jittered(PROBE_TICK_S)))
                for name, round_, every in jobs:
                    await nursery.start(partial(background.run, name, round_, every=every))
                runtime.ready = True
                try:
                    yield runtime
                finally:
                    runtime.ready = False
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await _last_save("the router state", partial(persistence.save, running=False))
                await _last_save("key health", settings.save_health)


async def _last_save(what: str, save: Callable[[], Any]) -> None:
    """One last save on the way out; a failure is logged, not raised: the store still closes
    (and writes the pending request log) after it."""
    try:
        await save()
    except Exception:
        logger.error("could not save %s on the way out", what, exc_info=True)


async def _first_save(persistence: Persistence) -> None:
    try:
        await persistence.save()
    except Exception:
        logger.error("could not save the router state at start-up", exc_info=True)
