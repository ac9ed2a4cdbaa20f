"""The live quota view: what every key has used and has left, read off the router's state.

:func:`quota_view` is a pure function of one :class:`~freellm.core.router.RouterState` at ``now``;
it reads the very :class:`~freellm.core.ledger.Slot` objects the router routes with
(``Topology.slots``) and judges them with the ledger's own :func:`~freellm.core.ledger.headroom`
and :func:`~freellm.core.ledger.explain`, so what it shows is what routing sees. It costs
O(keys x models) and runs about once a second for the dashboard's live pages.

Rows
----
One row per enabled key and model of the key's provider, ordered by provider, key id, then the
model's place in the fallback chain (models in the chain first, in chain order, then the rest in
catalog order). The models of a provider whose caps are account-wide (``account = true``) share
one usage entry per key (:data:`~freellm.core.ledger.ACCOUNT`), so they make one *account row* per
key, at the place of the first of them, with ``model`` ``"*"`` and the models it covers in
``models``. Its caps are the loosest of those models' caps (they normally agree: one account
limit); a cap that one of them leaves unknown is unknown. It is ``available`` when any of its
models is.

A row is ``available`` when it could take a one-token request now, judged as routing judges it:
the key is not ``invalid``, no cooldown of the slot, the key or the model on every key is in force,
and the ledger's caps and the limits the provider announced leave room. When it is not,
``blocked_reason`` and ``retry_at`` say why and when it frees up (``None``: not by waiting).

``resets_at`` of a window: for a calendar-day window (``daily_reset`` names a time zone), the next
local midnight in that zone, whether or not anything is counted; for a rolling window, the time
the oldest use still counted leaves it (``None`` when nothing is counted).

Plain data (:func:`to_data`)
----------------------------
The browser reads these names; times are epoch seconds (floats), counts are ints, absent is null::

    {
      "now": float,
      "rows": [{
        "provider": str, "key_id": str,
        "model": str,                  # the model id, or "*" for an account row
        "account": bool,               # the caps count against the key across "models"
        "models": [str, ...],          # the model ids the row covers (one unless account)
        "windows": {                   # keys "rpm", "tpm", "rpd", "tpd"
          "rpm": {"used": int, "cap": int | null, "left": int | null,
                  "resets_at": float | null},
          ...
        },
        "inflight": int, "concurrency": int | null,
        "daily_reset": str,            # "rolling" or an IANA zone name
        "cooldowns": [{"scope": "slot" | "key" | "model",
                       "model": str | null,    # null for a key's cooldown
                       "until": float, "reason": str, "seconds_left": float}, ...],
        "announced": [{"dimension": "requests" | "tokens",
                       "window": "minute" | "day" | "unknown",
                       "remaining": int, "limit": int | null,
                       "until": float, "seconds_left": float}, ...],
        "health": str,                 # unknown | healthy | rate_limited | invalid | error
        "health_since": float | null,
        "available": bool,
        "blocked_reason": str | null, "retry_at": float | null   # null when available
      }, ...],
      "capacity": {                    # keys "rpm", "tpm", "rpd", "tpd"
        "rpm": {"left": int, "cap": int, "unknown": int}, ...
      },
      "targets": [{
        "target": "provider/model", "provider": str, "model": str,
        "in_chain": bool,              # chain entries first, in chain order, then the catalog's
        "keys": int, "available_keys": int, "servable_now": bool,
        "blocked_reason": str | null, "retry_at": float | null   # null when servable now
      }, ...]
    }

``capacity`` sums ``left`` and ``cap`` over the rows whose cap of that window is known (an account
cap once per key, since it is one row) and counts in ``unknown`` the rows whose cap is not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs

from freellm.core import health as health_
from freellm.core import ledger as ledger_
from freellm.core.catalog import Caps, ModelSpec
from freellm.core.ledger import ACCOUNT, Refusal, Slot, Usage
from freellm.core.router import RouterState
from freellm.core.windows import Calendar, Window, local_day_bounds

__all__ = [
    "WINDOWS",
    "ActiveCooldown",
    "AnnouncedLimit",
    "Capacity",
    "CapacityTotal",
    "QuotaRow",
    "QuotaView",
    "TargetStatus",
    "WindowQuota",
    "quota_view",
    "to_data",
    "used_today",
]

WINDOWS: Final = ("rpm", "tpm", "rpd", "tpd")
"""The windows of a row and of the capacity totals, in the order they are shown."""

_PROBE_TOKENS: Final = 1
"""The request a row is judged by: the smallest there is."""
_ALL: Final = 1 << 62  # a frees_at target that is always met


@attrs.frozen
class WindowQuota:
    used: int
    cap: int | None
    left: int | None  # cap - used, never below 0; None when the cap is unknown
    resets_at: float | None


@attrs.frozen
class ActiveCooldown:
    scope: str  # "slot" (this model on this key) | "key" | "model" (this model on every key)
    model: str | None  # None for a key's cooldown
    until: float
    reason: str
    seconds_left: float


@attrs.frozen
class AnnouncedLimit:
    """A limit the provider reported in rate-limit headers, still in force."""

    dimension: str
    window: str
    remaining: int
    limit: int | None
    until: float
    seconds_left: float


@attrs.frozen
class QuotaRow:
    provider: str
    key_id: str
    model: str  # the model id, or ACCOUNT for an account row
    account: bool
    models: tuple[str, ...]
    rpm: WindowQuota
    tpm: WindowQuota
    rpd: WindowQuota
    tpd: WindowQuota
    inflight: int
    concurrency: int | None
    daily_reset: str
    cooldowns: tuple[ActiveCooldown, ...]
    announced: tuple[AnnouncedLimit, ...]
    health: str
    health_since: float | None
    available: bool
    blocked_reason: str | None
    retry_at: float | None

    def window(self, name: str) -> WindowQuota:
        """The window named ``name`` (one of :data:`WINDOWS`); raises ``KeyError`` otherwise."""
        return {"rpm": self.rpm, "tpm": self.tpm, "rpd": self.rpd, "tpd": self.tpd}[name]


@attrs.frozen
class CapacityTotal:
    left: int
    cap: int
    unknown: int  # rows without a known cap for this window


@attrs.frozen
class Capacity:
    """Capacity left now across all keys, per window."""

    rpm: CapacityTotal
    tpm: CapacityTotal
    rpd: CapacityTotal
    tpd: CapacityTotal

    def window(self, name: str) -> CapacityTotal:
        """The total of the window named ``name``; raises ``KeyError`` for another name."""
        return {"rpm": self.rpm, "tpm": self.tpm, "rpd": self.rpd, "tpd": self.tpd}[name]


@attrs.frozen
class TargetStatus:
    """Whether any key of a ``provider/model`` can take a one-token request now."""

    provider: str
    model: str
    in_chain: bool
    keys: int
    available_keys: int
    blocked_reason: str | None  # None when servable now
    retry_at: float | None  # the earliest a key frees up; None when servable or never by waiting

    @property
    def target(self) -> str:
        """``provider/model``, as the chain names it."""
        return f"{self.provider}/{self.model}"

    @property
    def servable_now(self) -> bool:
        return self.available_keys > 0


@attrs.frozen
class QuotaView:
    now: float
    rows: tuple[QuotaRow, ...]
    capacity: Capacity
    targets: tuple[TargetStatus, ...]


# --- building the view ---------------------------------------------------------------------------


def quota_view(state: RouterState, *, now: float) -> QuotaView:
    """The quota view of ``state`` at ``now`` (epoch seconds). Raises nothing on a valid state."""
    catalog = state.catalog
    topology = state.topology
    # One verdict per slot, in the order of Topology.slots; rows and targets both read them.
    verdicts: dict[tuple[str, str], tuple[Refusal | None, ...]] = {
        target: tuple(_judge(state, slot, now) for slot in slots)
        for target, slots in topology.slots.items()
    }
    chain_rank = {(t.provider, t.model.id): i for i, t in enumerate(catalog.chain_targets)}
    day_ends: dict[str, float] = {}  # the next local midnight per zone, computed once per call

    rows: list[QuotaRow] = []
    key_counts: dict[str, int] = {}  # topology.keys is sorted by provider, then key id
    for key in topology.keys:
        key_counts[key.provider] = key_counts.get(key.provider, 0) + 1
    for provider_id, count in key_counts.items():
        provider = catalog.providers.get(provider_id)
        if provider is None:
            continue  # a key of a provider the catalog no longer has: nothing routes to it
        groups = _groups(provider_id, provider.models.values(), chain_rank)
        for index in range(count):  # the index of the key in every slots tuple of its provider
            for models in groups:
                slots = [topology.slots[provider_id, model.id][index] for model in models]
                refusals = [verdicts[provider_id, model.id][index] for model in models]
                rows.append(_row(state, slots, refusals, now, day_ends))

    targets = [
        _target(t.provider, t.model.id, True, verdicts[t.provider, t.model.id])
        for t in catalog.chain_targets
    ]
    for provider_id, provider in catalog.providers.items():
        for model in provider.models.values():
            if (provider_id, model.id) not in chain_rank:
                targets.append(
                    _target(provider_id, model.id, False, verdicts[provider_id, model.id])
                )
    return QuotaView(now, tuple(rows), _capacity(rows), tuple(targets))


def _judge(state: RouterState, slot: Slot, now: float) -> Refusal | None:
    """Why ``slot`` cannot take a one-token request at ``now``, or ``None`` if it can.

    The router's filters for one key, in :func:`freellm.core.router.admit`'s order: an invalid
    key never frees up by waiting; under the model's cooldown a key that is blocked itself frees
    at the later of the two (as ``Plan`` explains it); otherwise the ledger decides and explains.
    """
    if not health_.is_routable(state.health, slot.provider, slot.key_id):
        return Refusal("invalid key", None)
    ledger = state.ledger
    room = ledger_.headroom(ledger, slot, _PROBE_TOKENS, now)
    model_cooldown = ledger_.cooldown_of(ledger, slot.model_scope, now)
    if model_cooldown is None:
        return None if room is not None else ledger_.explain(ledger, slot, _PROBE_TOKENS, now)
    until: float | None = model_cooldown.until
    if room is None:
        freed = ledger_.explain(ledger, slot, _PROBE_TOKENS, now).retry_at
        until = None if freed is None else max(model_cooldown.until, freed)
    return Refusal(f"cooldown: {model_cooldown.reason}", until)


def _groups(
    provider: str, models: Iterable[ModelSpec], chain_rank: dict[tuple[str, str], int]
) -> list[tuple[ModelSpec, ...]]:
    """The models of ``provider`` in row order, the account ones together at the first's place."""
    ordered = [
        model
        for _, model in sorted(
            enumerate(models),
            key=lambda item: (
                (0, chain_rank[provider, item[1].id])
                if (provider, item[1].id) in chain_rank
                else (1, item[0])
            ),
        )
    ]
    account = tuple(model for model in ordered if model.account)
    groups: list[tuple[ModelSpec, ...]] = []
    for model in ordered:
        if not model.account:
            groups.append((model,))
        elif model is account[0]:
            groups.append(account)
    return groups


