"""Saving the router state, and what a restart makes of it: crash safety.

Theory of operation
-------------------
The ledger and the sessions live in memory and are saved to the store as one snapshot (the
``state`` row :data:`STATE_NAME`), by the background job ``state`` (:meth:`Persistence.round`):

- every :data:`PERSIST_EVERY_S` seconds, changed or not: each save says when it was taken
  (``saved_at``) and promises the next within a lease (:data:`LEASE_S`), so a save is also a
  heartbeat;
- within :data:`COOLDOWN_TICK_S` of a cooldown starting or ending, so that a cooldown survives
  a crash that comes more than a quarter of a second after it.

Each save while the server runs carries ``running: true``; the last save of a clean stop carries
``running: false``. The first save happens at start-up, before the server takes a request. So a
restart that finds ``running: true`` knows the run before it stopped without saving (``kill -9``,
an out-of-memory kill, a power cut), and that whatever it did after ``saved_at`` is lost.

After such a stop, :func:`recover` applies the core's rule (:mod:`freellm.core.crash`): calls in
flight are over and still counted; the run may have gone on until ``ended_by``, the restart or the
end of the lease, whichever came first (later, if the request log shows requests that ended past the
lease: the saves were failing); and every capped window gets the most the run can have used after
the save, counted at ``ended_by``. A minute cap counts as full until a minute after ``ended_by``;
a day cap loses at most what the minute caps let through in the meantime. Cooldowns are kept as
saved.

The rule trusts one thing: that the stopped run saved within its lease, or logged requests when it
did not. A store that failed every write (state and log alike) while the server kept serving leaves
no trace of how long that went on; ``/readyz`` shows such a server as ``degraded``.

SQLite keeps each save whole: a save is one transaction, in WAL mode. A commit is in the WAL file
as soon as it returns, so ``kill -9`` loses nothing that was committed (the operating system still
writes it out); a power cut may lose the last commits (``synchronous=NORMAL``), never corrupt the
file, and then the restart counts from the save before.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, Final

import attrs
import trio

from freellm.core import crash
from freellm.core import ledger as ledger_
from freellm.core import sessions as sessions_
from freellm.core.catalog import Catalog
from freellm.core.ledger import Slot
from freellm.core.router import RouterState
from freellm.shell.state import StateHolder
from freellm.shell.store import KeyRecord, Store

__all__ = [
    "COOLDOWN_TICK_S",
    "LEASE_S",
    "PERSIST_EVERY_S",
    "STATE_NAME",
    "Persistence",
    "Unclean",
    "recover",
    "restore",
]

logger = logging.getLogger("freellm.persistence")

STATE_NAME: Final = "router"
PERSIST_EVERY_S: Final = 5.0
"""The longest the router state goes unsaved while the server runs."""
COOLDOWN_TICK_S: Final = 0.25
"""How often the ``state`` job looks for a cooldown that started or ended (an identity check)."""
SAVE_GRACE_S: Final = 25.0
"""How late a save may come (a busy store, a failed try and its retry) and still be on time."""
LEASE_S: Final = PERSIST_EVERY_S + SAVE_GRACE_S
"""The most a running server lets pass between two saves: the lease each save promises. Under a
minute, so that the minute caps bound what a crash lost from the day caps."""
LOG_REACH_S: Final = 3600.0
"""How far before the save :func:`recover` looks for requests that ended after it (their start)."""


@attrs.frozen
class Unclean:
    """The run before this one stopped without saving: its last save, and the lease it promised."""

    flushed_at: float
    lease: float


class Persistence:
    """Saves ``holder``'s ledger and sessions to ``store``; ``clock`` gives epoch seconds."""

    def __init__(self, holder: StateHolder, store: Store, clock: Callable[[], float]) -> None:
        self.holder = holder
        self.store = store
        self.clock = clock
        self._saved_cooldowns: object = None
        self._due = 0.0  # trio time of the next heartbeat

    def snapshot(self, *, running: bool) -> dict[str, Any]:
        state = self.holder.state
        now = self.clock()
        return {
            "ledger": ledger_.to_data(ledger_.prune(state.ledger, now=now)),
            "sessions": sessions_.to_data(state.sessions),
            "saved_at": now,
            "lease_s": LEASE_S,
            "running": running,
        }

    async def save(self, *, running: bool = True) -> None:
        """Save the ledger and sessions now: ``running`` while the server runs, not on the last
        save of a clean stop. Raises the store's errors (the job retries; see Background)."""
        cooldowns = self.holder.state.ledger.cooldowns
        await self.store.save_state(STATE_NAME, self.snapshot(running=running))
        self._saved_cooldowns = cooldowns
        self._due = trio.current_time() + PERSIST_EVERY_S

    async def round(self) -> None:
        """One round of the ``state`` job (run every :data:`COOLDOWN_TICK_S`): save if the
        cooldowns changed since the last save, or the heartbeat is due."""
        changed = self.holder.state.ledger.cooldowns is not self._saved_cooldowns
        if changed or trio.current_time() >= self._due:
            await self.save()


