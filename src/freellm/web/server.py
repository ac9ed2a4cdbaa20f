"""Serving the app over HTTP with hypercorn, under trio: one place for the server settings."""

from __future__ import annotations

import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any

import hypercorn.trio
import hypercorn.trio.run
import trio
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer

from freellm.shell.runtime import Runtime
from freellm.web.app import create_app

__all__ = ["raise_open_files_limit", "serve_runtime", "server_config"]

logger = logging.getLogger(__name__)

LISTEN_BACKLOG = 4096
"""Connections the kernel holds for us before we accept them (hypercorn's default is 100).

A burst of clients connecting at once overflows a short queue, and the ones that overflow wait
in SYN retransmits (1 s, then 2 s more...) before they are even accepted: 1,000 streams of 9.5 s
opened at once through freellm ended 14-18 s after the first with 100, 11.4-11.6 s with 4096.
Linux caps the value at ``net.core.somaxconn``
(4096 here and on most current kernels)."""


class _TCPServer(TCPServer):
    """hypercorn's connection, which also ends when its client closes it while idle.

    hypercorn 0.18's trio server, on reading the client's end of a kept-alive connection between
    requests, tells its protocol and leaves its read loop, but not its idle timer: the
    connection's task and socket then live on until ``keep_alive_timeout`` (75 s). Every pooled
    client closes its connections so when it is done, and a server that keeps each for 75 s
    runs out of file descriptors long before it runs out of anything else. Once reading is over,
    the timer goes too; a request still being answered keeps the connection until it is.
    """

    async def _read_data(self) -> None:
        await super()._read_data()
        await self.idle_task.stop()


# hypercorn.trio.serve makes each connection's server from this name (the one change of ours).
hypercorn.trio.run.TCPServer = _TCPServer  # type: ignore[attr-defined]


def server_config(host: str, port: int) -> Config:
    """hypercorn's settings for freellm (the ceiling bench serves with the same ones)."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    # A logger of our own: hypercorn would otherwise reconfigure its global "hypercorn.error".
    config.errorlog = logging.getLogger("freellm.server")
    config.keep_alive_timeout = 75
    config.backlog = LISTEN_BACKLOG
    return config


NR_OPEN_DEFAULT = 1 << 20  # Linux's fs.nr_open unless changed


def raise_open_files_limit() -> int:
    """Raise this process's soft open-files limit to its hard limit; return the new soft limit.

    Every client connection and every upstream connection is a file descriptor, so a server
    with a thousand open streams holds more than two thousand; the soft limit (often 1,024) is
    a default for programs that do not need more, the hard limit is what the machine allows.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Linux refuses an unlimited soft limit for open files: take its default ceiling instead.
    target = NR_OPEN_DEFAULT if hard == resource.RLIM_INFINITY else hard
    if soft == target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        logger.warning("could not raise the open-files limit to %s: %s", target, exc)
        return soft
    return target


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
    raise_open_files_limit()
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
