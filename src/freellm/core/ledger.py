"""The rate ledger: what every key has used, and when it may be used again.

Theory of operation
-------------------
Usage is kept per *usage key* ``(provider, key, model)``; a model whose caps are account-wide
(``ModelSpec.account``) counts under ``(provider, key, ACCOUNT)`` instead, shared by every such
model of the key. Each usage key holds a rolling minute window, a day window (rolling, or a
calendar day in the provider's time zone), the number of requests in flight, and the limits the
provider itself reported (rate-limit headers), which can only tighten what the caps allow.

A call goes through three steps, all pure:

1. :func:`reserve` before any I/O: one request plus the estimated tokens (prompt estimate plus the
   completion budget) are counted at once, or nothing changes and a :class:`Refusal` says which
   limit stands in the way and when it frees up. A reservation that would break any cap is refused,
   so admitted traffic never exceeds a cap in any window.
2. The call.
3. :func:`settle` with what the call really cost: the tokens the response reported replace the
   estimate, in the bucket where the estimate was counted. The request itself always stays
   counted: an upstream 429 or 5xx still used one request of the minute (providers count them).
   What a failure charges in tokens is decided by :mod:`freellm.core.outcome`.

Cooldowns take a scope out of routing until a time: a ``(provider, key, model)`` slot after a
per-minute 429 or a 5xx (with exponential backoff counted in ``strikes``), a whole key after a 402,
a ``(provider, model)`` after a 404.

Memory is bounded per usage key (see :mod:`freellm.core.windows`) and per scope, whatever the
traffic. :func:`to_data` and :func:`from_data` convert the ledger to and from plain JSON-able data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import attrs
import immutables

from freellm.core.catalog import ROLLING, ModelSpec
from freellm.core.signals import Ceiling
from freellm.core.windows import Calendar, Rolling, Window

__all__ = [
    "ACCOUNT",
    "Cooldown",
    "Ledger",
    "Limit",
    "Refusal",
    "Scope",
    "Slot",
    "Ticket",
    "Usage",
    "backoff",
    "book",
    "check",
    "clear_strikes",
    "cool_down",
    "cooldown_of",
    "cooling",
    "explain",
    "from_data",
    "headroom",
    "observe",
    "prune",
    "release_inflight",
    "reserve",
    "settle",
    "to_data",
]

ACCOUNT: Final = "*"
"""The model part of the usage key of account-wide caps."""

UsageKey = tuple[str, str, str]
Scope = tuple[str, str | None, str | None]
"""A cooldown's reach: a slot ``(provider, key, model)``, a whole key ``(provider, key, None)``,
or a model on every key ``(provider, None, model)``."""

BACKOFF_BASE_S: Final = 1.0
BACKOFF_MAX_S: Final = 60.0
CONCURRENCY_RETRY_S: Final = 1.0
"""When a slot at its ``concurrency`` cap is worth asking again: its calls in flight end by
themselves, at a time nobody knows."""
UNKNOWN_RESET_S: Final = {"minute": 60.0, "day": 86_400.0, "unknown": 60.0}
"""How long a reported limit holds when the provider gave no reset time."""


@attrs.frozen
class Slot:
    """A (provider, key, model) that can serve a request, with what its limits need to know.

    The tuples the ledger and health tables are keyed by are built once here, not per request.
    """

    provider: str
    key_id: str  # the stored key's id
    model: ModelSpec
    daily_reset: str = ROLLING
    usage_key: UsageKey = attrs.field(init=False)
    scope: Scope = attrs.field(init=False)  # this slot's cooldowns
    key_scope: Scope = attrs.field(init=False)  # the whole key's cooldowns
    model_scope: Scope = attrs.field(init=False)  # the provider's model, on every key
    health_key: tuple[str, str] = attrs.field(init=False)  # the key in the health table

    def __attrs_post_init__(self) -> None:
        model = self.model.id
        usage_model = ACCOUNT if self.model.account else model
        object.__setattr__(self, "usage_key", (self.provider, self.key_id, usage_model))
        object.__setattr__(self, "scope", (self.provider, self.key_id, model))
        object.__setattr__(self, "key_scope", (self.provider, self.key_id, None))
        object.__setattr__(self, "model_scope", (self.provider, None, model))
        object.__setattr__(self, "health_key", (self.provider, self.key_id))

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model.id}"


@attrs.frozen
class Limit:
    """A provider-reported ceiling: at most ``remaining`` more of ``dimension`` before ``until``."""

    dimension: str  # "requests" | "tokens"
    window: str  # "minute" | "day" | "unknown"
    remaining: int
    limit: int | None
    until: float


@attrs.frozen
class Usage:
    minute: Rolling
    day: Window
    inflight: int = 0
    limits: tuple[Limit, ...] = ()

    @classmethod
    def fresh(cls, daily_reset: str) -> Usage:
        day: Window = Rolling.day() if daily_reset == ROLLING else Calendar(daily_reset)
        return cls(minute=Rolling.minute(), day=day)


@attrs.frozen
class Cooldown:
    until: float
    reason: str
    strikes: int = 0


@attrs.frozen
class Ticket:
    """A reservation: settle it exactly once."""

    slot: Slot
    tokens: int
    at: float


@attrs.frozen
class Refusal:
    """Why a slot cannot take a request now, and the earliest time it might (None: unknown)."""

    reason: str
    retry_at: float | None


@attrs.frozen
class Ledger:
    usage: immutables.Map[UsageKey, Usage] = attrs.field(factory=immutables.Map)
    cooldowns: immutables.Map[Scope, Cooldown] = attrs.field(factory=immutables.Map)


# --- reading ------------------------------------------------------------------------------------


def cooldown_of(ledger: Ledger, scope: Scope, now: float) -> Cooldown | None:
    """The cooldown in force on exactly ``scope`` at ``now``, if any."""
    cooldown = ledger.cooldowns.get(scope)
    if cooldown is None or cooldown.until <= now:
        return None
    return cooldown


def check(ledger: Ledger, slot: Slot, tokens: int, now: float) -> float | Refusal:
    """Whether ``slot`` can take one request of ``tokens`` at ``now``.

    Returns the headroom left after it on the tightest cap, a fraction in ``[0, 1]`` (1 where no
    cap is known), or a :class:`Refusal` naming the first limit in the way, with the time at which
    *every* limit in the way has freed up. Cooldowns of the slot and of its key are checked here;
    the ``(provider, model)`` cooldown is the router's, checked once for all keys.
    """
    room = headroom(ledger, slot, tokens, now)
    return explain(ledger, slot, tokens, now) if room is None else room


def cooling(ledger: Ledger, slot: Slot, now: float) -> bool:
    """Whether a cooldown of ``slot`` or of its key holds at ``now`` (the ``(provider, model)``
    one is the router's, checked once for all keys)."""
    cooldowns = ledger.cooldowns
    for scope in (slot.scope, slot.key_scope):
        cooldown = cooldowns.get(scope)
        if cooldown is not None and cooldown.until > now:
            return True
    return False


def headroom(ledger: Ledger, slot: Slot, tokens: int, now: float) -> float | None:
    """:func:`check` without the explanation: the headroom, or ``None`` when refused.

    This runs for every key of every candidate model, so it is written for speed; explaining a
    refusal (:func:`explain`) costs more and is only needed when nothing fits.
    """
    if ledger.cooldowns and cooling(ledger, slot, now):
        return None
    caps = slot.model.caps
    usage = ledger.usage.get(slot.usage_key)
    if usage is None:
        if caps.empty:
            return 1.0
        usage = Usage.fresh(slot.daily_reset)
    headroom = 1.0

    cap = caps.concurrency
    if cap is not None:
        if usage.inflight >= cap:
            return None
        headroom = (cap - usage.inflight - 1) / cap

    # The four caps, written out: this is the innermost loop of routing.
    rpm, tpm, rpd, tpd = caps.rpm, caps.tpm, caps.rpd, caps.tpd
    if rpm is not None or tpm is not None:
        used_requests, used_tokens = usage.minute.totals(now)
        if rpm is not None:
            left = rpm - used_requests - 1
            if left < 0:
                return None
            if left < headroom * rpm:
                headroom = left / rpm
        if tpm is not None:
            left = tpm - used_tokens - tokens
            if left < 0:
                return None
            if left < headroom * tpm:
                headroom = left / tpm
    if rpd is not None or tpd is not None:
        used_requests, used_tokens = usage.day.totals(now)
        if rpd is not None:
            left = rpd - used_requests - 1
            if left < 0:
                return None
            if left < headroom * rpd:
                headroom = left / rpd
        if tpd is not None:
            left = tpd - used_tokens - tokens
            if left < 0:
                return None
            if left < headroom * tpd:
                headroom = left / tpd

    for limit in usage.limits:
        if limit.until <= now:
            continue
        left = limit.remaining - (1 if limit.dimension == "requests" else tokens)
        if left < 0:
            return None
        if limit.limit and left < headroom * limit.limit:
            headroom = left / limit.limit
    return headroom


_NEVER: Final = float("inf")


def explain(ledger: Ledger, slot: Slot, tokens: int, now: float) -> Refusal:
    """The refusal of a slot that :func:`headroom` found blocked: the slow path, off the hot one.

    Walks every limit, not just the first in the way, so that ``retry_at`` is when all of them
    have freed (``None`` if one never will by waiting, or its end is unknown).
    """
    blocked: list[tuple[str, float]] = []  # (reason, frees at; _NEVER when never or unknown)
    for scope in (slot.scope, slot.key_scope):
        cooldown = ledger.cooldowns.get(scope)
        if cooldown is not None and cooldown.until > now:
            blocked.append((f"cooldown: {cooldown.reason}", cooldown.until))
    usage = ledger.usage.get(slot.usage_key) or Usage.fresh(slot.daily_reset)
    caps = slot.model.caps
    if caps.concurrency is not None and usage.inflight >= caps.concurrency:
        # A call in flight ends by itself; when is unknown, so look again shortly.
        blocked.append(("concurrency", now + CONCURRENCY_RETRY_S))
    for window, request_cap, token_cap, names in (
        (usage.minute, caps.rpm, caps.tpm, ("rpm", "tpm")),
        (usage.day, caps.rpd, caps.tpd, ("rpd", "tpd")),
    ):
        used_requests, used_tokens = window.totals(now)
        for name, cap, used, cost, requests_target, tokens_target in (
            (names[0], request_cap, used_requests, 1, True, False),
            (names[1], token_cap, used_tokens, tokens, False, True),
        ):
            if cap is None or used + cost <= cap:
                continue
            if cost > cap:
                blocked.append((f"{name}: request larger than the cap of {cap}", _NEVER))
                continue
            frees = window.frees_at(
                now,
                requests=cap - cost if requests_target else 1 << 62,
                tokens=cap - cost if tokens_target else 1 << 62,
            )
            blocked.append((name, _NEVER if frees is None else frees))
    for limit in usage.limits:
        cost = 1 if limit.dimension == "requests" else tokens
        if limit.until > now and limit.remaining < cost:
            blocked.append((f"provider limit: {limit.dimension} per {limit.window}", limit.until))
    if not blocked:
        raise AssertionError(f"{slot.name} was refused with nothing in the way")
    latest = max(frees for _, frees in blocked)
    return Refusal(blocked[0][0], None if latest == _NEVER else latest)


# --- transitions --------------------------------------------------------------------------------


def reserve(
    ledger: Ledger, slot: Slot, tokens: int, *, now: float
) -> tuple[Ledger, Ticket] | Refusal:
    """Count one request of ``tokens`` against ``slot`` before calling it.

    Returns the new ledger and the ticket to settle, or a :class:`Refusal` and no change at all.
    Raises ``ValueError`` for a negative token count (a broken caller, not bad input).
    """
    if tokens < 0:
        raise ValueError(f"a reservation cannot be negative: {tokens}")
    if headroom(ledger, slot, tokens, now) is None:
        return explain(ledger, slot, tokens, now)
    return book(ledger, slot, tokens, now=now)


def book(ledger: Ledger, slot: Slot, tokens: int, *, now: float) -> tuple[Ledger, Ticket]:
    """:func:`reserve` without the check, for a caller that has just made it on this very
    ``ledger`` at this very ``now`` (the router's plan). Anyone else calls :func:`reserve`."""
    key = slot.usage_key
    usage = ledger.usage.get(key) or Usage.fresh(slot.daily_reset)
    limits = usage.limits
    if limits:
        limits = tuple(
            Limit(
                limit.dimension,
                limit.window,
                limit.remaining - (1 if limit.dimension == "requests" else tokens),
                limit.limit,
                limit.until,
            )
            for limit in limits
            if limit.until > now
        )
    usage = Usage(
        usage.minute.add(now, 1, tokens),
        usage.day.add(now, 1, tokens),
        usage.inflight + 1,
        limits,
    )
    return Ledger(ledger.usage.set(key, usage), ledger.cooldowns), Ticket(slot, tokens, now)


def settle(ledger: Ledger, ticket: Ticket, *, tokens: int) -> Ledger:
    """Replace the estimate of ``ticket`` with the ``tokens`` the call really cost.

    The request stays counted. ``tokens`` may exceed the estimate (the prompt estimate was low):
    the excess is counted too, and later reservations wait for it to leave the window.
    Raises ``ValueError`` for a negative token count.
    """
    if tokens < 0:
        raise ValueError(f"a settlement cannot be negative: {tokens}")
    key = ticket.slot.usage_key
    usage = ledger.usage.get(key)
    if usage is None:
        return ledger  # reserved before a restart that dropped it: nothing left to correct
    delta = tokens - ticket.tokens
    minute, day = usage.minute, usage.day
    if delta:
        minute = minute.adjust(ticket.at, 0, delta)
        day = day.adjust(ticket.at, 0, delta)
    usage = Usage(minute, day, max(0, usage.inflight - 1), usage.limits)
    return Ledger(ledger.usage.set(key, usage), ledger.cooldowns)


def observe(ledger: Ledger, slot: Slot, ceilings: Iterable[Ceiling], *, now: float) -> Ledger:
    """Tighten ``slot``'s usage with what the provider reported it has left.

    A reported ceiling replaces an earlier one of the same dimension and window. Without a reset
    time it holds for one window (:data:`UNKNOWN_RESET_S`).
    """
    fresh = {
        (c.dimension, c.window): Limit(
            dimension=c.dimension,
            window=c.window,
            remaining=c.remaining,
            limit=c.limit,
            until=c.reset_at if c.reset_at is not None else now + UNKNOWN_RESET_S[c.window],
        )
        for c in ceilings
    }
    if not fresh:
        return ledger
    key = slot.usage_key
    usage = ledger.usage.get(key) or Usage.fresh(slot.daily_reset)
    kept = tuple(
        limit
        for limit in usage.limits
        if limit.until > now and (limit.dimension, limit.window) not in fresh
    )
    usage = Usage(usage.minute, usage.day, usage.inflight, kept + tuple(fresh.values()))
    return Ledger(ledger.usage.set(key, usage), ledger.cooldowns)


def cool_down(ledger: Ledger, scope: Scope, *, until: float, reason: str) -> Ledger:
    """Take ``scope`` out of routing until ``until`` (an earlier end never shortens a later one).

    A cooldown for a reason of its own replaces a backoff: its strikes start again.
    """
    current = ledger.cooldowns.get(scope)
    if current is not None and current.until >= until:
        return ledger
    return Ledger(ledger.usage, ledger.cooldowns.set(scope, Cooldown(until, reason)))


def backoff(
    ledger: Ledger, scope: Scope, *, now: float, reason: str, at_least: float = 0.0
) -> Ledger:
    """An exponential cooldown: 1 s, 2 s, 4 s, ... up to 60 s, one more strike each time.

    ``at_least`` (the provider's Retry-After, say) lengthens a delay, never shortens it.
    """
    current = ledger.cooldowns.get(scope)
    strikes = 1 if current is None else current.strikes + 1
    delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** min(strikes - 1, 16))
    until = now + max(delay, at_least)
    if current is not None and current.until > until:
        until = current.until
    return Ledger(ledger.usage, ledger.cooldowns.set(scope, Cooldown(until, reason, strikes)))