def _row(
    state: RouterState,
    slots: Sequence[Slot],
    refusals: Sequence[Refusal | None],
    now: float,
    day_ends: dict[str, float],
) -> QuotaRow:
    first = slots[0]
    account = first.model.account
    ledger = state.ledger
    usage = ledger.usage.get(first.usage_key) or Usage.fresh(first.daily_reset)
    caps = _loosest([slot.model.caps for slot in slots])
    minute_requests, minute_tokens = usage.minute.totals(now)
    day_requests, day_tokens = usage.day.totals(now)
    minute_resets = _resets(usage.minute, now, minute_requests, minute_tokens, day_ends)
    day_resets = _resets(usage.day, now, day_requests, day_tokens, day_ends)

    cooldowns = [
        *(_cooldown(ledger, "slot", slot.scope, slot.model.id, now) for slot in slots),
        _cooldown(ledger, "key", first.key_scope, None, now),
        *(_cooldown(ledger, "model", slot.model_scope, slot.model.id, now) for slot in slots),
    ]
    announced = tuple(
        AnnouncedLimit(
            limit.dimension,
            limit.window,
            limit.remaining,
            limit.limit,
            limit.until,
            limit.until - now,
        )
        for limit in usage.limits
        if limit.until > now
    )
    key_health = state.health.of(first.provider, first.key_id)

    blocked = _first_to_free(refusals)
    return QuotaRow(
        provider=first.provider,
        key_id=first.key_id,
        model=ACCOUNT if account else first.model.id,
        account=account,
        models=tuple(slot.model.id for slot in slots),
        rpm=_window(minute_requests, caps.rpm, minute_resets[0]),
        tpm=_window(minute_tokens, caps.tpm, minute_resets[1]),
        rpd=_window(day_requests, caps.rpd, day_resets[0]),
        tpd=_window(day_tokens, caps.tpd, day_resets[1]),
        inflight=usage.inflight,
        concurrency=caps.concurrency,
        daily_reset=first.daily_reset,
        cooldowns=tuple(cooldown for cooldown in cooldowns if cooldown is not None),
        announced=announced,
        health=key_health.state.value,
        health_since=key_health.since,
        available=blocked is None,
        blocked_reason=None if blocked is None else blocked.reason,
        retry_at=None if blocked is None else blocked.retry_at,
    )


