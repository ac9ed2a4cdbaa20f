"""The OpenAI dialect (flavors ``openai``, ``groq``, ``cerebras``, ``openrouter``).

Wire format: ``POST {prefix}/chat/completions`` with ``Authorization: Bearer <key>`` answers a
``chat.completion`` or, with ``"stream": true``, SSE ``data: {chat.completion.chunk}`` events
ending with ``data: [DONE]``; ``GET {prefix}/models`` and ``{prefix}/models/{id}`` list models.
Errors are ``{"error": {"message", "type", "param", "code"}}`` (OpenRouter: ``{"error": {"code",
"message"}}``); each flavor's rate-limit headers and 429 bodies are in :mod:`.flavors`.
A MIDSTREAM_ERROR ends a stream with OpenRouter's error event (``error`` and ``finish_reason:
"error"``), used for every flavor: OpenAI's SDK raises on any event that carries an ``error``;
a JSON answer becomes a 200 carrying the same ``error``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from freellm.sim.fakes import flavors
from freellm.sim.fakes.answers import (
    APPLICATION_JSON,
    DONE,
    EVENT_STREAM,
    NOT_JSON,
    Answer,
    ErrorAnswer,
    sse,
)
from freellm.sim.fakes.caps import Violation
from freellm.sim.fakes.dialect import (
    MODELS_PATH,
    Call,
    Credential,
    Standings,
    bearer,
    chat_call,
)
from freellm.sim.fakes.exchange import Headers
from freellm.sim.fakes.faults import CHAT_PATH
from freellm.sim.fakes.replies import JSON, ChatRequest, Reply, make_reply, split_arguments

FINGERPRINT: Final = "fp_fake"
PROCESSING: Final = b": OPENROUTER PROCESSING\n\n"
_FINISH: Final = {"stop": "stop", "stop_sequence": "stop", "length": "length"}


class BadRequest(Exception):
    """The request body breaks the OpenAI contract; `param` names the field, if one."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _positive_int(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"`{name}` must be a positive integer", name)
    return value


