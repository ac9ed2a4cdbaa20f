"""The Cohere dialect (native v2, flavor ``cohere``); the base URL is the origin.

Wire format
-----------
- ``POST /v2/chat`` with ``Authorization: Bearer <key>``; the body is checked as
  :mod:`.cohere_request` says. A wrong key gets 401 ``{"message": "invalid api token"}``, no key
  401 ``{"message": "no api key supplied"}``, an unknown model 404 ``{"message": "model '<id>'
  not found, make sure the correct model ID was used and that you have access to the model."}``.
- The answer is a ``V2ChatResponse``: ``{"id", "finish_reason", "message": {"role":
  "assistant", "content": [{"type": "text", "text"}]} or {"role", "tool_plan", "tool_calls":
  [{"id", "type": "function", "function": {"name", "arguments"}}]}, "usage": {"billed_units":
  {"input_tokens", "output_tokens"}, "tokens": {...}}}``; finish_reason is COMPLETE,
  STOP_SEQUENCE, MAX_TOKENS or TOOL_CALL.
- With ``"stream": true``: SSE events ``event: <type>`` / ``data: {"type": <type>, ...}``:
  message-start, then content-start, one content-delta per word and content-end, or one
  tool-plan-delta per word of the plan, tool-call-start, tool-call-delta (the arguments in
  pieces) and tool-call-end; then message-end (``delta.finish_reason``, ``delta.usage``) and a
  last ``data: [DONE]``, as Cohere sends it (its SDK stops reading there).
- ``GET /v1/models`` (``{"models": [{"name", "endpoints": ["chat"], "context_length", ...}]}``)
  and ``GET /v1/models/{model}``: Cohere documents these under ``/v1`` only. The same answers
  are served under ``/v2`` too, where freellm's key probe looks; that path is not verified.

Replies follow :mod:`.replies` (flavor ``cohere``). A tool call comes with the plan ``I will
call <name>.`` (one output token per word, on top of the call's own cost) and the id
``<name>_fake<serial>``; Cohere's answer ids are UUIDs, here ``UUID(int=serial)``.
``usage.billed_units`` holds the counting rules' tokens (what caps count); ``usage.tokens`` adds
:data:`PREAMBLE_TOKENS` to the input, as Cohere counts its hidden preamble there.

A 429 is ``{"message": ...}`` with a trial key's wording: "limited to <cap> API calls / minute"
for a per-minute cap, "... / month" for a per-day one (the fake's rolling day stands in for the
trial key's month), and no rate-limit headers.

Faults, in Cohere's shapes: STATUS answers ``{"message"}``; CUT drops a stream before its
message-end; MIDSTREAM_ERROR ends a stream with a message-end whose finish_reason is ERROR
(with ``delta.error``) and ``[DONE]``, and makes a JSON answer a 200 with finish_reason ERROR
and no content; MALFORMED sends an event (or body) that is not JSON.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from freellm.sim.fakes.answers import (
    APPLICATION_JSON,
    DONE,
    EVENT_STREAM,
    NOT_JSON,
    Answer,
    ErrorAnswer,
    sse,
)
from freellm.sim.fakes.caps import Dimension, Violation, WindowName
from freellm.sim.fakes.cohere_request import Refused, parse_cohere
from freellm.sim.fakes.dialect import (
    MODELS_PATH,
    Call,
    Credential,
    Standings,
    bearer,
    chat_call,
)
from freellm.sim.fakes.exchange import Headers
from freellm.sim.fakes.replies import (
    JSON,
    ChatRequest,
    Reply,
    ToolCall,
    make_reply,
    split_arguments,
    words,
)

CHAT: Final = "/v2/chat"
MODEL_LISTS: Final = ("/v1/models", "/v2/models")
PREAMBLE_TOKENS: Final = 165
INTERNAL_ERROR: Final = "internal server error, this has been reported to our developers"
_FINISH: Final = {"stop": "COMPLETE", "stop_sequence": "STOP_SEQUENCE", "length": "MAX_TOKENS"}
_TRIAL: Final = (
    "You are using a Trial key, which is limited to {limit} API calls / {span}. You can "
    "continue to use the Trial key for free or upgrade to a Production key with higher rate "
    "limits at 'https://dashboard.cohere.com/api-keys'. Contact us on "
    "'https://discord.gg/XW44jPfYJu' or email us at support@cohere.com with any questions"
)


def message(status: int, text: str) -> ErrorAnswer:
    """Cohere's error: HTTP `status` and ``{"message": text}``."""
    return ErrorAnswer(status, {"message": text})


def _event(kind: str, **fields: Any) -> bytes:
    return sse({"type": kind, **fields}, event=kind)


def _tool_call(call: ToolCall, serial: int, arguments: str) -> JSON:
    function = {"name": call.name, "arguments": arguments}
    return {"id": f"{call.name}_fake{serial:06d}", "type": "function", "function": function}


def _message(reply: Reply, plan: tuple[str, ...], serial: int) -> JSON:
    call = reply.tool_call
    if call is None:
        return {"role": "assistant", "content": [{"type": "text", "text": reply.text}]}
    tool_call = _tool_call(call, serial, call.arguments)
    return {"role": "assistant", "tool_plan": "".join(plan), "tool_calls": [tool_call]}


def _text_events(reply: Reply) -> list[bytes]:
    start = {"message": {"content": {"type": "text", "text": ""}}}
    deltas = [
        _event("content-delta", index=0, delta={"message": {"content": {"text": piece}}})
        for piece in reply.pieces
    ]
    return [_event("content-start", index=0, delta=start), *deltas, _event("content-end", index=0)]


