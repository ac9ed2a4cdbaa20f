"""The Gemini dialect (Google AI Studio, flavor ``gemini``); base URL ``{origin}/v1beta``.

Wire format
-----------
- ``POST /v1beta/models/{model}:generateContent`` answers one ``GenerateContentResponse``:
  ``{"candidates": [{"content": {"role": "model", "parts": [...]}, "finishReason", "index"}],
  "usageMetadata", "modelVersion", "responseId"}``.
- ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` answers SSE events
  ``data: {GenerateContentResponse}``, with no ``[DONE]``: text comes one word per event, a
  function call whole in one event, and the last event carries ``finishReason`` and the full
  ``usageMetadata`` (earlier ones carry the prompt's counts only). Without ``alt=sse`` the same
  responses come as one JSON array, as Gemini sends them.
- ``GET /v1beta/models`` (``{"models": [...]}``) and ``GET /v1beta/models/{model}``, with
  ``name: "models/{model}"``.
- The key is the ``x-goog-api-key`` header or the ``?key=`` query parameter. A wrong key gets
  Gemini's 400 ``API_KEY_INVALID``; no key its 403 "Method doesn't allow unregistered callers".
- Errors are ``{"error": {"code", "message", "status"[, "details"]}}``; an unknown model is a
  404 ``NOT_FOUND``; bodies are checked as :mod:`.gemini_request` says.

Replies follow :mod:`.replies` (flavor ``gemini``). A function call is a ``functionCall``
part (``name``, ``args``; no ``id``, as AI Studio sends none); it finishes with ``STOP``, as
Gemini's do, and so does text, unless a token limit cut it (``MAX_TOKENS``).

Thinking models
---------------
A model is a thinking model when its id contains ``2.5`` or ``gemini-3``. Its usage adds
``thoughtsTokenCount`` (:data:`THOUGHTS_TOKENS`, also in ``totalTokenCount``); with
``thinkingConfig.includeThoughts`` its answer opens with a thought summary part (``thought:
true``). Every ``functionCall`` part it sends carries a ``thoughtSignature`` (deterministic
base64) that the fake keeps. On later requests, the first ``functionCall`` part of each model
content in the current turn (since the last user content that is not only function responses)
must carry back the signature issued for that function, compared as the bytes it encodes (the
SDK sends it back URL-safe); else Gemini's 400: "Function call is missing a thought_signature
in functionCall parts. ..." (position: the content's place, from 1) or "Corrupted thought
signature.". Google's documented dummies (:data:`SKIP_SIGNATURES`) pass. Gemini 3 refuses so;
Gemini 2.5 only degrades without its signatures, so there the fake is stricter than the real.

Quotas
------
A 429 is Gemini's ``RESOURCE_EXHAUSTED`` with a ``QuotaFailure`` naming the free-tier quota
(requests per minute or per day, input tokens per minute; "per day" for tokens is extrapolated),
a ``Help`` link and a ``RetryInfo`` (``retryDelay`` in whole seconds, the message's "Please retry
in" exact), and no rate-limit headers. Token caps count the prompt's tokens only, as Gemini's
input-token quota does. The real daily quota resets at midnight America/Los_Angeles; the fake's
day is the rolling day of :mod:`.caps`.

Faults, in Gemini's shapes: STATUS answers Gemini's error (500 INTERNAL, 503 UNAVAILABLE, ...);
CUT stops a stream before its ``finishReason`` and drops the connection; MIDSTREAM_ERROR ends a
stream with an SSE ``{"error": {... "INTERNAL"}}`` event (a JSON answer: a 500 INTERNAL after
admission); MALFORMED sends a ``data:`` event (or body) that is not JSON.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from freellm.sim.fakes.answers import (
    APPLICATION_JSON,
    EVENT_STREAM,
    NOT_JSON,
    Answer,
    ErrorAnswer,
    sse,
)
from freellm.sim.fakes.caps import Dimension, Violation, WindowName
from freellm.sim.fakes.dialect import MODELS_PATH, Call, Credential, Standings
from freellm.sim.fakes.exchange import Headers
from freellm.sim.fakes.faults import CHAT_PATH
from freellm.sim.fakes.flavors import finite_retry
from freellm.sim.fakes.gemini_fields import Invalid, decode_bytes
from freellm.sim.fakes.gemini_request import GeminiRequest, SignedCall, parse_gemini
from freellm.sim.fakes.replies import JSON, Reply, make_reply

PREFIX: Final = "/v1beta"
THOUGHTS_TOKENS: Final = 16
THOUGHT_SUMMARY: Final = "Thinking it over."
SKIP_SIGNATURES: Final = (
    "skip_thought_signature_validator",
    "context_engineering_is_the_way_to_go",
)
_TYPE: Final = "type.googleapis.com/google.rpc."
_STATUS_NAMES: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_MESSAGES: Final = {
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
_QUOTAS: Final[Mapping[tuple[Dimension, WindowName], tuple[str, str]]] = {
    ("requests", "minute"): (
        "generate_content_free_tier_requests",
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
    ),
    ("requests", "day"): (
        "generate_content_free_tier_requests",
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
    ),
    ("tokens", "minute"): (
        "generate_content_free_tier_input_token_count",
        "GenerateContentInputTokensPerModelPerMinute-FreeTier",
    ),
    ("tokens", "day"): (
        "generate_content_free_tier_input_token_count",
        "GenerateContentInputTokensPerModelPerDay-FreeTier",
    ),
}
_CALL_MISSING_SIGNATURE: Final = (
    "Function call is missing a thought_signature in functionCall parts. This is required for "
    "tools to work correctly, and missing thought_signature may lead to degraded model "
    "performance. Additional data, function call `default_api:{name}` , position {position}. "
    "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
)


def is_thinking(model: str) -> bool:
    """Whether the fake treats `model` as a thinking model (see the module docstring)."""
    return "2.5" in model or "gemini-3" in model


def signature_for(model: str, serial: int, name: str) -> str:
    """The thought signature the fake issues with answer `serial`'s call of `name`."""
    digest = hashlib.sha256(f"{model}|{serial}|{name}".encode()).digest()
    return base64.b64encode(b"fake-thought-signature:" + digest).decode()