def _first_to_free(refusals: Sequence[Refusal | None]) -> Refusal | None:
    """``None`` if any of ``refusals`` is ``None`` (that model or key can serve), else the refusal
    that frees up first (one that never does counts as last; ties go to the earlier one)."""
    if any(refusal is None for refusal in refusals):
        return None
    blocked = [refusal for refusal in refusals if refusal is not None]
    return min(blocked, key=lambda r: (r.retry_at is None, r.retry_at or 0.0))


def _loosest(caps: Sequence[Caps]) -> Caps:
    """Per cap, the largest of ``caps``; unknown where any of them is unknown."""
    if len(caps) == 1:
        return caps[0]

    def loosest(values: Iterable[int | None]) -> int | None:
        known = list(values)
        return None if any(v is None for v in known) else max(v for v in known if v is not None)

    return Caps(
        rpm=loosest(c.rpm for c in caps),
        rpd=loosest(c.rpd for c in caps),
        tpm=loosest(c.tpm for c in caps),
        tpd=loosest(c.tpd for c in caps),
        concurrency=loosest(c.concurrency for c in caps),
    )


def _window(used: int, cap: int | None, resets_at: float | None) -> WindowQuota:
    left = None if cap is None else max(0, cap - used)
    return WindowQuota(used, cap, left, resets_at)


