"""The OpenAI dialect: what changes on the way to an OpenAI-compatible provider and back.

Almost nothing: the body goes upstream as the client sent it, with the provider's model id, and
with ``stream_options.include_usage`` turned on where the provider accepts it (so a stream can be
settled with real usage). Responses are normalised where providers differ from OpenAI: an array
``content`` becomes a string, a ``null`` content without tool calls becomes ``""``, and a missing
``refusal`` (required, nullable) becomes ``null``. Streams pass
through event by event; :class:`StreamFold` watches them for usage and mid-stream errors and drops
the usage chunk when the client did not ask for it. A 2xx answer is no answer when it carries an
``error`` (OpenRouter's way of saying that generation failed after the 200 was sent), nor is a
stream whose first chunk is not JSON: both are broken, and the request fails over.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from freellm.core import wire
from freellm.core.sse import Event
from freellm.core.tokens import estimate_text

__all__ = [
    "StreamError",
    "StreamFold",
    "Usage",
    "normalize_response",
    "prepare_body",
    "usage_of",
]


@attrs.frozen
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def prepare_body(
    body: Mapping[str, Any], model: str, *, stream: bool, stream_options: bool
) -> dict[str, Any]:
    """The body to send upstream: the client's, with the provider's ``model`` id and without
    freellm's own ``session_id``.

    ``stream_options``: whether the provider accepts ``stream_options`` (Cohere's compatibility
    endpoint refuses it); when it does, a stream always asks for usage.
    """
    upstream = dict(body)
    upstream["model"] = model
    upstream.pop("session_id", None)  # freellm's own field (the sticky session), not the provider's
    if stream:
        if stream_options:
            options = dict(upstream.get("stream_options") or {})
            options["include_usage"] = True
            upstream["stream_options"] = options
        else:
            upstream.pop("stream_options", None)
    return upstream


def usage_of(data: Mapping[str, Any]) -> Usage | None:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(max(0, prompt), max(0, completion))


def normalize_response(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a provider's chat.completion to OpenAI's shape, in place, and return it."""
    choices = data.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                _normalize_content(message, "content")
                # OpenAI's schema requires `refusal` (nullable); many providers leave it out.
                message.setdefault("refusal", None)
                message.setdefault("annotations", [])
    data.setdefault("object", "chat.completion")
    return data


def _normalize_content(message: dict[str, Any], key: str) -> None:
    content = message.get(key)
    if isinstance(content, list):
        message[key] = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    elif content is None and key == "content" and not message.get("tool_calls"):
        message[key] = ""


_STREAMED_TEXT: Final = re.compile(r'"(?:content|arguments)":\s*"((?:[^"\\]|\\.)*)"')
_STREAMED_BYTES: Final = re.compile(_STREAMED_TEXT.pattern.encode())

# A stream's first event, read whole by :meth:`StreamFold.step`: one "data: " line.
_FIRST_EVENT: Final = re.compile(rb"data: ([^\n\r]*)\n\n")
# What :meth:`StreamFold.step` does more with than pass on: an error, the usage, content to
# bring to OpenAI's shape, the end; and a CR, which only the decoder reads right.
_MARKERS: Final = (b'"error"', b'"usage"', b'"content":[', b"[DONE]", b"\r")


class StreamError(Exception):
    """The provider reported an error inside a stream; ``message`` says what it said."""

    def __init__(self, message: str, body: str) -> None:
        super().__init__(message)
        self.message = message
        self.body = body


