"""Key health: what we know of each provider key, as a state machine kept as a table.

States
    ``unknown``       never checked since it was added or edited
    ``healthy``       the last probe or call succeeded
    ``rate_limited``  the key works, but the provider said "not now" (its cooldown is the ledger's)
    ``invalid``       the provider refused the key (401/403): out of routing until a probe
                      succeeds or the key is edited
    ``error``         the last probe or call failed for another reason (5xx, timeout, network)

Only ``invalid`` takes a key out of routing; how long a rate-limited or failing key waits is a
ledger cooldown, not a health state. Evidence that the key authenticates (a successful call, a 429
from a probe) moves it out of ``invalid``; a failing call does not, since a call can still be in
flight when the key turns invalid.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs
import immutables

__all__ = [
    "TRANSITIONS",
    "Event",
    "Health",
    "KeyHealth",
    "State",
    "apply",
    "forget",
    "from_data",
    "is_routable",
    "replace",
    "to_data",
]


class State(enum.Enum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    RATE_LIMITED = "rate_limited"
    INVALID = "invalid"
    ERROR = "error"


class Event(enum.Enum):
    PROBE_OK = "probe_ok"
    PROBE_RATE_LIMITED = "probe_rate_limited"
    PROBE_INVALID = "probe_invalid"
    PROBE_ERROR = "probe_error"
    CALL_OK = "call_ok"
    CALL_RATE_LIMITED = "call_rate_limited"
    CALL_INVALID = "call_invalid"
    CALL_ERROR = "call_error"
    EDITED = "edited"


_U, _H, _R, _I, _E = (
    State.UNKNOWN,
    State.HEALTHY,
    State.RATE_LIMITED,
    State.INVALID,
    State.ERROR,
)

# fmt: off
TRANSITIONS: Final[Mapping[tuple[State, Event], State]] = MappingProxyType({
    # state  event                       new state
    (_U, Event.PROBE_OK):               _H,
    (_H, Event.PROBE_OK):               _H,
    (_R, Event.PROBE_OK):               _H,
    (_I, Event.PROBE_OK):               _H,
    (_E, Event.PROBE_OK):               _H,

    (_U, Event.PROBE_RATE_LIMITED):     _R,
    (_H, Event.PROBE_RATE_LIMITED):     _R,
    (_R, Event.PROBE_RATE_LIMITED):     _R,
    (_I, Event.PROBE_RATE_LIMITED):     _R,  # a 429 means the key authenticated
    (_E, Event.PROBE_RATE_LIMITED):     _R,

    (_U, Event.PROBE_INVALID):          _I,
    (_H, Event.PROBE_INVALID):          _I,
    (_R, Event.PROBE_INVALID):          _I,
    (_I, Event.PROBE_INVALID):          _I,
    (_E, Event.PROBE_INVALID):          _I,

    (_U, Event.PROBE_ERROR):            _E,
    (_H, Event.PROBE_ERROR):            _E,
    (_R, Event.PROBE_ERROR):            _E,
    (_I, Event.PROBE_ERROR):            _I,  # a network error proves nothing about the key
    (_E, Event.PROBE_ERROR):            _E,

    (_U, Event.CALL_OK):                _H,
    (_H, Event.CALL_OK):                _H,
    (_R, Event.CALL_OK):                _H,
    (_I, Event.CALL_OK):                _H,  # a call in flight when it was marked proves it works
    (_E, Event.CALL_OK):                _H,

    (_U, Event.CALL_RATE_LIMITED):      _R,
    (_H, Event.CALL_RATE_LIMITED):      _R,
    (_R, Event.CALL_RATE_LIMITED):      _R,
    (_I, Event.CALL_RATE_LIMITED):      _I,
    (_E, Event.CALL_RATE_LIMITED):      _R,

    (_U, Event.CALL_INVALID):           _I,
    (_H, Event.CALL_INVALID):           _I,
    (_R, Event.CALL_INVALID):           _I,
    (_I, Event.CALL_INVALID):           _I,
    (_E, Event.CALL_INVALID):           _I,

    (_U, Event.CALL_ERROR):             _E,
    (_H, Event.CALL_ERROR):             _E,
    (_R, Event.CALL_ERROR):             _E,
    (_I, Event.CALL_ERROR):             _I,
    (_E, Event.CALL_ERROR):             _E,

    (_U, Event.EDITED):                 _U,
    (_H, Event.EDITED):                 _U,
    (_R, Event.EDITED):                 _U,
    (_I, Event.EDITED):                 _U,
    (_E, Event.EDITED):                 _U,
})
# fmt: on

KeyId = tuple[str, str]  # (provider, key id)


@attrs.frozen
class KeyHealth:
    state: State = State.UNKNOWN
    since: float | None = None  # when it entered this state
    checked_at: float | None = None  # the last probe
    last_error: str | None = None


@attrs.frozen
class Health:
    """The health of every key that has any, and the index of the invalid ones.

    ``invalid`` is derived from ``keys`` when a ``Health`` is made (health changes are rare) and
    is what routing asks on every candidate: usually empty, so asking is free.
    """

    keys: immutables.Map[KeyId, KeyHealth] = attrs.field(factory=immutables.Map)
    invalid: frozenset[KeyId] = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        invalid = frozenset(k for k, entry in self.keys.items() if entry.state is State.INVALID)
        object.__setattr__(self, "invalid", invalid)

    def of(self, provider: str, key: str) -> KeyHealth:
        return self.keys.get((provider, key)) or _UNKNOWN


_UNKNOWN: Final = KeyHealth()
_PROBES: Final = frozenset(
    {Event.PROBE_OK, Event.PROBE_RATE_LIMITED, Event.PROBE_INVALID, Event.PROBE_ERROR}
)
_FAILURES: Final = frozenset(
    {
        Event.PROBE_INVALID,
        Event.PROBE_ERROR,
        Event.PROBE_RATE_LIMITED,
        Event.CALL_INVALID,
        Event.CALL_ERROR,
        Event.CALL_RATE_LIMITED,
    }
)


def apply(
    health: Health, provider: str, key: str, event: Event, *, now: float, error: str | None = None
) -> Health:
    """``health`` after ``event`` happened to ``(provider, key)`` at ``now``.

    ``error`` is a short description of a failure (never a secret); it is kept as ``last_error``.
    A success clears it.
    """
    current = health.of(provider, key)
    state = TRANSITIONS[current.state, event]
    last_error = error if event in _FAILURES else None
    if state is current.state and event not in _PROBES and last_error == current.last_error:
        return health  # the common case: another success of a healthy key
    if event is Event.EDITED:
        updated = _UNKNOWN
    else:
        updated = KeyHealth(
            state=state,
            since=current.since if state is current.state else now,
            checked_at=now if event in _PROBES else current.checked_at,
            last_error=last_error,
        )
    if updated == current:
        return health
    return Health(health.keys.set((provider, key), updated))


def is_routable(health: Health, provider: str, key: str) -> bool:
    return not health.invalid or (provider, key) not in health.invalid


def forget(health: Health, provider: str, key: str) -> Health:
    """``health`` without a removed key."""
    key_id = (provider, key)
    if key_id not in health.keys:
        return health
    return Health(health.keys.delete(key_id))


def replace(health: Health, provider: str, key: str, entry: KeyHealth | None) -> Health:
    """``health`` with ``(provider, key)``'s entry as given (recorded elsewhere: a key check the
    command line made); ``None`` forgets the key."""
    if entry is None or entry == _UNKNOWN:
        return forget(health, provider, key)
    if health.keys.get((provider, key)) == entry:
        return health
    return Health(health.keys.set((provider, key), entry))


def to_data(health: Health) -> list[dict[str, Any]]:
    return [
        {"provider": provider, "key": key, **attrs.asdict(entry), "state": entry.state.value}
        for (provider, key), entry in health.keys.items()
    ]


def from_data(data: Any) -> Health:
    """Raises ``ValueError`` when ``data`` is not :func:`to_data`'s output."""
    try:
        keys: immutables.Map[KeyId, KeyHealth] = immutables.Map(
            {
                (_text(entry["provider"]), _text(entry["key"])): KeyHealth(
                    state=State(entry["state"]),
                    since=_time(entry["since"]),
                    checked_at=_time(entry["checked_at"]),
                    last_error=None if entry["last_error"] is None else _text(entry["last_error"]),
                )
                for entry in data
            }
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a health table: {exc!r}") from None
    return Health(keys)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {value!r}")
    return value


def _time(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a time, got {value!r}")
    return float(value)
