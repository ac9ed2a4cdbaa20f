"""The Messages door's :class:`MessagesFace`: one request's answer from the chat path's bytes,
a whole ``Message`` (through :mod:`~freellm.core.doors.messages.answer`) or, folded event by
event, Anthropic's stream of events."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from freellm.core import wire
from freellm.core.doors import Translated, openai_error
from freellm.core.doors.messages.answer import (
    error_body,
    error_json,
    message_id,
    message_of,
    reasoning_of,
    stop_of,
    stop_sequences_of,
)
from freellm.core.doors.messages.common import is_int
from freellm.core.sse import Decoder, Event, encode
from freellm.core.tokens import estimate_text


@attrs.define
class _Call:
    """A tool call of a stream, by its OpenAI ``index``."""

    position: int  # among the stream's tool calls, in order of appearance
    id: str | None = None
    name: str | None = None
    closed: bool = False  # its block was sent and closed


@attrs.define
class _Block:
    """A content block of a stream: ``live`` (sent as it comes) or held (sent whole later)."""

    kind: str  # "text", "thinking" or "tool_use"
    call: _Call | None = None
    pieces: list[str] = attrs.field(factory=list)  # a held block's, or a live tool call's


class MessagesFace:
    """One Messages request's answer, from the chat path's bytes (see the package's docstring).

    Theory of operation: a stream is folded event by event. The first chunk sends
    ``message_start``. A piece of content goes to the ``live`` block when it is of the same kind
    (and the same tool call); else, when nothing is held and the live block is whole (not a tool
    call whose arguments are still an unfinished JSON value), the live block closes and the
    piece opens a new one; else it is held. Held blocks are sent whole at the ``finish_reason``
    (or ``[DONE]``), after the live one closes. ``[DONE]`` sends ``message_delta`` and
    ``message_stop``; an ``error`` event, or :meth:`close` before ``[DONE]``, sends Anthropic's
    ``error`` event. After either, nothing.
    """

    def __init__(self, translated: Translated, *, id: str, created: int) -> None:
        self.translated = translated
        self.id = message_id(id)
        self.created = created
        self._decoder = Decoder()
        self._stop_sequences = stop_sequences_of(translated)
        self._tail = max((len(s) for s in self._stop_sequences), default=0)
        self._started = False
        self._finished = False
        self._index = -1  # the content block index last opened
        self._live: _Block | None = None
        self._held: list[_Block] = []
        self._calls: dict[int, _Call] = {}
        self._text_tail = ""  # the text's last characters, as long as the longest stop sequence
        self._streamed: list[str] = []  # every piece, for an estimate when no usage comes
        self._finish: object = None
        self._explicit_stop: object = None
        self._usage: tuple[int | None, int | None] | None = None

    # --- whole answers ----------------------------------------------------------------------

    def answer(self, status: int, body: bytes) -> bytes:
        """A ``Message`` for a 2xx ``chat.completion``; else the error, Anthropic-shaped."""
        if not 200 <= status < 300:
            return error_body(openai_error(status, body))
        try:
            completion = json.loads(body)
        except ValueError:
            completion = None
        message = (
            message_of(completion, id=self.id, translated=self.translated)
            if isinstance(completion, dict)
            else None
        )
        if message is None:
            return error_json("api_error", "The provider's answer held no message.")
        return wire.dumps(message)

    # --- streams ----------------------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Anthropic's events for the chat stream's bytes ``data``, cut anywhere."""
        if self._finished:
            return b""
        out: list[bytes] = []
        try:
            events = self._decoder.feed(data)
        except ValueError:  # EventTooLarge: the exchange's own decoder bounds events first
            self._fail("The provider's stream broke: an event was too large.", out)
            return b"".join(out)
        for event in events:
            self._event(event, out)
        return b"".join(out)

    def close(self) -> bytes:
        """What the stream still owes: an ``error`` event when it ended before ``[DONE]``."""
        if self._finished:
            return b""
        out: list[bytes] = []
        try:
            events = self._decoder.close()
        except ValueError:
            events = []
        for event in events:
            self._event(event, out)
        if not self._finished:
            self._fail("The provider's stream ended before the answer was complete.", out)
        return b"".join(out)

    def _event(self, event: Event, out: list[bytes]) -> None:
        if self._finished:
            return
        if event.done:
            self._done(out)
            return
        try:
            chunk = json.loads(event.data)
        except ValueError:
            chunk = None
        if event.event == "error" or (isinstance(chunk, dict) and chunk.get("error") is not None):
            error = openai_error(200, event.data.encode())
            self._fail(error.message, out)
            return
        if not isinstance(chunk, dict):
            return  # not a chunk: nothing the client can be told about
        if not self._started:
            self._start(chunk, out)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            prompt = usage.get("prompt_tokens")
            output = usage.get("completion_tokens")
            self._usage = (
                prompt if is_int(prompt) else None,
                output if is_int(output) else None,
            )
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            return
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self._delta(delta, out)
        finish = choice.get("finish_reason")
        if finish is not None:
            self._finish = finish
            self._explicit_stop = choice.get("stop_reason") or choice.get("matched_stop")
            self._flush(out)

    def _start(self, chunk: Mapping[str, Any], out: list[bytes]) -> None:
        self._started = True
        model = chunk.get("model")
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": model if isinstance(model, str) else self.translated.body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.translated.shape.prompt_tokens, "output_tokens": 0},
        }
        _send(out, {"type": "message_start", "message": message})
        _send(out, {"type": "ping"})

    def _delta(self, delta: Mapping[str, Any], out: list[bytes]) -> None:
        reasoning = reasoning_of(delta)
        if reasoning:
            self._piece("thinking", None, reasoning, out)
        text = delta.get("content")
        if isinstance(text, str) and text:
            self._piece("text", None, text, out)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for order, call in enumerate(calls):
                if isinstance(call, dict):
                    self._tool_piece(call, order, out)

    def _tool_piece(self, call: Mapping[str, Any], order: int, out: list[bytes]) -> None:
        index = call.get("index")
        key: int = index if is_int(index) else order
        known = self._calls.get(key)
        if known is None:
            known = self._calls[key] = _Call(len(self._calls))
        call_id = call.get("id")
        if isinstance(call_id, str) and call_id:
            known.id = known.id or call_id
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name")
        if isinstance(name, str) and name:
            known.name = known.name or name
        arguments = function.get("arguments")
        self._piece("tool_use", known, arguments if isinstance(arguments, str) else "", out)

    def _piece(self, kind: str, call: _Call | None, text: str, out: list[bytes]) -> None:
        self._streamed.append(text)
        if kind == "text" and self._tail:
            self._text_tail = (self._text_tail + text)[-self._tail :]
        live = self._live
        if live is not None and live.kind == kind and live.call is call:
            if call is not None:
                live.pieces.append(text)
            self._send_piece(live, text, out)
            return
        if call is not None and call.closed:
            return  # more for a call whose arguments were whole: they could only break them
        if not self._held and self._live_is_whole() and (call is None or call.name is not None):
            self._close_live(out)
            self._live = self._open(kind, call, out)
            if call is not None:
                self._live.pieces.append(text)
            self._send_piece(self._live, text, out)
            return
        held = self._held[-1] if self._held else None
        if call is not None:
            held = next((block for block in self._held if block.call is call), None)
        elif held is not None and held.kind != kind:
            held = None
        if held is None:
            held = _Block(kind, call)
            self._held.append(held)
        held.pieces.append(text)

    def _live_is_whole(self) -> bool:
        """Whether the live block can be closed for another: any but a tool call whose
        arguments are not yet a whole JSON value (its next pieces may still come)."""
        live = self._live
        if live is None or live.call is None:
            return True
        try:
            json.loads("".join(live.pieces))
        except ValueError:
            return False
        return True

    def _open(self, kind: str, call: _Call | None, out: list[bytes]) -> _Block:
        self._index += 1
        block: dict[str, Any]
        if kind == "text":
            block = {"type": "text", "text": ""}
        elif kind == "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
        else:
            assert call is not None
            block = {
                "type": "tool_use",
                "id": call.id or f"toolu_{self.id.removeprefix('msg_')}_{call.position}",
                "name": call.name or "",
                "input": {},
            }
        _send(out, {"type": "content_block_start", "index": self._index, "content_block": block})
        return _Block(kind, call)

    def _send_piece(self, block: _Block, text: str, out: list[bytes]) -> None:
        if not text:
            return
        delta: dict[str, Any]
        if block.kind == "text":
            delta = {"type": "text_delta", "text": text}
        elif block.kind == "thinking":
            delta = {"type": "thinking_delta", "thinking": text}
        else:
            delta = {"type": "input_json_delta", "partial_json": text}
        _send(out, {"type": "content_block_delta", "index": self._index, "delta": delta})

    def _close_live(self, out: list[bytes]) -> None:
        if self._live is not None:
            _send(out, {"type": "content_block_stop", "index": self._index})
            if self._live.call is not None:
                self._live.call.closed = True
            self._live = None

    def _flush(self, out: list[bytes]) -> None:
        """Close the live block and send the held ones whole."""
        self._close_live(out)
        for block in self._held:
            self._open(block.kind, block.call, out)
            self._send_piece(block, "".join(block.pieces), out)
            _send(out, {"type": "content_block_stop", "index": self._index})
            if block.call is not None:
                block.call.closed = True
        self._held = []

    def _done(self, out: list[bytes]) -> None:
        if not self._started:
            self._fail("The provider's stream ended before any answer.", out)
            return
        self._flush(out)
        stop_reason, stop_sequence = stop_of(
            self._finish,
            self._explicit_stop,
            self._text_tail,
            self._stop_sequences,
            calls=bool(self._calls),
        )
        prompt, output = self._usage or (None, None)
        usage: dict[str, int] = {
            "output_tokens": output
            if output is not None
            else estimate_text("".join(self._streamed))
        }
        if prompt is not None:
            usage["input_tokens"] = prompt
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        _send(out, {"type": "message_delta", "delta": delta, "usage": usage})
        _send(out, {"type": "message_stop"})
        self._finished = True

    def _fail(self, message: str, out: list[bytes]) -> None:
        out.append(encode(error_json("api_error", message).decode(), event="error"))
        self._finished = True


def _send(out: list[bytes], event: Mapping[str, Any]) -> None:
    out.append(encode(wire.dumps(event).decode(), event=event["type"]))