class StreamFold:
    """Watches one upstream stream: what to pass on, the usage, the end, an error.

    :meth:`step` takes one SSE event and returns the bytes to send the client (possibly none);
    it raises :class:`StreamError` for an error event (OpenRouter sends them mid-stream).
    """

    def __init__(self, *, client_wants_usage: bool) -> None:
        self._client_wants_usage = client_wants_usage
        self.usage: Usage | None = None
        self.done = False
        self.chunks = 0
        self._streamed: list[str] = []  # the text of the chunks, for a stream cut short

    @property
    def completion_tokens(self) -> int:
        """The estimate of what was streamed. Asked for only when a stream ends without usage,
        so the text is kept and estimated once, as a whole, then."""
        return estimate_text("".join(self._streamed))

    def passthrough(self, data: bytes, out: list[bytes]) -> int:
        """Take the events at the start of ``data`` that :meth:`step` would pass on unchanged,
        all at once: append their bytes to ``out`` and return how many bytes of ``data`` they
        were. The first chunk of the stream, which :meth:`step` reads whole, goes through it.

        They are the run of events of one ``data: `` line each (no CR, valid UTF-8) up to the
        first that holds a marker (an error, the usage, array content, ``[DONE]``): the client
        gets the same bytes as from :meth:`step`, for a few searches over the whole read
        instead of a decoded line, an event and a search per event.
        """
        start = 0
        if not self.chunks:
            first = _FIRST_EVENT.match(data)
            if first is None:
                return 0
            out += self.step(Event(first.group(1).decode("utf-8", "replace")))
            start = first.end()
            if self.done or not self.chunks:  # the end, or not yet a chunk (a usage-only one)
                return start
        stop = len(data)  # the first marker, if any (searched for as bytes: fast in C)
        for marker in _MARKERS:
            found = data.find(marker, start, stop)
            if found != -1:
                stop = found
        end = data.rfind(b"\n\n", start, stop) + 2  # the whole events before it
        if end <= start:
            return start
        plain = data[start:end]
        events = plain.count(b"\n\n")
        # One "data: " line each: every line feed is half of an event's end, every event
        # begins with the field.
        if (
            not plain.startswith(b"data: ")
            or plain.count(b"\n") != 2 * events
            or plain.count(b"\n\ndata: ") != events - 1
        ):
            return start
        try:
            plain.decode()
        except UnicodeDecodeError:
            return start  # step replaces what is not UTF-8; let it
        self._streamed += [text.decode() for text in _STREAMED_BYTES.findall(plain)]
        self.chunks += events
        out.append(plain)
        return end

    def step(self, event: Event) -> list[bytes]:
        """The bytes for the client of one event. Raises :class:`StreamError` for an error
        event, and ``ValueError`` for a first chunk that is not a JSON object."""
        if event.done:
            self.done = True
            return [b"data: [DONE]\n\n"]
        data = event.data
        if event.event == "error" or '"error"' in data:
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = None
            error = parsed.get("error") if isinstance(parsed, dict) else None
            if event.event == "error" or error is not None:
                message = error.get("message") if isinstance(error, dict) else None
                raise StreamError(str(message or data)[:500], data)
        if not self.chunks:
            # The first chunk is read whole: until it reaches the client, a provider that
            # answers something else than chunks can still be failed over, unseen. Past it, the
            # client has the stream and chunks pass through (below).
            first = json.loads(data)
            if not isinstance(first, dict):
                raise ValueError("a chunk that is not a JSON object")
            return self._chunk(first, data)
        if '"usage"' in data or '"content":[' in data:
            try:
                chunk = json.loads(data)
            except ValueError:
                chunk = None
            if isinstance(chunk, dict):
                return self._chunk(chunk, data)
        # The common chunk passes through unparsed; its (still escaped) text is kept from a regex
        # match, in case the stream breaks before the provider reports usage.
        self._streamed += _STREAMED_TEXT.findall(data)
        self.chunks += 1
        return [b"data: " + data.encode() + b"\n\n"]

    def _chunk(self, chunk: dict[str, Any], raw: str) -> list[bytes]:
        usage = usage_of(chunk)
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        changed = False
        if isinstance(choices, list):
            for choice in choices:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict):
                    content = delta.get("content")
                    if isinstance(content, list):
                        _normalize_content(delta, "content")
                        changed = True
                        content = delta["content"]
                    if isinstance(content, str):
                        self._streamed.append(content)
                    for call in delta.get("tool_calls") or ():
                        function = call.get("function") if isinstance(call, dict) else None
                        if isinstance(function, dict):
                            self._streamed.append(str(function.get("arguments") or ""))
        if usage is not None and not choices and not self._client_wants_usage:
            return []  # the usage-only chunk we asked for on the client's behalf
        if usage is not None and not self._client_wants_usage and "usage" in chunk:
            chunk.pop("usage")
            changed = True
        self.chunks += 1
        if changed:
            return [b"data: " + wire.dumps(chunk) + b"\n\n"]
        return [b"data: " + raw.encode() + b"\n\n"]