def _resets(
    window: Window, now: float, requests: int, tokens: int, day_ends: dict[str, float]
) -> tuple[float | None, float | None]:
    """When the requests and the tokens counted in ``window`` next go down."""
    if isinstance(window, Calendar):
        if window.starts <= now < window.ends:
            return window.ends, window.ends
        end = day_ends.get(window.zone)
        if end is None:
            end = day_ends[window.zone] = local_day_bounds(now, window.zone)[1]
        return end, end
    # The oldest counted bucket of each dimension leaves when at most one less than now remains.
    by_requests = window.frees_at(now, requests=requests - 1, tokens=_ALL) if requests else None
    by_tokens = window.frees_at(now, requests=_ALL, tokens=tokens - 1) if tokens else None
    return by_requests, by_tokens


def _cooldown(
    ledger: ledger_.Ledger, scope_name: str, scope: ledger_.Scope, model: str | None, now: float
) -> ActiveCooldown | None:
    cooldown = ledger_.cooldown_of(ledger, scope, now)
    if cooldown is None:
        return None
    return ActiveCooldown(scope_name, model, cooldown.until, cooldown.reason, cooldown.until - now)


def _capacity(rows: Sequence[QuotaRow]) -> Capacity:
    totals = []
    for name in WINDOWS:
        left = cap = unknown = 0
        for row in rows:
            window = row.window(name)
            if window.cap is None or window.left is None:
                unknown += 1
            else:
                left += window.left
                cap += window.cap
        totals.append(CapacityTotal(left, cap, unknown))
    return Capacity(*totals)


