"""Background work that never takes the server down: each job a step, run again and again.

A job is a coroutine function that does one round of its work (flush the log, look for changed
settings, probe the keys that are due) and returns. :meth:`Background.run` calls it forever,
``every`` seconds apart. When a round raises, the exception is logged once with its traceback,
the job's :class:`JobStatus` says so (``/readyz`` shows it), and the next round comes after an
exponential backoff (1 s doubling up to 5 min, never sooner than ``every``); the first round that
succeeds clears it. Only cancellation (a real shutdown) stops a job.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import attrs
import trio

__all__ = ["Background", "JobStatus"]

logger = logging.getLogger("freellm.background")

BACKOFF_BASE_S: Final = 1.0
BACKOFF_MAX_S: Final = 300.0


@attrs.define
class JobStatus:
    """How one background job is doing: failing since when, how often, and why."""

    name: str
    failures: int = 0  # rounds failed in a row
    last_error: str | None = None
    failing_since: float | None = None  # epoch seconds of the first failure in a row
    rounds: int = 0  # rounds that succeeded

    @property
    def ok(self) -> bool:
        return self.failures == 0

    def to_data(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failures": self.failures,
            "last_error": self.last_error,
            "failing_since": self.failing_since,
        }


class Background:
    """The background jobs of one server, and how each is doing. ``clock``: epoch seconds."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.jobs: dict[str, JobStatus] = {}

    @property
    def healthy(self) -> bool:
        return all(job.ok for job in self.jobs.values())

    def report(self) -> dict[str, dict[str, Any]]:
        return {name: job.to_data() for name, job in self.jobs.items()}

    async def run(
        self,
        name: str,
        round_: Callable[[], Awaitable[None]],
        *,
        every: float | Callable[[], float],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run ``round_`` until cancelled, ``every`` seconds apart (a callable: asked each time,
        for jitter). The first round runs at once."""
        job = self.jobs[name] = JobStatus(name)
        task_status.started()
        while True:
            pause = every() if callable(every) else every
            try:
                await round_()
            except Exception as exc:
                job.failures += 1
                job.last_error = f"{type(exc).__name__}: {exc}"[:500]
                if job.failing_since is None:
                    job.failing_since = self.clock()
                backoff = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** min(job.failures - 1, 16))
                pause = max(pause, backoff)
                logger.error(
                    "background job %r failed (%d in a row); next try in %.0f s",
                    name,
                    job.failures,
                    pause,
                    exc_info=exc,
                )
            else:
                job.rounds += 1
                if job.failures:
                    logger.warning("background job %r works again", name)
                job.failures, job.last_error, job.failing_since = 0, None, None
            await trio.sleep(pause)
