"""The stream fold, :func:`stream_step`, and its wire wrapper, :class:`GeminiStreamFold`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from freellm.core import wire
from freellm.core.dialects.gemini.common import parse_json
from freellm.core.dialects.gemini.response import (
    ChoiceState,
    candidates_of,
    finish_reason_of,
    model_of,
    parts_of,
    prompt_blocked,
    read_parts,
    response_id_of,
    usage_json,
    usage_of,
)
from freellm.core.dialects.openai import StreamError, Usage
from freellm.core.sse import Event
from freellm.core.tokens import estimate_text


@attrs.frozen
class StreamState:
    """One Gemini stream so far. ``finished`` once every candidate has its finish reason."""

    include_usage: bool = False
    model: str = ""
    created: int = 0
    id: str | None = None
    choices: tuple[ChoiceState, ...] = ()
    usage: Mapping[str, Any] | None = None  # the latest usageMetadata
    finished: bool = False


def stream_step(
    state: StreamState, event: Mapping[str, Any]
) -> tuple[StreamState, list[dict[str, Any]]]:
    """Fold one stream event (a ``GenerateContentResponse``) into OpenAI chunk dicts.

    Emits a ``role`` delta when a choice starts, content and tool-call deltas (every tool-call
    delta has ``index``; each Gemini ``functionCall`` arrives whole, so each delta is a call's
    first, with id, type, name and its arguments as a JSON string), a finish chunk per choice, and
    once every choice is finished the usage chunk if the client asked for it. Events after the
    end are ignored. The ``[DONE]`` line is the wire's business (:class:`GeminiStreamFold`).
    """
    if state.finished:
        return state, []
    stream_id = state.id or f"chatcmpl-{response_id_of(event) or 'gemini'}"
    model = state.model if state.id is not None and state.model else model_of(event, state.model)
    meta = event.get("usageMetadata")
    usage = meta if isinstance(meta, Mapping) else state.usage
    choices = {choice.index: choice for choice in state.choices}
    chunks: list[dict[str, Any]] = []

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> None:
        chunks.append(
            {
                "id": stream_id,
                "object": "chat.completion.chunk",
                "created": state.created,
                "model": model,
                "choices": [
                    {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    candidates = candidates_of(event)
    if not candidates and prompt_blocked(event) and not choices:
        candidates = [(0, {"finishReason": "SAFETY"})]
    for index, candidate in candidates:
        choice = choices.get(index, ChoiceState(index))
        if choice.finish_reason is not None:
            continue
        if not choice.started:
            choice = attrs.evolve(choice, started=True)
            chunk(index, {"role": "assistant"})
        choice, text, calls = read_parts(choice, parts_of(candidate), response_id_of(event))
        if text:
            chunk(index, {"content": text})
        first = choice.calls - len(calls)
        for offset, call in enumerate(calls):
            chunk(index, {"tool_calls": [{"index": first + offset, **call}]})
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason:
            choice = attrs.evolve(choice, finish_reason=finish_reason_of(choice, reason))
            chunk(index, {}, choice.finish_reason)
        choices[index] = choice
    finished = bool(choices) and all(c.finish_reason is not None for c in choices.values())
    if finished and state.include_usage and usage is not None:
        chunks.append(
            {
                "id": stream_id,
                "object": "chat.completion.chunk",
                "created": state.created,
                "model": model,
                "choices": [],
                "usage": usage_json(usage),
            }
        )
    new_state = attrs.evolve(
        state,
        id=stream_id,
        model=model,
        choices=tuple(choices[index] for index in sorted(choices)),
        usage=usage,
        finished=finished,
    )
    return new_state, chunks


class GeminiStreamFold:
    """:func:`stream_step` behind :class:`~freellm.core.dialects.openai.StreamFold`'s interface.

    :meth:`step` takes one SSE event and returns the wire bytes for the client; after the last
    finish reason it adds ``data: [DONE]`` and sets :attr:`done`. It raises
    :class:`~freellm.core.dialects.openai.StreamError` for an ``error`` event or an event that is
    not a JSON object (Gemini sends neither in a healthy stream).
    """

    def __init__(self, *, client_wants_usage: bool, model: str = "", created: int = 0) -> None:
        self.state = StreamState(include_usage=client_wants_usage, model=model, created=created)
        self.usage: Usage | None = None
        self.done = False
        self.chunks = 0
        self.completion_tokens = 0  # estimated from what was streamed, for a stream cut short

    def passthrough(self, data: bytes, out: list[bytes]) -> int:
        """None of a read: every event of this dialect is translated (:meth:`step`)."""
        return 0

    def step(self, event: Event) -> list[bytes]:
        if self.done or not event.data.strip() or event.done:
            return []
        data = event.data
        parsed = parse_json(data)
        if not isinstance(parsed, dict) or event.event == "error" or "error" in parsed:
            error = parsed.get("error") if isinstance(parsed, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            raise StreamError(str(message or data)[:500], data)
        self.state, chunks = stream_step(self.state, parsed)
        if isinstance(parsed.get("usageMetadata"), Mapping):
            self.usage = usage_of(parsed)
        out = []
        for chunk in chunks:
            self.completion_tokens += _tokens(chunk["choices"])
            out.append(b"data: " + wire.dumps(chunk) + b"\n\n")
        self.chunks += len(out)
        if self.state.finished:
            self.done = True
            out.append(b"data: [DONE]\n\n")
        return out


def _tokens(choices: Iterable[Mapping[str, Any]]) -> int:
    total = 0
    for choice in choices:
        delta = choice["delta"]
        total += estimate_text(delta.get("content") or "")
        for call in delta.get("tool_calls") or ():
            total += estimate_text(call["function"]["arguments"])
    return total
