"""The Cohere stream as a fold, :func:`fold_event`, behind :class:`StreamFold`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import attrs

from freellm.core import wire
from freellm.core.dialects.cohere.common import is_int
from freellm.core.dialects.cohere.response import (
    FAILED_FINISH,
    arguments_json,
    finish_reason_of,
    openai_id,
    openai_usage,
    usage_of,
)
from freellm.core.dialects.openai import StreamError, Usage
from freellm.core.sse import Event
from freellm.core.tokens import estimate_text

DONE: Final = b"data: [DONE]\n\n"


@attrs.frozen
class StreamFailure:
    """Cohere reported a failure inside the stream: what it said, and the event's data."""

    message: str
    body: str


@attrs.frozen
class StreamState:
    """Where one Cohere stream is. ``calls`` holds, for each OpenAI tool-call index, the Cohere
    ``index`` its tool-call-start carried (``None`` if none): deltas find their call by it."""

    model: str
    created: int
    include_usage: bool
    id: str = "chatcmpl-cohere"
    started: bool = False
    calls: tuple[int | None, ...] = ()
    usage: Usage | None = None
    completion_tokens: int = 0  # estimated from what was streamed, for a stream cut short
    chunks: int = 0
    done: bool = False
    failure: StreamFailure | None = None


def fold_event(state: StreamState, event: Event) -> tuple[StreamState, list[bytes]]:
    """One Cohere SSE event in, the new state and the OpenAI SSE bytes to send out. Never raises;
    a failure is recorded in ``state.failure`` and nothing is sent for it."""
    if state.done or state.failure is not None:
        return state, []
    if event.done:
        return attrs.evolve(state, done=True), [DONE]
    if not event.data.strip():
        return state, []  # nothing said
    try:
        data = json.loads(event.data)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        # Every event of a healthy Cohere stream is a JSON object: the stream is broken (a
        # text delta lost here would leave the client a shorter answer, or none at all).
        failure = StreamFailure("a stream event that is not a JSON object", event.data)
        return attrs.evolve(state, failure=failure), []
    kind = data.get("type")
    if not isinstance(kind, str):
        kind = event.event
    if kind == "error" or (kind is None and ("message" in data or "error" in data)):
        error = data.get("error")
        said = error.get("message") if isinstance(error, dict) else error or data.get("message")
        failure = StreamFailure(str(said or event.data)[:500], event.data)
        return attrs.evolve(state, failure=failure), []
    delta = data.get("delta")
    message = delta.get("message") if isinstance(delta, dict) else None
    message = message if isinstance(message, dict) else {}
    if kind == "message-start":
        cohere_id = data.get("id")
        if isinstance(cohere_id, str) and cohere_id and not state.started:
            state = attrs.evolve(state, id=openai_id(cohere_id))
        return _emit(state, [])
    if kind in ("content-start", "content-delta"):
        content = message.get("content")
        if isinstance(content, dict):
            if isinstance(content.get("text"), str) and content["text"]:
                return _emit(state, [{"content": content["text"]}], estimate_text(content["text"]))
            if isinstance(content.get("thinking"), str) and content["thinking"]:
                thought = content["thinking"]
                return _emit(state, [{"reasoning_content": thought}], estimate_text(thought))
        return state, []
    if kind == "tool-plan-delta":
        plan = message.get("tool_plan")
        if isinstance(plan, str) and plan:
            return _emit(state, [{"content": plan}], estimate_text(plan))
        return state, []
    if kind == "tool-call-start":
        return _tool_call_start(state, data.get("index"), message.get("tool_calls"))
    if kind == "tool-call-delta":
        return _tool_call_delta(state, data.get("index"), message.get("tool_calls"))
    if kind == "message-end":
        return _message_end(state, delta if isinstance(delta, dict) else {}, event.data)
    return state, []  # content-end, tool-call-end, citation-*, debug, anything new


