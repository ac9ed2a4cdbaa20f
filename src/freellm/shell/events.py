"""What the dashboard shows live, fanned out to every open ``/api/events`` stream.

Publishing never waits: each subscriber has a small buffer, and one that falls that far behind
(a stalled browser tab) is dropped, its stream ends and the browser's ``EventSource`` reconnects.
A slow reader can thus never hold up a request being logged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import trio

__all__ = ["BUFFER", "Events"]

BUFFER: Final = 256
"""Events a subscriber may be behind before it is dropped."""

Event = tuple[str, dict[str, Any]]


class Events:
    def __init__(self, buffer: int = BUFFER) -> None:
        self.buffer = buffer
        self._subscribers: set[trio.MemorySendChannel[Event]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        for channel in list(self._subscribers):
            try:
                channel.send_nowait((kind, data))
            except trio.WouldBlock:
                self._subscribers.discard(channel)
                channel.close()  # the reader sees the end of its stream

    @contextmanager
    def subscribe(self) -> Iterator[trio.MemoryReceiveChannel[Event]]:
        """A channel of ``(kind, data)`` events, published from now until the block ends (or the
        subscriber falls :attr:`buffer` events behind: then the channel ends early)."""
        send, receive = trio.open_memory_channel[Event](self.buffer)
        self._subscribers.add(send)
        try:
            with receive:
                yield receive
        finally:
            self._subscribers.discard(send)
            send.close()
