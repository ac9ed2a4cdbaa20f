"""Serving the app over HTTP with hypercorn, under trio: one place for the server settings."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import hypercorn.trio
import trio
from hypercorn.config import Config

from freellm.shell.runtime import Runtime
from freellm.web.app import create_app

__all__ = ["serve_runtime", "server_config"]


def server_config(host: str, port: int) -> Config:
    """hypercorn's settings for freellm (the ceiling bench serves with the same ones)."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    # A logger of our own: hypercorn would otherwise reconfigure its global "hypercorn.error".
    config.errorlog = logging.getLogger("freellm.server")
    config.keep_alive_timeout = 75
    return config


async def serve_runtime(
    runtime: Runtime,
    host: str,
    port: int,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``runtime`` on ``host:port`` until ``shutdown_trigger`` returns (or cancelled).

    ``task_status.started`` gets the base URL actually bound (port 0 picks a free one).
    """
    config = server_config(host, port)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            lambda task_status: hypercorn.trio.serve(
                create_app(runtime),
                config,
                shutdown_trigger=shutdown_trigger,
                task_status=task_status,
            )
        )
        task_status.started(binds[0])
