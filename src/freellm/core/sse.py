"""Server-sent events, incrementally: bytes in, whole events out.

The decoder follows the HTML living standard's event-stream rules as far as LLM APIs use them:
lines end in LF, CRLF or CR; a blank line ends an event; ``data:`` lines join with LF; a line
starting with ``:`` is a comment (OpenRouter sends ``: OPENROUTER PROCESSING``); one space after
the colon is dropped. It never raises on any input: bytes that are not UTF-8 are replaced.

Like h11, it does no I/O: :meth:`Decoder.feed` buffers and returns the events completed so far.
A mutable buffer is the one exception to the core's frozen state, and it is local to one stream.
"""

from __future__ import annotations

import attrs

__all__ = ["Decoder", "Event", "encode"]


@attrs.frozen
class Event:
    data: str
    event: str | None = None
    id: str | None = None

    @property
    def done(self) -> bool:
        """OpenAI's end-of-stream marker."""
        return self.data == "[DONE]"


class Decoder:
    """Feed it bytes as they arrive; it returns every event they complete."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self.comments = 0

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        events: list[Event] = []
        while True:
            line, found = self._take_line()
            if not found:
                return events
            if not line:
                if self._data or self._event is not None:
                    events.append(Event("\n".join(self._data), self._event, self._id))
                self._data, self._event = [], None
                continue
            self._field(line)

    def close(self) -> list[Event]:
        """The event a stream that ends without a final blank line leaves behind, if any."""
        events = self.feed(b"\n\n") if self._buffer else []
        if self._data:
            events.append(Event("\n".join(self._data), self._event, self._id))
            self._data, self._event = [], None
        return events

    def _take_line(self) -> tuple[str, bool]:
        buffer = self._buffer
        lf = buffer.find(b"\n")
        cr = buffer.find(b"\r", 0, len(buffer) if lf == -1 else lf)
        if cr == -1:
            if lf == -1:
                return "", False
            index, end = lf, lf + 1
        elif cr + 1 == len(buffer):
            return "", False  # a CR at the very end may be the first half of a CRLF
        else:
            index, end = cr, (cr + 2 if buffer[cr + 1] == 0x0A else cr + 1)
        self._buffer = buffer[end:]
        return buffer[:index].decode("utf-8", "replace"), True

    def _field(self, line: str) -> None:
        if line.startswith(":"):
            self.comments += 1
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value


def encode(data: str, *, event: str | None = None) -> bytes:
    """One event on the wire; multi-line data becomes several ``data:`` lines."""
    head = f"event: {event}\n" if event is not None else ""
    body = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"{head}{body}\n".encode()