def _target(
    provider: str, model: str, in_chain: bool, refusals: Sequence[Refusal | None]
) -> TargetStatus:
    available = sum(1 for refusal in refusals if refusal is None)
    if available or not refusals:
        reason = None if available else "no key"
        return TargetStatus(provider, model, in_chain, len(refusals), available, reason, None)
    blocked = _first_to_free(refusals)
    assert blocked is not None
    return TargetStatus(
        provider, model, in_chain, len(refusals), 0, blocked.reason, blocked.retry_at
    )


# --- plain data ----------------------------------------------------------------------------------


def used_today(state: RouterState, provider: str, key_id: str, *, now: float) -> tuple[int, int]:
    """Requests and tokens the ledger counts against one key in its day windows, all its models
    (and its account-wide usage) together: the Keys page's "today"."""
    requests = tokens = 0
    for (usage_provider, usage_key, _), usage in state.ledger.usage.items():
        if usage_provider == provider and usage_key == key_id:
            used_requests, used_tokens = usage.day.totals(now)
            requests += used_requests
            tokens += used_tokens
    return requests, tokens


def to_data(view: QuotaView) -> dict[str, Any]:
    """``view`` as JSON-ready data, in the shape the module docstring fixes."""
    return {
        "now": float(view.now),
        "rows": [_row_data(row) for row in view.rows],
        "capacity": {name: attrs.asdict(view.capacity.window(name)) for name in WINDOWS},
        "targets": [
            {
                "target": target.target,
                "provider": target.provider,
                "model": target.model,
                "in_chain": target.in_chain,
                "keys": target.keys,
                "available_keys": target.available_keys,
                "servable_now": target.servable_now,
                "blocked_reason": target.blocked_reason,
                "retry_at": _time(target.retry_at),
            }
            for target in view.targets
        ],
    }


def _row_data(row: QuotaRow) -> dict[str, Any]:
    return {
        "provider": row.provider,
        "key_id": row.key_id,
        "model": row.model,
        "account": row.account,
        "models": list(row.models),
        "windows": {name: _window_data(row.window(name)) for name in WINDOWS},
        "inflight": row.inflight,
        "concurrency": row.concurrency,
        "daily_reset": row.daily_reset,
        "cooldowns": [
            {
                "scope": cooldown.scope,
                "model": cooldown.model,
                "until": float(cooldown.until),
                "reason": cooldown.reason,
                "seconds_left": float(cooldown.seconds_left),
            }
            for cooldown in row.cooldowns
        ],
        "announced": [
            {
                "dimension": limit.dimension,
                "window": limit.window,
                "remaining": limit.remaining,
                "limit": limit.limit,
                "until": float(limit.until),
                "seconds_left": float(limit.seconds_left),
            }
            for limit in row.announced
        ],
        "health": row.health,
        "health_since": _time(row.health_since),
        "available": row.available,
        "blocked_reason": row.blocked_reason,
        "retry_at": _time(row.retry_at),
    }


def _window_data(window: WindowQuota) -> dict[str, Any]:
    return {
        "used": window.used,
        "cap": window.cap,
        "left": window.left,
        "resets_at": _time(window.resets_at),
    }


def _time(value: float | None) -> float | None:
    return None if value is None else float(value)
