"""The Analytics page's report: the store's cells for a window, summarized by the core.

The store groups the request log into cells (:meth:`~freellm.shell.store.Store.analytics_cells`,
from its rollups and its log); :mod:`freellm.core.analytics` aligns the window, combines the
cells and shapes the JSON. Requests still waiting for the log writer (up to half a second of
them) are not counted yet.
"""

from __future__ import annotations

from typing import Any

from freellm.core import analytics
from freellm.shell.store import Store

__all__ = ["analytics_report"]


async def analytics_report(store: Store, window: str, *, now: float) -> dict[str, Any]:
    """The report of ``window`` (``1h``, ``24h``, ``7d`` or ``30d``) ending with the step that
    holds ``now`` (epoch seconds), as :func:`freellm.core.analytics.to_json` shapes it.

    Raises ``ValueError`` naming the allowed windows when ``window`` is none of them.
    """
    spec = analytics.WINDOWS.get(window)
    if spec is None:
        allowed = ", ".join(analytics.WINDOWS)
        raise ValueError(f"Unknown analytics window {window!r}: use one of {allowed}.")
    since, until = analytics.bounds(spec, now=now)
    cells = await store.analytics_cells(since, until, spec.step_s)
    return analytics.to_json(analytics.summarize(cells, spec, since=since))