def parse_chat(body: Any) -> ChatRequest:
    """Check a chat completions body; raises :class:`BadRequest` naming the first bad field."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("`model` is required", "model")
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
    ):
        raise BadRequest("`messages` must be a non-empty list of messages with a role", "messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("`stream` must be a boolean", "stream")
    if body.get("n", 1) != 1:
        raise BadRequest("Only n = 1 is supported", "n")
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    tools = body.get("tools") or []
    if not isinstance(tools, list) or not all(
        isinstance(t, dict)
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
        for t in tools
    ):
        raise BadRequest("`tools` must be a list of functions with a name", "tools")
    tool_choice = body.get("tool_choice")
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        if wanted not in {t["function"]["name"] for t in tools}:
            raise BadRequest(f"`tool_choice` names an unknown function {wanted!r}", "tool_choice")
    elif tool_choice not in (None, "none", "auto", "required"):
        raise BadRequest("`tool_choice` must be none, auto, required or a function", "tool_choice")
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        tools=tuple(tools),
        tool_choice=tool_choice,
    )


def _finish(reply: Reply) -> str:
    return _FINISH.get(reply.finish_reason, reply.finish_reason)


def usage_json(reply: Reply) -> JSON:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def completion_json(reply: Reply, completion_id: str, model: str, created: int) -> JSON:
    message: JSON = {
        "role": "assistant",
        "content": reply.text if reply.tool_call is None else None,
    }
    if reply.tool_call is not None:
        call = reply.tool_call
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
        ]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(reply)}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [choice],
        "usage": usage_json(reply),
    }


def _deltas(reply: Reply) -> list[JSON]:
    """The ``delta`` of every chunk of the streamed answer, the empty last one included."""
    if reply.tool_call is None:
        text: list[JSON] = [{"role": "assistant", "content": ""}]
        text += [{"content": piece} for piece in reply.pieces]
        return [*text, {}]
    call = reply.tool_call
    opening = {"index": 0, "id": call.id, "type": "function"}
    deltas: list[JSON] = [
        {"role": "assistant", "content": None},
        {"tool_calls": [{**opening, "function": {"name": call.name, "arguments": ""}}]},
    ]
    deltas += [
        {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
        for piece in split_arguments(call.arguments)
    ]
    return [*deltas, {}]


def stream_chunks(
    reply: Reply, completion_id: str, model: str, created: int, include_usage: bool
) -> list[JSON]:
    """Every ``chat.completion.chunk`` of the streamed answer, in order, without ``[DONE]``."""
    deltas = _deltas(reply)
    head = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
    }
    chunks: list[JSON] = []
    last = len(deltas) - 1
    for index, delta in enumerate(deltas):
        finish = _finish(reply) if index == last else None
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        chunk = {**head, "choices": [choice]}
        if include_usage:
            chunk["usage"] = None
        chunks.append(chunk)
    if include_usage:
        chunks.append({**head, "choices": [], "usage": usage_json(reply)})
    return chunks


class OpenAIDialect:
    """The OpenAI dialect with one flavor's quirks (see the module docstring)."""

    def __init__(self, flavor: flavors.Flavor) -> None:
        self.name = flavor.name
        self.prefix = flavor.prefix
        self.default_models = flavor.default_models
        self.reported = flavors.REPORTED[flavor.name]

    def route(self, method: str, path: str, query: Mapping[str, str], body: Any) -> Call | None:
        if method == "POST" and path == CHAT_PATH:
            return chat_call(body)
        if method == "GET" and path == MODELS_PATH:
            return Call(MODELS_PATH)
        if method == "GET" and path.startswith(MODELS_PATH + "/"):
            return Call(path, path[len(MODELS_PATH) + 1 :])
        return None

    def credential(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Credential:
        return bearer(headers)

    def _error(self, status: int, message: str, kind: str, code: str | None) -> ErrorAnswer:
        return ErrorAnswer(status, flavors.error_body(self.name, status, message, kind, code))

    def unknown_url(self, method: str, path: str) -> ErrorAnswer:
        message = f"Unknown request URL: {method} {path}"
        return self._error(404, message, "invalid_request_error", "unknown_url")

    def unauthorized(self, sent: bool) -> ErrorAnswer:
        return ErrorAnswer(401, flavors.INVALID_KEY_BODY)

    def model_not_found(self, model: str) -> ErrorAnswer:
        message = f"The model `{model}` does not exist or you do not have access to it."
        body = flavors.error_body(
            self.name, 404, message, "invalid_request_error", "model_not_found", "model"
        )
        return ErrorAnswer(404, body)

    def server_error(self, status: int) -> ErrorAnswer:
        return self._error(status, f"Injected fault: HTTP {status}", "server_error", None)

    def rate_limited(
        self,
        violation: Violation,
        model: str,
        standings: Standings,
        epoch_now: float,
        *,
        hints: bool = True,
    ) -> ErrorAnswer:
        headers, body = flavors.rate_limited(
            self.name, violation, model, standings, epoch_now, hints=hints
        )
        return ErrorAnswer(429, body, headers)

    def standing_headers(self, standings: Standings) -> Headers:
        return flavors.standing_headers(self.name, standings)

    def model_list(self, models: Sequence[str]) -> Any:
        return {"object": "list", "data": [self.model_info(model) for model in models]}

    def model_info(self, model: str) -> Any:
        return {"id": model, "object": "model", "created": 0, "owned_by": f"fake-{self.name}"}

    def parse(self, call: Call, body: Any) -> ChatRequest | ErrorAnswer:
        try:
            return parse_chat(body)
        except BadRequest as error:
            answer = flavors.error_body(
                self.name, 400, error.message, "invalid_request_error", None, error.param
            )
            return ErrorAnswer(400, answer)

    def answer(self, request: ChatRequest, serial: int, created: int) -> Answer:
        reply = make_reply(self.name, request, serial)
        completion_id = f"chatcmpl-{self.name}-{serial:06d}"
        tokens = reply.prompt_tokens + reply.completion_tokens
        if not request.stream:
            payload = completion_json(reply, completion_id, request.model, created)
            return Answer(tokens, body=payload, broken=ErrorAnswer(200, self._broken(payload)))
        chunks = stream_chunks(reply, completion_id, request.model, created, request.include_usage)
        head = {key: chunks[0][key] for key in ("id", "object", "created", "model")}
        error_event = {
            **head,
            "error": self._midstream_error(),
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        }
        return Answer(
            tokens,
            events=tuple(sse(chunk) for chunk in chunks),
            opening=PROCESSING if self.name == "openrouter" else b"",
            ending=DONE,
            broken_ending=sse(error_event),
        )

    def _broken(self, payload: JSON) -> JSON:
        choice = payload["choices"][0]
        message = {**choice["message"], "content": ""}
        broken_choice = {**choice, "message": message, "finish_reason": "error"}
        return {**payload, "choices": [broken_choice], "error": self._midstream_error()}

    def _midstream_error(self) -> JSON:
        """The error object of an answer that fails once generation has started."""
        if self.name == "openrouter":
            return {"code": "server_error", "message": "Provider disconnected unexpectedly"}
        return {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }

    def malformed(self, call: Call) -> tuple[bytes, bytes]:
        if call.sse:
            return EVENT_STREAM, b"data: {not json\n\n" + DONE
        return APPLICATION_JSON, NOT_JSON