async def restore(holder: StateHolder, store: Store) -> Unclean | None:
    """Put the ledger and sessions of the last save into ``holder``, if any and readable, with
    the calls that were in flight over (their usage still counts). Returns :class:`Unclean` when
    the run that saved it did not stop cleanly: apply :func:`recover` once the keys are loaded.

    A snapshot without the ``running`` marker was written by a freellm from before it, which
    always saved on its way out: it counts as clean.
    """
    saved = await store.load_state(STATE_NAME)
    if saved is None:
        return None
    try:
        ledger = ledger_.release_inflight(ledger_.from_data(saved["ledger"]))
        sessions = sessions_.from_data(saved["sessions"])
        unclean = None
        if saved.get("running"):
            unclean = Unclean(float(saved["saved_at"]), float(saved["lease_s"]))
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("the saved router state is not readable (%s): starting afresh", exc)
        return None
    holder.apply(lambda state: attrs.evolve(state, ledger=ledger, sessions=sessions))
    return unclean


async def recover(
    holder: StateHolder, store: Store, unclean: Unclean, *, now: float, total_s: float
) -> float:
    """Apply the core's rule for an unclean stop (:func:`freellm.core.crash.after_crash`) to every
    key the store holds, enabled or not, on every model of its provider; return ``ended_by``.

    ``total_s`` is the longest a request can last (``[timeouts] total_s``): requests that ended
    after the save began at most that long before it.
    """
    flushed_at = unclean.flushed_at
    since = flushed_at - max(total_s, 0.0) - LOG_REACH_S
    last_seen = await store.last_request_end(since)
    records = await store.list_keys()
    ended_by = crash.ended_by(flushed_at, lease=unclean.lease, now=now, last_seen=last_seen)
    slots = all_slots(holder.state.catalog, records)

    def rule(state: RouterState) -> RouterState:
        ledger = crash.after_crash(state.ledger, slots, flushed_at=flushed_at, ended_by=ended_by)
        return attrs.evolve(state, ledger=ledger)

    holder.apply(rule)
    logger.warning(
        "freellm did not stop cleanly: the router state was saved at %s, and the run may have"
        " gone on until %s; what it may have used after the save is counted (capped minute"
        " windows count as full for a minute after that)",
        _when(flushed_at),
        _when(ended_by),
    )
    return ended_by


def all_slots(catalog: Catalog, records: list[KeyRecord]) -> list[Slot]:
    """A slot for every stored key (enabled or not: one may be enabled again within the minute)
    on every model of its provider."""
    slots = []
    for record in records:
        provider = catalog.providers.get(record.provider)
        if provider is None:
            continue
        for model in provider.models.values():
            slots.append(Slot(record.provider, record.id, model, provider.daily_reset))
    return slots


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")