def clear_strikes(ledger: Ledger, scope: Scope) -> Ledger:
    """Forget the backoff of ``scope`` after a success.

    Only a backoff (an entry with strikes) goes: a rate-limit cooldown that a concurrent call
    started stays until it ends.
    """
    current = ledger.cooldowns.get(scope)
    if current is None or not current.strikes:
        return ledger
    return Ledger(ledger.usage, ledger.cooldowns.delete(scope))


def release_inflight(ledger: Ledger) -> Ledger:
    """The ledger after a restart: calls in flight at a crash are over; their usage still counts."""
    usage = ledger.usage
    with usage.mutate() as changed:
        for key, entry in usage.items():
            if entry.inflight:
                changed[key] = attrs.evolve(entry, inflight=0)
        usage = changed.finish()
    return attrs.evolve(ledger, usage=usage)


def prune(ledger: Ledger, *, now: float) -> Ledger:
    """Drop what can no longer matter at ``now``: empty usage, expired cooldowns without strikes."""
    with ledger.usage.mutate() as usage:
        for key, entry in ledger.usage.items():
            idle = entry.inflight == 0 and not any(limit.until > now for limit in entry.limits)
            if idle and entry.minute.totals(now) == (0, 0) and entry.day.totals(now) == (0, 0):
                del usage[key]
        kept_usage = usage.finish()
    with ledger.cooldowns.mutate() as cooldowns:
        for scope, cooldown in ledger.cooldowns.items():
            if cooldown.until <= now and cooldown.strikes == 0:
                del cooldowns[scope]
        kept_cooldowns = cooldowns.finish()
    return Ledger(kept_usage, kept_cooldowns)


