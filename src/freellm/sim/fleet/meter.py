"""Usage counters at O(1) amortized per call, with the fakes' caps semantics exactly.

The fakes (:mod:`freellm.sim.fakes.caps`) keep one log per counter and filter it on every
request: obviously right, and O(n) per call. A replay makes tens of thousands of calls, so here
each counter keeps, per window, a deque of ``(time, tokens)`` entries with running sums, and pops
the entries that left the window before reading it. The rules are the fakes', word for word:

- a *counter* is one key on one model, or one key across several models; an admitted request is
  added to every counter it touches, a refused one to none;
- windows are rolling, ``MINUTE`` = 60 s and ``DAY`` = 86,400 s: an entry made at ``t`` counts
  while ``now < t + W`` (the same float expression as the fakes', so the same boundaries);
- a request is admitted only if, for every cap of every counter it touches, the window's use plus
  this request (1 request, its tokens) stays within the cap. When it is not, the
  :class:`~freellm.sim.fakes.caps.Violation` reported is the one that frees last, the first such
  in the fakes' order (counters in order, then requests/minute, requests/day, tokens/minute,
  tokens/day), with the fakes' ``retry_after``.

Entries are added in time order (the fleet refuses calls that go back in time), which is what
makes popping from the left correct. Finding ``retry_after`` walks the oldest entries, but only
on a refusal and only as far as the excess over the cap, which is at most one request's worth.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Final

from freellm.sim.fakes.caps import (
    DAY,
    MINUTE,
    Dimension,
    FakeCaps,
    Standing,
    Usage,
    Violation,
    WindowName,
)

__all__ = [
    "CAP_NAMES",
    "ORDER",
    "Counter",
    "Rule",
    "Rules",
    "Window",
    "rules_of",
    "standing",
    "worst",
]

Rule = tuple[WindowName, Dimension, int]
"""One cap: the window it counts in, what it counts, and its limit."""
Rules = tuple[Rule, ...]

ORDER: Final[tuple[tuple[Dimension, WindowName], ...]] = (
    ("requests", "minute"),
    ("requests", "day"),
    ("tokens", "minute"),
    ("tokens", "day"),
)
"""The four caps in the fakes' order (``freellm.sim.fakes.caps._DIMENSIONS``)."""
CAP_NAMES: Final[dict[tuple[Dimension, WindowName], str]] = {
    ("requests", "minute"): "rpm",
    ("requests", "day"): "rpd",
    ("tokens", "minute"): "tpm",
    ("tokens", "day"): "tpd",
}


def rules_of(caps: FakeCaps) -> Rules:
    """The caps that `caps` sets, in the fakes' order (empty when it sets none)."""
    rules: list[Rule] = []
    for dimension, window in ORDER:
        cap = caps.cap(dimension, window)
        if cap is not None:
            rules.append((window, dimension, cap))
    return tuple(rules)


class Window:
    """One rolling window of one counter: its entries, oldest first, and their sums."""

    __slots__ = ("entries", "requests", "span", "tokens")

    def __init__(self, span: float) -> None:
        self.span = span
        self.entries: deque[tuple[float, int]] = deque()
        self.requests = 0
        self.tokens = 0

    def expire(self, now: float) -> None:
        """Drop the entries that no longer count at `now`."""
        entries, span = self.entries, self.span
        while entries and entries[0][0] + span <= now:
            _, tokens = entries.popleft()
            self.requests -= 1
            self.tokens -= tokens

    def retry_after(self, now: float, dimension: Dimension, cap: int, need: int) -> float:
        """Seconds from `now` until `need` more of `dimension` fit under `cap` (``inf`` when the
        request alone is over it); the window is expired at `now` and over the cap."""
        if need > cap:
            return math.inf
        if dimension == "requests":
            # The oldest leave first, one request each: the excess-th oldest is the one to wait
            # for. Read it directly: refused calls count too, so a window far over its cap can
            # hold many entries (a walk would make a run of 429s quadratic).
            excess = self.requests + need - cap
            return self.entries[excess - 1][0] + self.span - now
        excess = self.tokens + need - cap
        freed = 0
        for stamp, tokens in self.entries:  # the oldest leave first
            freed += tokens
            if freed >= excess:
                return stamp + self.span - now
        raise AssertionError("a window over its cap frees nothing")  # need <= cap forbids it


class Counter:
    """One counter (a key on a model, or a key across models): its minute and day windows."""

    __slots__ = ("day", "minute")

    def __init__(self) -> None:
        self.minute = Window(MINUTE)
        self.day = Window(DAY)

    def window(self, name: WindowName) -> Window:
        return self.minute if name == "minute" else self.day

    def expire(self, now: float) -> None:
        self.minute.expire(now)
        self.day.expire(now)

    def add(self, now: float, tokens: int) -> None:
        """Count one request of `tokens` made at `now` (the latest time seen so far)."""
        for window in (self.minute, self.day):
            window.expire(now)
            window.entries.append((now, tokens))
            window.requests += 1
            window.tokens += tokens

    def usage(self, now: float) -> Usage:
        self.expire(now)
        minute, day = self.minute, self.day
        return Usage(minute.requests, day.requests, minute.tokens, day.tokens)


def worst(pairs: Sequence[tuple[Rules, Counter]], now: float, tokens: int) -> Violation | None:
    """The cap that frees last among those a request of `tokens` at `now` would break, or None
    when every cap of every counter holds it (:func:`freellm.sim.fakes.caps.worst_violation`)."""
    found: Violation | None = None
    for rules, counter in pairs:
        counter.expire(now)
        for name, dimension, cap in rules:
            window = counter.minute if name == "minute" else counter.day
            if dimension == "requests":
                used, need = window.requests, 1
            else:
                used, need = window.tokens, tokens
            if used + need <= cap:
                continue
            retry = window.retry_after(now, dimension, cap, need)
            if found is None or retry > found.retry_after:
                found = Violation(dimension, name, cap, used, need, retry)
    return found


def standing(
    counter: Counter, now: float, dimension: Dimension, name: WindowName, cap: int
) -> Standing:
    """`cap` as rate-limit headers report it (:meth:`freellm.sim.fakes.caps.UsageLog.standing`);
    the counter is expired at `now`."""
    window = counter.minute if name == "minute" else counter.day
    used = window.requests if dimension == "requests" else window.tokens
    entries = window.entries
    reset_in = entries[0][0] + window.span - now if entries else 0.0
    return Standing(limit=cap, remaining=max(0, cap - used), reset_in=reset_in)