def _tool_call_start(
    state: StreamState, cohere_index: object, call: object
) -> tuple[StreamState, list[bytes]]:
    call = call[0] if isinstance(call, list) and call else call
    if not isinstance(call, dict):
        return state, []
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    index = len(state.calls)
    name = str(function.get("name") or "")
    arguments = arguments_json(function.get("arguments"))
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        call_id = f"call_{state.id}_{index}"
    state = attrs.evolve(
        state, calls=(*state.calls, cohere_index if is_int(cohere_index) else None)
    )
    first = {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    return _emit(state, [{"tool_calls": [first]}], estimate_text(name) + estimate_text(arguments))


def _tool_call_delta(
    state: StreamState, cohere_index: object, call: object
) -> tuple[StreamState, list[bytes]]:
    function = call.get("function") if isinstance(call, dict) else None
    arguments = function.get("arguments") if isinstance(function, dict) else None
    if not state.calls or not isinstance(arguments, str) or not arguments:
        return state, []
    index = len(state.calls) - 1
    if is_int(cohere_index) and cohere_index in state.calls:
        index = state.calls.index(cohere_index)
    piece = {"index": index, "function": {"arguments": arguments}}
    return _emit(state, [{"tool_calls": [piece]}], estimate_text(arguments))


def _message_end(
    state: StreamState, delta: Mapping[str, Any], raw: str
) -> tuple[StreamState, list[bytes]]:
    usage = usage_of(delta.get("usage"))
    finish = delta.get("finish_reason")
    if isinstance(finish, str) and finish in FAILED_FINISH:
        said = delta.get("error")
        message = str(said) if said else f"Cohere ended the stream with {finish}"
        return attrs.evolve(state, usage=usage, failure=StreamFailure(message[:500], raw)), []
    state, out = _emit(state, [])
    tail = [_chunk(state, {}, finish_reason_of(finish, tool_calls=bool(state.calls)))]
    if state.include_usage and usage is not None:
        body = {
            "id": state.id,
            "object": "chat.completion.chunk",
            "created": state.created,
            "model": state.model,
            "choices": [],
            "usage": openai_usage(usage),
        }
        tail.append(_sse(body))
    state = attrs.evolve(state, usage=usage, done=True, chunks=state.chunks + len(tail))
    return state, [*out, *tail, DONE]


def _emit(
    state: StreamState, deltas: list[dict[str, Any]], tokens: int = 0
) -> tuple[StreamState, list[bytes]]:
    """The chunks of ``deltas``, after the role chunk if it has not gone out yet."""
    out: list[bytes] = []
    if not state.started:
        out.append(_chunk(state, {"role": "assistant", "content": "", "refusal": None}, None))
    out += [_chunk(state, delta, None) for delta in deltas]
    changed = attrs.evolve(
        state,
        started=True,
        chunks=state.chunks + len(out),
        completion_tokens=state.completion_tokens + tokens,
    )
    return changed, out


def _chunk(state: StreamState, delta: dict[str, Any], finish: str | None) -> bytes:
    return _sse(
        {
            "id": state.id,
            "object": "chat.completion.chunk",
            "created": state.created,
            "model": state.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
    )


def _sse(body: Mapping[str, Any]) -> bytes:
    # json.dumps escapes line breaks inside strings, so one data: line always holds the chunk.
    return b"data: " + wire.dumps(body) + b"\n\n"


class StreamFold:
    """One Cohere stream, translated: the interface of the OpenAI dialect's ``StreamFold``.

    :meth:`step` takes one SSE event and returns the OpenAI SSE bytes to send the client (possibly
    none); it raises :class:`~freellm.core.dialects.openai.StreamError` when Cohere reports a
    failure (an error event, or message-end with ERROR/TIMEOUT), and again on any later step.
    ``model`` and ``created`` go
    into every chunk; ``fallback_id`` is the chunks' id until message-start brings Cohere's.
    """

    def __init__(
        self,
        *,
        client_wants_usage: bool,
        model: str,
        created: int,
        fallback_id: str = "chatcmpl-cohere",
    ) -> None:
        self.state = StreamState(
            model=model, created=created, include_usage=client_wants_usage, id=fallback_id
        )

    def passthrough(self, data: bytes, out: list[bytes]) -> int:
        """None of a read: every event of this dialect is translated (:meth:`step`)."""
        return 0

    def step(self, event: Event) -> list[bytes]:
        self.state, out = fold_event(self.state, event)
        failure = self.state.failure
        if failure is not None:
            raise StreamError(failure.message, failure.body)
        return out

    @property
    def usage(self) -> Usage | None:
        return self.state.usage

    @property
    def done(self) -> bool:
        return self.state.done

    @property
    def completion_tokens(self) -> int:
        return self.state.completion_tokens

    @property
    def chunks(self) -> int:
        return self.state.chunks
