"""Usage windows: how much of a cap has been used, with bounded memory and no under-counting.

A :class:`Rolling` window counts the requests and tokens of the last ``span`` seconds in buckets
``grain`` seconds wide. A bucket is counted while any instant of it could still lie inside the
window, so the count at ``now`` is never below the true count of ``(now - span, now]``: at worst it
also holds up to one grain of older traffic. The error is always on the safe side, and a window
never holds more than ``span / grain + 2`` buckets, whatever the traffic.

A :class:`Calendar` window counts from the local midnight of a named time zone to the next one
(Gemini's daily quota resets at midnight America/Los_Angeles). Its period boundaries are computed
only when a period rolls over, so the hot path never touches the time zone database.

Both are immutable: every change returns a new window.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from typing import Final

import attrs

__all__ = ["Calendar", "Rolling", "Window", "local_day_bounds"]

Bucket = tuple[float, int, int]  # (bucket start, requests, tokens)


@attrs.frozen
class Rolling:
    """Requests and tokens in a rolling window of ``span`` seconds.

    ``requests`` and ``tokens`` are the totals over ``buckets``, kept so that a read whose
    window has not moved past the oldest bucket costs nothing.
    """

    span: float
    grain: float
    buckets: tuple[Bucket, ...] = ()
    requests: int = 0
    tokens: int = 0

    @classmethod
    def minute(cls) -> Rolling:
        return cls(span=60.0, grain=1.0)

    @classmethod
    def day(cls) -> Rolling:
        return cls(span=86_400.0, grain=900.0)

    def totals(self, now: float) -> tuple[int, int]:
        """(requests, tokens) that may lie in ``(now - span, now]``; never an under-count."""
        buckets = self.buckets
        cutoff = now - self.span - self.grain
        if not buckets or buckets[0][0] > cutoff:
            return self.requests, self.tokens
        requests, tokens = self.requests, self.tokens
        for start, bucket_requests, bucket_tokens in buckets:
            if start > cutoff:
                break
            requests -= bucket_requests
            tokens -= bucket_tokens
        return requests, tokens

    def frees_at(self, now: float, *, requests: int, tokens: int) -> float | None:
        """The earliest time at which at most ``requests`` and ``tokens`` remain counted.

        ``None`` when that needs no time (already true). Buckets leave in age order, so this is
        the moment the last bucket that has to go is out of the window.
        """
        used_requests, used_tokens = self.totals(now)
        if used_requests <= requests and used_tokens <= tokens:
            return None
        cutoff = now - self.span - self.grain
        for start, bucket_requests, bucket_tokens in self.buckets:
            if start <= cutoff:
                continue  # already out
            used_requests -= bucket_requests
            used_tokens -= bucket_tokens
            if used_requests <= requests and used_tokens <= tokens:
                return start + self.grain + self.span
        # Unreachable: with every bucket gone both totals are 0, and the targets are >= 0.
        raise AssertionError("window totals disagree with its buckets")

    def add(self, now: float, requests: int, tokens: int) -> Rolling:
        """A window with ``requests`` and ``tokens`` counted at ``now``.

        A ``now`` earlier than the newest bucket (a wall clock stepped back) counts in the newest
        bucket: later than the truth, so it leaves the window later, the safe direction.
        """
        buckets = self.buckets
        total_requests = self.requests + requests
        total_tokens = self.tokens + tokens
        if buckets and buckets[0][0] <= now - self.span - self.grain:
            buckets = self._unexpired(now)
            total_requests, total_tokens = _sums(buckets)
            total_requests += requests
            total_tokens += tokens
        start = math.floor(now / self.grain) * self.grain
        if buckets and buckets[-1][0] >= start:
            last_start, last_requests, last_tokens = buckets[-1]
            buckets = (*buckets[:-1], (last_start, last_requests + requests, last_tokens + tokens))
        else:
            buckets = (*buckets, (start, requests, tokens))
        return Rolling(self.span, self.grain, buckets, total_requests, total_tokens)

    def adjust(self, at: float, requests: int, tokens: int) -> Rolling:
        """Correct what was counted at ``at`` by ``requests``/``tokens`` (either sign).

        Usage that has left the window is not corrected: it no longer counts. A correction never
        takes a bucket below zero. If ``at``'s bucket is missing but younger than the oldest (a
        wall clock that stepped back counted it in a later bucket), an increase goes to the newest
        bucket, the safe side, and a decrease is dropped.
        """
        buckets = self.buckets
        if not buckets:
            return self
        start = math.floor(at / self.grain) * self.grain
        # Newest first: a settlement usually corrects the bucket its reservation just went into.
        index = len(buckets) - 1
        while index >= 0 and buckets[index][0] > start:
            index -= 1
        if index < 0 or buckets[index][0] != start:
            if index < 0 or requests < 0 or tokens < 0:
                return self
            index = len(buckets) - 1
        bucket_start, bucket_requests, bucket_tokens = buckets[index]
        new_requests = max(0, bucket_requests + requests)
        new_tokens = max(0, bucket_tokens + tokens)
        return Rolling(
            self.span,
            self.grain,
            (*buckets[:index], (bucket_start, new_requests, new_tokens), *buckets[index + 1 :]),
            self.requests - bucket_requests + new_requests,
            self.tokens - bucket_tokens + new_tokens,
        )

    def _unexpired(self, now: float) -> tuple[Bucket, ...]:
        buckets = self.buckets
        cutoff = now - self.span - self.grain
        if not buckets or buckets[0][0] > cutoff:
            return buckets
        for index, bucket in enumerate(buckets):
            if bucket[0] > cutoff:
                return buckets[index:]
        return ()


@attrs.frozen
class Calendar:
    """Requests and tokens since the last local midnight in ``zone``, until the next one.

    The period is ``[starts, ends)``; at or after ``ends`` the counts read as zero.
    """

    zone: str
    starts: float = 0.0
    ends: float = 0.0
    requests: int = 0
    tokens: int = 0

    def totals(self, now: float) -> tuple[int, int]:
        if now >= self.ends or now < self.starts:
            return 0, 0
        return self.requests, self.tokens

    def frees_at(self, now: float, *, requests: int, tokens: int) -> float | None:
        used_requests, used_tokens = self.totals(now)
        if used_requests <= requests and used_tokens <= tokens:
            return None
        return self.ends

    def add(self, now: float, requests: int, tokens: int) -> Calendar:
        if self.starts <= now < self.ends:
            return attrs.evolve(
                self, requests=self.requests + requests, tokens=self.tokens + tokens
            )
        if now < self.starts:
            # The wall clock stepped back into an earlier day: keep counting what we had, safely.
            return attrs.evolve(
                self, requests=self.requests + requests, tokens=self.tokens + tokens
            )
        starts, ends = local_day_bounds(now, self.zone)
        return Calendar(self.zone, starts, ends, requests, tokens)

    def adjust(self, at: float, requests: int, tokens: int) -> Calendar:
        if not self.starts <= at < self.ends:
            return self  # counted in a period that is over
        return attrs.evolve(
            self,
            requests=max(0, self.requests + requests),
            tokens=max(0, self.tokens + tokens),
        )


Window = Rolling | Calendar

_ONE_DAY: Final = dt.timedelta(days=1)
_MIDNIGHT: Final = dt.time(0)


def local_day_bounds(now: float, zone: str) -> tuple[float, float]:
    """``(start, end)`` epoch seconds of the local calendar day of ``zone`` holding ``now``.

    Where a DST change skips local midnight, the day starts at the first instant that exists
    (the transition itself); where it repeats it, at the first occurrence.
    """
    tz = zoneinfo.ZoneInfo(zone)
    today = dt.datetime.fromtimestamp(now, tz).date()
    start = dt.datetime.combine(today, _MIDNIGHT, tzinfo=tz).timestamp()
    end = dt.datetime.combine(today + _ONE_DAY, _MIDNIGHT, tzinfo=tz).timestamp()
    return start, end


def _sums(buckets: tuple[Bucket, ...]) -> tuple[int, int]:
    requests = tokens = 0
    for _, bucket_requests, bucket_tokens in buckets:
        requests += bucket_requests
        tokens += bucket_tokens
    return requests, tokens
