"""Serving a fake provider on loopback with hypercorn, under trio."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from freellm.sim.fakes.app import FakeProvider
from freellm.sim.fakes.caps import FakeCaps
from freellm.sim.fakes.replies import ChatRequest

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

# In-flight requests get this long to finish once the context exits; then they are cancelled.
GRACEFUL_TIMEOUT = 0.1


@asynccontextmanager
async def open_fake_provider(
    flavor: str,
    *,
    keys: Collection[str] | None = None,
    models: Mapping[str, FakeCaps] | None = None,
    account_caps: FakeCaps | None = None,
    clock: Callable[[], float] = trio.current_time,
    epoch: Callable[[], float] = time.time,
    seed: int = 0,
    record: bool = True,
    reply_tokens: Callable[[ChatRequest], int | None] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[FakeProvider]:
    """Serve a :class:`FakeProvider` on `host`:`port` (0: any free port) until the block exits.

    The fake's `base_url` is set from the address hypercorn actually bound. On exit the server
    stops accepting, gives in-flight requests ``GRACEFUL_TIMEOUT`` seconds, then cancels them.
    Raises ``ValueError`` for an unknown flavor and ``OSError`` when the address cannot be bound.
    An exception from the block propagates as itself, not wrapped in an exception group.
    """
    fake = FakeProvider(
        flavor,
        keys=keys,
        models=models,
        account_caps=account_caps,
        clock=clock,
        epoch=epoch,
        seed=seed,
        record=record,
        reply_tokens=reply_tokens,
    )
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = GRACEFUL_TIMEOUT
    # A logger of our own: hypercorn would otherwise reconfigure its global "hypercorn.error".
    config.errorlog = logging.getLogger("freellm.sim.fakes")
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            app = cast("ASGIFramework", fake)
            binds: list[str] = await nursery.start(
                partial(serve, app, config, shutdown_trigger=stop.wait)
            )
            fake.bind(binds[0])
            try:
                yield fake
            finally:
                stop.set()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