def _tool_events(call: ToolCall, plan: tuple[str, ...], serial: int) -> list[bytes]:
    opening = {"message": {"tool_calls": _tool_call(call, serial, "")}}
    deltas = [
        _event(
            "tool-call-delta",
            index=0,
            delta={"message": {"tool_calls": {"function": {"arguments": piece}}}},
        )
        for piece in split_arguments(call.arguments)
    ]
    return [
        *(_event("tool-plan-delta", delta={"message": {"tool_plan": piece}}) for piece in plan),
        _event("tool-call-start", index=0, delta=opening),
        *deltas,
        _event("tool-call-end", index=0),
    ]


def _stream_body(reply: Reply, plan: tuple[str, ...], serial: int) -> list[bytes]:
    """The events between message-start and message-end."""
    call = reply.tool_call
    return _text_events(reply) if call is None else _tool_events(call, plan, serial)


def _streamed(head: JSON, middle: list[bytes], tokens: int) -> Answer:
    """The stream of the answer `head` (id, finish_reason, usage) with the `middle` events."""
    # Seen on the wire (not in the SDK's type): the empty message fields after the role.
    empty = {"content": [], "tool_plan": "", "tool_calls": [], "citations": []}
    start = {"message": {"role": "assistant", **empty}}
    end = {"finish_reason": head["finish_reason"], "usage": head["usage"]}
    failure = {"finish_reason": "ERROR", "error": INTERNAL_ERROR, "usage": head["usage"]}
    return Answer(
        tokens,
        events=(
            _event("message-start", id=head["id"], delta=start),
            *middle,
            _event("message-end", delta=end),
        ),
        ending=DONE,
        broken_ending=_event("message-end", delta=failure) + DONE,
    )


class CohereDialect:
    """Cohere's native v2 chat dialect (see the module docstring)."""

    name = "cohere"
    prefix = ""
    default_models: tuple[str, ...] = ("command-a-03-2025", "command-r-plus-08-2024")
    reported: tuple[tuple[Dimension, WindowName], ...] = ()

    def route(self, method: str, path: str, query: Mapping[str, str], body: Any) -> Call | None:
        if method == "POST" and path == CHAT:
            return chat_call(body)
        for listing in MODEL_LISTS if method == "GET" else ():
            if path == listing:
                return Call(MODELS_PATH)
            if path.startswith(listing + "/"):
                model = path[len(listing) + 1 :]
                return Call(f"{MODELS_PATH}/{model}", model)
        return None

    def credential(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Credential:
        return bearer(headers)

    def unknown_url(self, method: str, path: str) -> ErrorAnswer:
        return message(404, "Not Found")

    def unauthorized(self, sent: bool) -> ErrorAnswer:
        return message(401, "invalid api token" if sent else "no api key supplied")

    def model_not_found(self, model: str) -> ErrorAnswer:
        return message(
            404,
            f"model '{model}' not found, make sure the correct model ID was used and that you "
            "have access to the model.",
        )

    def server_error(self, status: int) -> ErrorAnswer:
        return message(
            status, INTERNAL_ERROR if status == 500 else f"Injected fault: HTTP {status}"
        )

    def rate_limited(
        self,
        violation: Violation,
        model: str,
        standings: Standings,
        epoch_now: float,
        *,
        hints: bool = True,
    ) -> ErrorAnswer:
        # Cohere's 429 never says when to retry: there is no hint to leave out.
        span = "minute" if violation.window == "minute" else "month"
        return message(429, _TRIAL.format(limit=violation.limit, span=span))

    def standing_headers(self, standings: Standings) -> Headers:
        return ()

    def model_list(self, models: Sequence[str]) -> Any:
        return {"models": [self.model_info(model) for model in models]}

    def model_info(self, model: str) -> Any:
        return {
            "name": model,
            "endpoints": ["chat"],
            "finetuned": False,
            "context_length": 128_000,
            "default_endpoints": [],
            "features": ["tools", "strict_tools", "json_mode", "json_schema"],
        }

    def parse(self, call: Call, body: Any) -> ChatRequest | ErrorAnswer:
        try:
            return parse_cohere(body)
        except Refused as refusal:
            return message(refusal.status, refusal.message)

    def answer(self, request: ChatRequest, serial: int, created: int) -> Answer:
        reply = make_reply(self.name, request, serial)
        plan = words(f"I will call {reply.tool_call.name}.") if reply.tool_call else ()
        output = reply.completion_tokens + len(plan)
        head: JSON = {
            "id": str(uuid.UUID(int=serial)),
            "finish_reason": "TOOL_CALL" if reply.tool_call else _FINISH[reply.finish_reason],
            "usage": {
                "billed_units": {"input_tokens": reply.prompt_tokens, "output_tokens": output},
                "tokens": {
                    "input_tokens": reply.prompt_tokens + PREAMBLE_TOKENS,
                    "output_tokens": output,
                },
            },
        }
        tokens = reply.prompt_tokens + output
        if request.stream:
            return _streamed(head, _stream_body(reply, plan, serial), tokens)
        body = {**head, "message": _message(reply, plan, serial)}
        broken = {**body, "finish_reason": "ERROR", "message": {"role": "assistant", "content": []}}
        return Answer(tokens, body=body, broken=ErrorAnswer(200, broken))

    def malformed(self, call: Call) -> tuple[bytes, bytes]:
        if call.sse:
            return EVENT_STREAM, b"event: content-delta\ndata: {not json\n\n" + DONE
        return APPLICATION_JSON, NOT_JSON
