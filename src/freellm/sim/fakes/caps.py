"""The fakes' caps and their own count of usage: a plain log of (time, tokens) per counter.

Theory of operation
-------------------
The fakes are the independent truth the proxy's ledger is tested against, so they count in the
simplest way that is obviously right, and share no code with ``freellm.core``:

- A *counter* is one key on one model (``FakeCaps`` given per model), or one key across all
  models (``account_caps``). Each counter keeps a log of ``(time, tokens)`` entries, one per
  admitted request, in arrival order.
- A window of ``W`` seconds (``MINUTE`` = 60, ``DAY`` = 86,400) is rolling: an entry made at
  time ``t`` counts while ``now < t + W`` and stops counting at ``t + W`` exactly.
- A request is admitted only if, for every cap of every counter it touches, the window's use
  plus this request (1 request, its tokens) stays within the cap. An admitted request is
  appended to every counter it touches; a refused one (429) is appended nowhere.
- Time is whatever the injected clock says (by default ``trio.current_time``).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

import attrs

MINUTE = 60.0
DAY = 86_400.0

Dimension = Literal["requests", "tokens"]
WindowName = Literal["minute", "day"]

_WINDOW_SECONDS: dict[WindowName, float] = {"minute": MINUTE, "day": DAY}


def _non_negative(
    _instance: object, attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0 or None, not {value}")


@attrs.frozen
class FakeCaps:
    """Caps of one model (per key) or of one key across all models; None means no cap.

    Raises ``ValueError`` for a negative cap.
    """

    rpm: int | None = attrs.field(default=None, validator=_non_negative)
    rpd: int | None = attrs.field(default=None, validator=_non_negative)
    tpm: int | None = attrs.field(default=None, validator=_non_negative)
    tpd: int | None = attrs.field(default=None, validator=_non_negative)

    def cap(self, dimension: Dimension, window: WindowName) -> int | None:
        if dimension == "requests":
            return self.rpm if window == "minute" else self.rpd
        return self.tpm if window == "minute" else self.tpd


@attrs.frozen
class Usage:
    """What one counter has used in each window at some moment."""

    requests_minute: int
    requests_day: int
    tokens_minute: int
    tokens_day: int


@attrs.frozen
class Violation:
    """One cap a request would break: `used` of `limit` in the window, `requested` more asked.

    `retry_after` is the time from now until the window has room for the request (``inf`` when
    the request alone is over the cap).
    """

    dimension: Dimension
    window: WindowName
    limit: int
    used: int
    requested: int
    retry_after: float


@attrs.frozen
class Standing:
    """One cap as rate-limit headers report it: `remaining` until `reset_in` seconds from now.

    `reset_in` is the time until the oldest counted entry leaves the window: until then nothing
    frees, so at most `remaining` more fit (0 when the window is empty).
    """

    limit: int
    remaining: int
    reset_in: float


class UsageLog:
    """One counter's log of admitted requests, oldest first; entries a day old are dropped."""

    def __init__(self) -> None:
        self._entries: deque[tuple[float, int]] = deque()

    def add(self, now: float, tokens: int) -> None:
        entries = self._entries
        while entries and entries[0][0] + DAY <= now:
            entries.popleft()
        entries.append((now, tokens))

    def _in_window(self, now: float, window: WindowName) -> list[tuple[float, int]]:
        """Entries still counting in the window, oldest first."""
        entries = self._entries
        while entries and entries[0][0] + DAY <= now:
            entries.popleft()
        seconds = _WINDOW_SECONDS[window]
        inside: list[tuple[float, int]] = []
        for entry in reversed(entries):
            if entry[0] + seconds <= now:
                break
            inside.append(entry)
        inside.reverse()
        return inside

    def used(self, now: float, dimension: Dimension, window: WindowName) -> int:
        inside = self._in_window(now, window)
        if dimension == "requests":
            return len(inside)
        return sum(tokens for _, tokens in inside)

    def usage(self, now: float) -> Usage:
        return Usage(
            requests_minute=self.used(now, "requests", "minute"),
            requests_day=self.used(now, "requests", "day"),
            tokens_minute=self.used(now, "tokens", "minute"),
            tokens_day=self.used(now, "tokens", "day"),
        )

    def violation(
        self, now: float, dimension: Dimension, window: WindowName, cap: int, need: int
    ) -> Violation | None:
        """The violation if `need` more of `dimension` would break `cap`, else None."""
        inside = self._in_window(now, window)
        amounts = [1 if dimension == "requests" else tokens for _, tokens in inside]
        used = sum(amounts)
        if used + need <= cap:
            return None
        retry_after = math.inf
        if need <= cap:
            # Walk the oldest entries out of the window until the request fits.
            freed = 0
            for (stamp, _), amount in zip(inside, amounts, strict=True):
                freed += amount
                if used - freed + need <= cap:
                    retry_after = stamp + _WINDOW_SECONDS[window] - now
                    break
        return Violation(dimension, window, cap, used, need, retry_after)

    def standing(self, now: float, dimension: Dimension, window: WindowName, cap: int) -> Standing:
        inside = self._in_window(now, window)
        used = len(inside) if dimension == "requests" else sum(t for _, t in inside)
        reset_in = inside[0][0] + _WINDOW_SECONDS[window] - now if inside else 0.0
        return Standing(limit=cap, remaining=max(0, cap - used), reset_in=reset_in)


_DIMENSIONS: tuple[tuple[Dimension, WindowName], ...] = (
    ("requests", "minute"),
    ("requests", "day"),
    ("tokens", "minute"),
    ("tokens", "day"),
)


def worst_violation(
    counters: list[tuple[FakeCaps, UsageLog]], now: float, tokens: int
) -> Violation | None:
    """The violation that frees last among every cap of every counter, or None if all fit."""
    worst: Violation | None = None
    for caps, log in counters:
        for dimension, window in _DIMENSIONS:
            cap = caps.cap(dimension, window)
            if cap is None:
                continue
            need = 1 if dimension == "requests" else tokens
            found = log.violation(now, dimension, window, cap, need)
            if found is not None and (worst is None or found.retry_after > worst.retry_after):
                worst = found
    return worst
