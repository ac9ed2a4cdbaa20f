"""Feeding an SSE byte stream, cut where a test says, through a dialect's stream fold."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from freellm.core.sse import Decoder, Event


class Fold(Protocol):
    def step(self, event: Event) -> list[bytes]: ...


def feed(fold: Fold, data: bytes, cuts: Iterable[int] = ()) -> bytes:
    """What ``fold`` sends the client for ``data`` arriving in pieces cut at ``cuts``."""
    decoder = Decoder()
    out = b""
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        for event in decoder.feed(data[start:cut]):
            out += b"".join(fold.step(event))
        start = cut
    for event in decoder.close():
        out += b"".join(fold.step(event))
    return out