def error(code: int, message: str, details: Sequence[JSON] = ()) -> ErrorAnswer:
    """Gemini's error ``{"error": {"code", "message", "status"[, "details"]}}``, HTTP `code`."""
    body: JSON = {"code": code, "message": message, "status": _STATUS_NAMES.get(code, "UNKNOWN")}
    if details:
        body["details"] = list(details)
    return ErrorAnswer(code, {"error": body})


def _invalid(refusal: Invalid) -> ErrorAnswer:
    if not refusal.violation:
        return error(400, refusal.message)
    violation = {
        "@type": _TYPE + "BadRequest",
        "fieldViolations": [{"description": refusal.message}],
    }
    return error(400, refusal.message, [violation])


def quota_exceeded(
    violation: Violation,
    model: str,
    *,
    hints: bool = True,
    quotas: Mapping[tuple[Dimension, WindowName], tuple[str, str]] = _QUOTAS,
) -> ErrorAnswer:
    """Gemini's 429 ``RESOURCE_EXHAUSTED`` for `violation` on `model`; without `hints`, with
    no ``RetryInfo`` and no "Please retry in". `quotas` name the quota of each cap (metric,
    quota id): generateContent's unless told (embeddings name their own)."""
    metric, quota_id = quotas[violation.dimension, violation.window]
    retry = finite_retry(violation)
    again = f"\nPlease retry in {retry:g}s." if hints else ""
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. "
        "To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit. \n"
        f"* Quota exceeded for metric: generativelanguage.googleapis.com/{metric}, "
        f"limit: {violation.limit}, model: {model}{again}"
    )
    failure: JSON = {
        "quotaMetric": f"generativelanguage.googleapis.com/{metric}",
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global", "model": model},
        "quotaValue": str(violation.limit),
    }
    link: JSON = {
        "description": "Learn more about Gemini API quotas",
        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
    }
    details: list[JSON] = [
        {"@type": _TYPE + "QuotaFailure", "violations": [failure]},
        {"@type": _TYPE + "Help", "links": [link]},
    ]
    if hints:
        details.append({"@type": _TYPE + "RetryInfo", "retryDelay": f"{math.floor(retry)}s"})
    return error(429, message, details)


def _usage(reply: Reply, thoughts: int, final: bool) -> JSON:
    candidates = reply.completion_tokens if final else 0
    usage: JSON = {"promptTokenCount": reply.prompt_tokens}
    if final:
        usage["candidatesTokenCount"] = candidates
    usage["totalTokenCount"] = reply.prompt_tokens + candidates + thoughts
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": reply.prompt_tokens}]
    return usage


def _response(
    parts: list[JSON], reply: Reply, model: str, serial: int, thinking: bool, *, final: bool
) -> JSON:
    """One ``GenerateContentResponse``; the `final` one carries the finish and full usage."""
    candidate: JSON = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if final:
        candidate["finishReason"] = "MAX_TOKENS" if reply.finish_reason == "length" else "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": _usage(reply, THOUGHTS_TOKENS if thinking else 0, final),
        "modelVersion": model,
        "responseId": f"fake-gemini-{serial:06d}",
    }


