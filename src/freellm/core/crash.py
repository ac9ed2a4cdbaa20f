"""What a restart assumes about the run before it, when that run did not stop cleanly.

Theory of operation
-------------------
The shell saves the ledger every few seconds (and soon after a cooldown starts), and once more,
last, on a clean stop. After ``kill -9``, an out-of-memory kill or a power cut, the restart has the
last save, taken at ``flushed_at``, and nothing of what the run did after it: the calls it admitted
(the providers counted every one, those cut off in flight included), the settlements, the limits
providers reported, the cooldowns that started. The shell says when the run may have gone on until:
``ended_by`` (:func:`ended_by`), the latest time the stopped run can have used anything.

What was lost cannot be known, but it can be bounded, because the stopped run admitted every call
through the ledger, and the ledger never lets a window's count pass its cap. Take a window ``W``
with a cap, and the lost calls that still count in ``W`` at some time after the restart: they all
lie in ``(flushed_at, ended_by]`` and within one length of ``W`` before ``ended_by``. When the last
of them was admitted, ``W`` counted all of them, and every saved call it still counts at
``ended_by``. So:

- **requests**: the lost ones that matter to ``W`` are at most ``W``'s *room*, its cap less the
  saved count at ``ended_by``. Another window ``V`` bounds them too when ``V`` covers the stretch
  in which they lie: with a save every few seconds, the minute's room bounds the requests a day
  window lost, so a crash costs a day cap at most a minute's worth.
- **tokens**: a settlement after the flush may have lowered a saved estimate and let more calls in
  than the saved count suggests, so the room is no bound; the cap is (the true count is never
  below zero). The tokens of a call are also at most its model's context (the router admits no
  call whose estimate does not fit), so ``requests x context`` bounds them as well.

:func:`after_crash` adds each window's bound to it at ``ended_by``, the latest the lost calls can
have been made, so the added usage leaves every window no earlier than theirs did: a window with a
cap on the minute counts as full until a minute after ``ended_by``. Limits the providers reported
lose the most the run can have used in all of ``(flushed_at, ended_by]`` (none left when nothing
bounds it). Calls in flight at the stop are over, their reservations still counted; saved
cooldowns stay as they are, so none ends early.

Token counts are the ledger's own: estimates, replaced by what the provider reported at settlement.
The bound holds for them as the running ledger's caps do, on the premise that a call costs no more
than it was admitted for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final

import attrs

from freellm.core.catalog import Caps, ModelSpec
from freellm.core.ledger import Ledger, Limit, Slot, Usage, UsageKey, release_inflight
from freellm.core.windows import Calendar, Rolling, Window, local_day_bounds

__all__ = ["Lost", "after_crash", "ended_by", "lost_bounds"]

MINUTE: Final = 60.0


@attrs.frozen
class Lost:
    """The most a stopped run can have used after its last save, on one usage key.

    ``minute`` and ``day``: ``(requests, tokens)`` to add to that window (0 where the window has no
    cap of that dimension: nothing to protect). ``overall``: the most in all of
    ``(flushed_at, ended_by]``, for the limits providers reported; ``None`` where nothing bounds it.
    """

    minute: tuple[int, int]
    day: tuple[int, int]
    overall: tuple[int | None, int | None]


def ended_by(
    flushed_at: float, *, lease: float, now: float, last_seen: float | None = None
) -> float:
    """The latest time the stopped run can have used anything.

    The run saved at ``flushed_at`` and promised its next save within ``lease`` seconds; had it
    run longer, that save would be there. It cannot have run past ``now`` (the restart) either,
    unless the clock stepped back (``now`` before ``flushed_at``): then the lease is all there is.
    ``last_seen`` is the latest sign of life found elsewhere (the end of a logged request): past
    the lease, the saves were failing while the run went on, and only ``now`` bounds it.
    """
    promised = flushed_at + lease
    if last_seen is not None and last_seen > promised:
        return max(now, last_seen)
    if now < flushed_at:
        return promised
    return min(now, promised)


def lost_bounds(
    usage: Usage, models: Sequence[ModelSpec], *, flushed_at: float, ended_by: float
) -> Lost:
    """How much ``usage`` (as saved) may have missed by ``ended_by``; see the module docstring.

    ``models`` are the models that count under the usage key (an account's models share one).
    A call was admitted under its own model's caps, so a bound holds only where every one of them
    has that cap (the loosest bounds); a window is protected where any of them has one, and where
    nothing bounds what was lost, it counts as full for all of them (its largest cap is added).
    """
    loosest = _merged(models, max, strict=True)
    largest = _merged(models, max, strict=False)
    context = _merged_context(models)
    windows = (
        _Capped(usage.minute, loosest.rpm, loosest.tpm, largest.rpm, largest.tpm, ended_by),
        _Capped(usage.day, loosest.rpd, loosest.tpd, largest.rpd, largest.tpd, ended_by),
    )

    def most(own: _Capped | None, start: float) -> tuple[int | None, int | None]:
        """The most requests and tokens, among calls made in ``(start, ended_by]``, that can
        count in ``own`` (``None``: anywhere): the least room (requests) and cap (tokens) of
        ``own`` and of every window that covers that stretch."""
        requests: list[int] = []
        tokens: list[int] = []
        for capped in windows:
            if capped is own or _covers(capped.window, start, ended_by):
                if capped.room is not None:
                    requests.append(capped.room)
                if capped.tokens_cap is not None:
                    tokens.append(capped.tokens_cap)
        requests_most = min(requests, default=None)
        if requests_most is not None and context is not None:
            tokens.append(requests_most * context)
        return requests_most, min(tokens, default=None)

    def added(capped: _Capped) -> tuple[int, int]:
        """What to add to one window: its bound, no more than makes it full for every model, and
        nothing where no model has a cap of that dimension."""
        requests, tokens = most(capped, _stretch(capped.window, flushed_at, ended_by))
        return _at_most(requests, capped.full_requests), _at_most(tokens, capped.full_tokens)

    minute, day = windows
    return Lost(minute=added(minute), day=added(day), overall=most(None, flushed_at))


def after_crash(
    ledger: Ledger, slots: Iterable[Slot], *, flushed_at: float, ended_by: float
) -> Ledger:
    """The ledger a restart keeps after an unclean stop: the one saved at ``flushed_at``, with its
    calls in flight over (still counted), and with the most the run can have used after the save
    added at ``ended_by`` to every capped window of every usage key of ``slots`` (every key the
    store holds, on every model of its provider). Cooldowns are kept as saved.

    Raises nothing on a valid ledger; ``ended_by`` before ``flushed_at`` is a broken caller
    (``ValueError``).
    """
    if ended_by < flushed_at:
        raise ValueError(f"the run cannot have ended ({ended_by}) before its save ({flushed_at})")
    ledger = release_inflight(ledger)
    groups: dict[UsageKey, list[Slot]] = {}
    for slot in slots:
        groups.setdefault(slot.usage_key, []).append(slot)
    usage_map = ledger.usage
    with usage_map.mutate() as changed:
        for key, members in groups.items():
            saved = usage_map.get(key) or Usage.fresh(members[0].daily_reset)
            models = [slot.model for slot in members]
            if all(model.caps.empty for model in models) and not saved.limits:
                continue
            lost = lost_bounds(saved, models, flushed_at=flushed_at, ended_by=ended_by)
            changed[key] = _charged(saved, lost, ended_by)
        usage_map = changed.finish()
    return Ledger(usage_map, ledger.cooldowns)


# --- helpers ------------------------------------------------------------------------------------


@attrs.frozen
class _Capped:
    """A window with the caps that bound what it lost (the loosest of the models: ``None`` where
    one has none), the caps that make it full for every model (the largest any model has), and
    its room for requests at ``at`` under the loosest cap."""

    window: Window
    requests_cap: int | None
    tokens_cap: int | None
    full_requests: int | None
    full_tokens: int | None
    at: float
    room: int | None = attrs.field(init=False)

    @room.default
    def _room(self) -> int | None:
        if self.requests_cap is None:
            return None
        return max(0, self.requests_cap - self.window.totals(self.at)[0])


def _at_most(bound: int | None, full: int | None) -> int:
    """What to add: ``bound``, or ``full`` where nothing bounds it or it is more; 0 with no cap."""
    if full is None:
        return 0
    return full if bound is None else min(bound, full)


def _stretch(window: Window, flushed_at: float, ended_by: float) -> float:
    """Where the calls begin that may still count in ``window`` after ``ended_by``: after the
    flush, and no more than one window (plus a bucket) before ``ended_by``."""
    if isinstance(window, Rolling):
        return max(flushed_at, ended_by - window.span - window.grain)
    return max(flushed_at, _period_start(window, ended_by))


def _covers(window: Window, start: float, end: float) -> bool:
    """Whether ``window``, read at any time up to ``end``, counted every call of ``(start, end]``
    made before that time: the stretch fits in one window length, or in one calendar day."""
    if isinstance(window, Rolling):
        return end - start <= window.span
    return _period_start(window, end) <= start


def _period_start(window: Calendar, at: float) -> float:
    if window.starts <= at < window.ends:
        return window.starts
    return local_day_bounds(at, window.zone)[0]


def _merged(
    models: Sequence[ModelSpec], pick: Callable[[Iterable[int]], int], *, strict: bool
) -> Caps:
    """Per cap, ``pick`` of the models' values; where a model has none, ``None`` if ``strict``,
    else the others' (``None`` when no model has it)."""

    def merged(values: list[int | None]) -> int | None:
        known = [v for v in values if v is not None]
        if not known or (strict and len(known) < len(values)):
            return None
        return pick(known)

    caps = [model.caps for model in models]
    return Caps(
        rpm=merged([c.rpm for c in caps]),
        rpd=merged([c.rpd for c in caps]),
        tpm=merged([c.tpm for c in caps]),
        tpd=merged([c.tpd for c in caps]),
        concurrency=merged([c.concurrency for c in caps]),
    )


def _merged_context(models: Sequence[ModelSpec]) -> int | None:
    """The largest context of ``models``; ``None`` (no bound) if one of them has none."""
    contexts = [model.context for model in models]
    if any(context is None for context in contexts):
        return None
    return max(context for context in contexts if context is not None)


def _charged(usage: Usage, lost: Lost, at: float) -> Usage:
    minute_requests, minute_tokens = lost.minute
    day_requests, day_tokens = lost.day
    minute = usage.minute
    if minute_requests or minute_tokens:
        minute = minute.add(at, minute_requests, minute_tokens)
    day = usage.day
    if day_requests or day_tokens:
        day = day.add(at, day_requests, day_tokens)
    return Usage(minute, day, 0, tuple(_spent(limit, lost, at) for limit in usage.limits))


def _spent(limit: Limit, lost: Lost, at: float) -> Limit:
    if limit.until <= at:
        return limit  # over before the run can have ended: nothing lost can count against it
    requests, tokens = lost.overall
    most = requests if limit.dimension == "requests" else tokens
    remaining = 0 if most is None else max(0, limit.remaining - most)
    return attrs.evolve(limit, remaining=remaining)
