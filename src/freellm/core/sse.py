"""Server-sent events, incrementally: bytes in, whole events out.

The decoder follows the HTML living standard's event-stream rules as far as LLM APIs use them:
lines end in LF, CRLF or CR; a blank line ends an event; ``data:`` lines join with LF; a line
starting with ``:`` is a comment (OpenRouter sends ``: OPENROUTER PROCESSING``); one space after
the colon is dropped. Bytes that are not UTF-8 are replaced. The one input it refuses is an event
that outgrows ``max_event_bytes``: it raises :class:`EventTooLarge`.

Like h11, it does no I/O: :meth:`Decoder.feed` buffers and returns the events completed so far.
A mutable buffer is the one exception to the core's frozen state, and it is local to one stream.

Theory of operation: the work is linear in the bytes fed, however they are split. Between feeds
the buffer holds only the incomplete last line, and ``_scanned`` says how much of it is known to
hold no line ending, so a long line arriving in small pieces is searched once, not once a piece.
A feed appends to the buffer, walks its complete lines with an index (slicing the buffer line by
line would copy the rest of it each time), and drops the consumed prefix once at the end.
"""

from __future__ import annotations

from typing import Final

import attrs

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "Decoder", "Event", "EventTooLarge", "encode"]

DEFAULT_MAX_EVENT_BYTES: Final = 16 * 1024 * 1024
"""The largest event a :class:`Decoder` holds by default: 16 MiB.

Far above any real LLM chunk (a streamed delta is a few hundred bytes, a whole answer sent as one
event rarely a megabyte), yet small enough that a provider that never ends a line, or never ends
an event, cannot take the server's memory: the buffer is the one thing it controls.
"""

_LF: Final = 0x0A


@attrs.frozen
class Event:
    data: str
    event: str | None = None
    id: str | None = None

    @property
    def done(self) -> bool:
        """OpenAI's end-of-stream marker."""
        return self.data == "[DONE]"


class EventTooLarge(ValueError):
    """An event grew past the decoder's ``max_event_bytes``; the stream is broken.

    ``size`` is how many bytes it had reached when the decoder gave up (at least ``limit + 1``),
    ``limit`` the bound it broke.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"an SSE event reached {size} bytes, more than the {limit} allowed")
        self.size = size
        self.limit = limit


class Decoder:
    """Feed it bytes as they arrive; it returns every event they complete.

    An event's size is the bytes of its ``data:`` lines as they arrived (field name included,
    line endings left out) plus the line being read, whatever its field: when that exceeds
    ``max_event_bytes``, :meth:`feed` raises :class:`EventTooLarge`. Whether it raises does not
    depend on how the bytes were split. After it raised, the decoder is unusable: it has dropped
    its buffer, and every later :meth:`feed` or :meth:`close` raises :class:`EventTooLarge` again.
    """

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.comments = 0
        self._max_event_bytes = max_event_bytes
        self._buffer = bytearray()
        self._scanned = 0  # how many of the buffer's first bytes hold no line ending
        self._data: list[str] = []
        self._data_bytes = 0
        self._event: str | None = None
        self._id: str | None = None
        self._too_large: int | None = None  # the size that broke the bound, once one did

    @property
    def between_events(self) -> bool:
        """Whether nothing is held: the next byte fed starts a new event."""
        return not self._buffer and not self._data and self._event is None

    def feed(self, chunk: bytes) -> list[Event]:
        """The events ``chunk`` completes, in order.

        :raises EventTooLarge: the current event, or the line being read, outgrew
            ``max_event_bytes`` (now or in an earlier call).
        """
        self._check_usable()
        buffer = self._buffer
        buffer += chunk
        size = len(buffer)
        events: list[Event] = []
        start = self._scanned  # where the next search starts
        line_start = 0
        # The next LF at or after ``start``, or -1 for none in the rest of the buffer. It is
        # searched for again only once consumed: a run of CR lines before one far LF would
        # otherwise search to that LF once per line.
        lf = buffer.find(b"\n", start)
        while True:
            if 0 <= lf < start:
                lf = buffer.find(b"\n", start)
            # Bounded by the LF so that many short LF lines never search far for a CR.
            cr = buffer.find(b"\r", start, size if lf == -1 else lf)
            if cr == -1:
                if lf == -1:
                    pending = size
                    break
                end, start = lf, lf + 1
            elif cr + 1 == size:
                pending = cr  # a CR at the very end may be the first half of a CRLF
                break
            else:
                end, start = cr, (cr + 2 if buffer[cr + 1] == _LF else cr + 1)
            self._check_size(end - line_start)
            self._line(buffer[line_start:end].decode("utf-8", "replace"), end - line_start, events)
            line_start = start
        self._check_size(pending - line_start)
        del buffer[:line_start]
        self._scanned = pending - line_start
        return events

    def close(self) -> list[Event]:
        """The event a stream that ends without a final blank line leaves behind, if any.

        :raises EventTooLarge: an earlier :meth:`feed` raised it.
        """
        self._check_usable()
        events = self.feed(b"\n\n") if self._buffer else []
        if self._data:
            events.append(Event("\n".join(self._data), self._event, self._id))
            self._data, self._data_bytes, self._event = [], 0, None
        return events

    def _check_usable(self) -> None:
        if self._too_large is not None:
            raise EventTooLarge(self._too_large, self._max_event_bytes)

    def _check_size(self, line_bytes: int) -> None:
        size = self._data_bytes + line_bytes
        if size > self._max_event_bytes:
            self._too_large = size
            # Let go of the memory now (clear, not rebind: feed's frame, kept alive by the
            # traceback, holds the same bytearray), since the caller may keep the decoder.
            self._buffer.clear()
            self._data = []
            raise EventTooLarge(size, self._max_event_bytes)

    def _line(self, line: str, line_bytes: int, events: list[Event]) -> None:
        if not line:
            if self._data or self._event is not None:
                events.append(Event("\n".join(self._data), self._event, self._id))
            self._data, self._data_bytes, self._event = [], 0, None
            return
        if line.startswith(":"):
            self.comments += 1
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_bytes += line_bytes
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value


def encode(data: str, *, event: str | None = None) -> bytes:
    """One event on the wire; multi-line data becomes several ``data:`` lines."""
    head = f"event: {event}\n" if event is not None else ""
    body = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"{head}{body}\n".encode()