class GeminiDialect:
    """Google AI Studio's native dialect (see the module docstring); keeps issued signatures."""

    name = "gemini"
    prefix = PREFIX
    default_models: tuple[str, ...] = ("gemini-2.5-flash", "gemini-2.0-flash")
    reported: tuple[tuple[Dimension, WindowName], ...] = ()

    def __init__(self) -> None:
        # Signatures are compared as bytes: clients may send them back in either alphabet.
        self._issued: dict[bytes, str] = {}  # signature -> the function it was issued for
        self._skips = frozenset(decode_bytes(dummy) for dummy in SKIP_SIGNATURES)

    def route(self, method: str, path: str, query: Mapping[str, str], body: Any) -> Call | None:
        if method == "GET" and path == MODELS_PATH:
            return Call(MODELS_PATH)
        if not path.startswith(MODELS_PATH + "/"):
            return None
        resource, _, verb = path[len(MODELS_PATH) + 1 :].partition(":")
        if method == "GET" and resource and not verb:
            return Call(path, resource)
        if method == "POST" and resource and verb == "generateContent":
            return Call(CHAT_PATH, resource)
        if method == "POST" and resource and verb == "streamGenerateContent":
            return Call(CHAT_PATH, resource, streamed=True, sse=query.get("alt") == "sse")
        return None

    def credential(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Credential:
        if "x-goog-api-key" in headers:
            return Credential(headers["x-goog-api-key"], "x-goog-api-key")
        return Credential(query.get("key"), None)

    def unknown_url(self, method: str, path: str) -> ErrorAnswer:
        return error(404, "Method not found.")

    def unauthorized(self, sent: bool) -> ErrorAnswer:
        if not sent:
            return error(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
        message = "API key not valid. Please pass a valid API key."
        details: list[JSON] = [
            {
                "@type": _TYPE + "ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {"@type": _TYPE + "LocalizedMessage", "locale": "en-US", "message": message},
        ]
        return error(400, message, details)

    def model_not_found(self, model: str) -> ErrorAnswer:
        return error(
            404,
            f"models/{model} is not found for API version v1beta, or is not supported for "
            "generateContent. Call ListModels to see the list of available models and their "
            "supported methods.",
        )

    def server_error(self, status: int) -> ErrorAnswer:
        return error(status, _MESSAGES.get(status, f"Injected fault: HTTP {status}"))

    def rate_limited(
        self,
        violation: Violation,
        model: str,
        standings: Standings,
        epoch_now: float,
        *,
        hints: bool = True,
    ) -> ErrorAnswer:
        return quota_exceeded(violation, model, hints=hints)

    def standing_headers(self, standings: Standings) -> Headers:
        return ()

    def model_list(self, models: Sequence[str]) -> Any:
        return {"models": [self.model_info(model) for model in models]}

    def model_info(self, model: str) -> Any:
        return {
            "name": f"models/{model}",
            "version": "001",
            "displayName": model,
            "description": "A fake Gemini model.",
            "inputTokenLimit": 1_048_576,
            "outputTokenLimit": 65_536,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
            "temperature": 1,
            "topP": 0.95,
            "topK": 64,
            "maxTemperature": 2,
            "thinking": is_thinking(model),
        }

    def parse(self, call: Call, body: Any) -> GeminiRequest | ErrorAnswer:
        model = call.model or ""
        try:
            request = parse_gemini(model, body, streamed=call.streamed, sse=call.sse)
        except Invalid as refusal:
            return _invalid(refusal)
        if is_thinking(model):
            return self._check_signatures(request.signed) or request
        return request

    def _check_signatures(self, calls: Sequence[SignedCall]) -> ErrorAnswer | None:
        for call in calls:
            if not call.signature:
                message = _CALL_MISSING_SIGNATURE.format(name=call.name, position=call.position)
                return error(400, message)
            issued_for = self._issued.get(call.signature)
            if call.signature not in self._skips and issued_for != call.name:
                return error(400, "Corrupted thought signature.")
        return None

    def answer(self, request: GeminiRequest, serial: int, created: int) -> Answer:
        reply = make_reply(self.name, request.chat, serial)
        thinking = is_thinking(request.model)
        steps = self._steps(reply, request.model, serial, thinking, request.streamed)
        if thinking and request.include_thoughts:
            thought = {"text": THOUGHT_SUMMARY, "thought": True}
            steps = [[thought], *steps] if request.streamed else [[thought, *steps[0]]]
        responses = [
            _response(parts, reply, request.model, serial, thinking, final=index == len(steps) - 1)
            for index, parts in enumerate(steps)
        ]
        internal = error(500, _MESSAGES[500])
        if request.sse:
            events = tuple(sse(response) for response in responses)
            return Answer(reply.prompt_tokens, events=events, broken_ending=sse(internal.body))
        if request.streamed:
            broken = ErrorAnswer(500, [internal.body])
            return Answer(reply.prompt_tokens, body=responses, broken=broken)
        return Answer(reply.prompt_tokens, body=responses[0], broken=internal)

    def _steps(
        self, reply: Reply, model: str, serial: int, thinking: bool, streamed: bool
    ) -> list[list[JSON]]:
        """The answer's parts, grouped by the response (stream event) that carries them."""
        call = reply.tool_call
        if call is not None:
            part: JSON = {"functionCall": {"name": call.name, "args": json.loads(call.arguments)}}
            if thinking:
                signature = signature_for(model, serial, call.name)
                self._issued[base64.b64decode(signature)] = call.name
                part["thoughtSignature"] = signature
            return [[part]]
        if streamed:
            return [[{"text": piece}] for piece in reply.pieces]
        return [[{"text": reply.text}]]

    def malformed(self, call: Call) -> tuple[bytes, bytes]:
        if call.sse:
            return EVENT_STREAM, b'data: {"candidates": [{"content": \n\n'
        return APPLICATION_JSON, NOT_JSON
