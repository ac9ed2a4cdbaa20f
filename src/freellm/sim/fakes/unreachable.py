"""Addresses a client cannot get through to: the connect faults, which no running fake can act.

A fake's listener accepts every connection (hypercorn accepts as fast as it can), so the faults
of :mod:`.faults` all happen after the connection is made. The two ways connecting itself goes
wrong have a port of their own here, on loopback, with nothing listening behind it:

- :func:`open_silent_port`: connecting never completes, so the client's connect timeout
  fires. On loopback a connect to a listening socket completes in the kernel, whether or not
  anybody ever accepts it, as long as the socket's accept queue has room. So the port's
  socket listens with a backlog of 0 and is filled at once with connections that are never
  accepted; once the queue is full, the kernel drops every further SYN (Linux does, whatever
  ``tcp_syncookies`` says: the cookies cover a full SYN queue, not a full accept queue) and
  the client waits in ``SYN_SENT``, retrying, until it gives up.
- :func:`open_closed_port`: connecting is refused at once (``ECONNREFUSED``). The port's
  socket is bound, so no other program can take the port meanwhile, but does not listen, so
  the kernel answers a SYN with a reset.

Both yield the origin (``http://127.0.0.1:PORT``); a provider's ``base_url`` is that origin
and whatever path its dialect uses. Both close every socket they made when the block exits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import trio

__all__ = ["open_closed_port", "open_silent_port"]

FILL_WAIT_S: Final = 0.2
"""How long a connect into a queue with room may take (it completes in the kernel at once)."""
MAX_FILL: Final = 64
"""More connections than this completing into a backlog of 0 means the kernel never drops."""


@asynccontextmanager
async def open_silent_port(host: str = "127.0.0.1") -> AsyncIterator[str]:
    """An origin whose connects never complete (see the module docstring).

    Raises ``RuntimeError`` when the kernel keeps completing connects into the full queue (a
    kernel that does not drop SYNs there: not Linux), ``OSError`` when nothing can be bound.
    """
    listener = trio.socket.socket()
    fillers: list[trio.socket.SocketType] = []
    try:
        await listener.bind((host, 0))
        listener.listen(0)
        address = listener.getsockname()
        while True:
            if len(fillers) > MAX_FILL:
                raise RuntimeError(f"{MAX_FILL} connects completed into a backlog of 0")
            probe = trio.socket.socket()
            with trio.move_on_after(FILL_WAIT_S) as waiting:
                await probe.connect(address)
            if waiting.cancelled_caught:
                probe.close()  # the queue is full: this one's SYN was dropped
                break
            fillers.append(probe)
        yield f"http://{address[0]}:{address[1]}"
    finally:
        for sock in fillers:
            sock.close()
        listener.close()


@asynccontextmanager
async def open_closed_port(host: str = "127.0.0.1") -> AsyncIterator[str]:
    """An origin whose connects are refused at once (see the module docstring).

    Raises ``OSError`` when nothing can be bound.
    """
    sock = trio.socket.socket()
    try:
        await sock.bind((host, 0))
        address = sock.getsockname()
        yield f"http://{address[0]}:{address[1]}"
    finally:
        sock.close()