# --- plain data ---------------------------------------------------------------------------------

FORMAT: Final = 1


def to_data(ledger: Ledger) -> dict[str, Any]:
    """The ledger as JSON-able data; :func:`from_data` reverses it exactly."""
    return {
        "format": FORMAT,
        "usage": [
            {
                "provider": provider,
                "key": key,
                "model": model,
                "minute": _window_data(usage.minute),
                "day": _window_data(usage.day),
                "inflight": usage.inflight,
                "limits": [attrs.asdict(limit) for limit in usage.limits],
            }
            for (provider, key, model), usage in ledger.usage.items()
        ],
        "cooldowns": [
            {"provider": provider, "key": key, "model": model, **attrs.asdict(cooldown)}
            for (provider, key, model), cooldown in ledger.cooldowns.items()
        ],
    }


def from_data(data: Any) -> Ledger:
    """A ledger from :func:`to_data`'s output.

    Raises ``ValueError`` when ``data`` is not of that format (a corrupt or foreign store).
    """
    try:
        if data["format"] != FORMAT:
            raise ValueError(f"unknown ledger format {data['format']!r}")
        usage = immutables.Map(
            {
                (entry["provider"], entry["key"], entry["model"]): Usage(
                    minute=_rolling_from(entry["minute"]),
                    day=_window_from(entry["day"]),
                    inflight=int(entry["inflight"]),
                    limits=tuple(Limit(**limit) for limit in entry["limits"]),
                )
                for entry in data["usage"]
            }
        )
        cooldowns = immutables.Map(
            {
                (entry["provider"], entry["key"], entry["model"]): Cooldown(
                    until=float(entry["until"]),
                    reason=str(entry["reason"]),
                    strikes=int(entry["strikes"]),
                )
                for entry in data["cooldowns"]
            }
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a ledger: {exc!r}") from None
    return Ledger(usage, cooldowns)


def _window_data(window: Window) -> dict[str, Any]:
    if isinstance(window, Rolling):
        return {
            "kind": "rolling",
            "span": window.span,
            "grain": window.grain,
            "buckets": [list(bucket) for bucket in window.buckets],
        }
    return {
        "kind": "calendar",
        "zone": window.zone,
        "starts": window.starts,
        "ends": window.ends,
        "requests": window.requests,
        "tokens": window.tokens,
    }


def _rolling_from(data: dict[str, Any]) -> Rolling:
    if data["kind"] != "rolling":
        raise ValueError(f"expected a rolling window, got {data['kind']!r}")
    buckets = tuple((float(s), int(r), int(t)) for s, r, t in data["buckets"])
    return Rolling(
        span=float(data["span"]),
        grain=float(data["grain"]),
        buckets=buckets,
        requests=sum(b[1] for b in buckets),
        tokens=sum(b[2] for b in buckets),
    )


def _window_from(data: dict[str, Any]) -> Window:
    if data["kind"] == "rolling":
        return _rolling_from(data)
    if data["kind"] == "calendar":
        return Calendar(
            zone=str(data["zone"]),
            starts=float(data["starts"]),
            ends=float(data["ends"]),
            requests=int(data["requests"]),
            tokens=int(data["tokens"]),
        )
    raise ValueError(f"unknown window kind {data['kind']!r}")
