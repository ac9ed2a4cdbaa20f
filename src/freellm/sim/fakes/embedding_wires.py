"""Each dialect's embeddings call, read into an :class:`~.embeddings.EmbedRequest` and answered.

- OpenAI (every OpenAI flavor): ``POST {prefix}/embeddings`` with ``{"model", "input",
  "encoding_format"?, "dimensions"?, "user"?}``; ``input`` a string, strings, token ids or
  arrays of token ids, at most 2,048, no empty string. The answer is ``{"object": "list",
  "data": [{"object": "embedding", "index", "embedding"}], "model", "usage": {"prompt_tokens",
  "total_tokens"}}``, the vectors as floats or, for ``encoding_format: "base64"``, base64 of
  little-endian float32. Errors and 429s are the flavor's.
- Gemini: ``POST /v1beta/models/{model}:batchEmbedContents`` with ``{"requests": [{"model":
  "models/{model}", "content": {"parts": [{"text"}]}, "outputDimensionality"?}]}`` (at most
  100; every request's model the URL's) answers ``{"embeddings": [{"values"}]}``, with no
  usage, as Gemini's does; ``:embedContent`` with one ``{"content", "outputDimensionality"?}``
  answers ``{"embedding": {"values"}}``. The fake asks one ``outputDimensionality`` of a whole
  batch (the real API takes one per request). A 429 names the embedding quotas
  (``embed_content_free_tier_requests``, as real 429s do; the quota ids are made on the
  pattern of generateContent's).
- Cohere: ``POST /v2/embed`` with ``{"model", "texts" (1 to 96), "input_type" (required:
  search_document, search_query, classification, clustering), "embedding_types" (required;
  the fake writes ``float`` only), "output_dimension"? (256, 512, 1024 or 1536, embed-v4.0
  only)}`` answers ``{"id", "embeddings": {"float": [...]}, "texts", "meta": {"api_version",
  "billed_units": {"input_tokens"}}, "response_type": "embeddings_by_type"}``.
"""

from __future__ import annotations

import base64
import struct
import uuid
from collections.abc import Mapping
from typing import Any, Final, Protocol

from freellm.sim.fakes import flavors
from freellm.sim.fakes.answers import ErrorAnswer
from freellm.sim.fakes.caps import Dimension, Violation, WindowName
from freellm.sim.fakes.cohere import message
from freellm.sim.fakes.dialect import MODELS_PATH, Call, Dialect, Standings
from freellm.sim.fakes.embeddings import (
    EMBEDDINGS_PATH,
    EmbedRequest,
    Input,
    size_problem,
    text_of_parts,
    vectors,
)
from freellm.sim.fakes.gemini import error, quota_exceeded

OPENAI_MAX_INPUTS: Final = 2048
GEMINI_MAX_BATCH: Final = 100
COHERE_MAX_TEXTS: Final = 96
COHERE_INPUT_TYPES: Final = frozenset(
    {"search_document", "search_query", "classification", "clustering"}
)
COHERE_DIMENSIONS: Final = frozenset({256, 512, 1024, 1536})
GEMINI_EMBED_QUOTAS: Final[Mapping[tuple[Dimension, WindowName], tuple[str, str]]] = {
    ("requests", "minute"): (
        "embed_content_free_tier_requests",
        "EmbedContentRequestsPerMinutePerProjectPerModel-FreeTier",
    ),
    ("requests", "day"): (
        "embed_content_free_tier_requests",
        "EmbedContentRequestsPerDayPerProjectPerModel-FreeTier",
    ),
    ("tokens", "minute"): (
        "embed_content_free_tier_input_token_count",
        "EmbedContentInputTokensPerModelPerMinute-FreeTier",
    ),
    ("tokens", "day"): (
        "embed_content_free_tier_input_token_count",
        "EmbedContentInputTokensPerModelPerDay-FreeTier",
    ),
}


class EmbeddingWire(Protocol):
    """One dialect's embeddings call (see the module docstring)."""

    def route(self, method: str, path: str, body: Any) -> Call | None:
        """The embeddings call `method` `path` makes (relative to the prefix), else None."""

    def parse(self, call: Call, body: Any) -> EmbedRequest | ErrorAnswer: ...

    def answer(self, request: EmbedRequest, serial: int) -> Any: ...

    def rate_limited(
        self,
        violation: Violation,
        model: str,
        standings: Standings,
        epoch_now: float,
        *,
        hints: bool,
    ) -> ErrorAnswer: ...


def _body_model(body: Any) -> str | None:
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


def _ids(value: object) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)
    )


def _openai_inputs(value: object) -> tuple[Input, ...] | str:
    """OpenAI's ``input`` as inputs, or what is wrong with it."""
    if isinstance(value, str):
        return (value,) if value else "'$.input' is invalid: an empty string."
    if _ids(value):
        assert isinstance(value, list)
        return (tuple(value),)
    if not isinstance(value, list) or not value:
        return "'$.input' is invalid. Please check the API reference."
    if len(value) > OPENAI_MAX_INPUTS:
        return f"'$.input' is invalid: at most {OPENAI_MAX_INPUTS} inputs."
    if all(isinstance(item, str) and item for item in value):
        return tuple(value)
    if all(_ids(item) for item in value):
        return tuple(tuple(item) for item in value)
    return "'$.input' is invalid. Please check the API reference."


def _base64(floats: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(floats)}f", *floats)).decode()


class _DialectsOwn429:
    """An embeddings call whose 429 is its dialect's chat 429, word for word."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect

    def rate_limited(
        self,
        violation: Violation,
        model: str,
        standings: Standings,
        epoch_now: float,
        *,
        hints: bool,
    ) -> ErrorAnswer:
        return self.dialect.rate_limited(violation, model, standings, epoch_now, hints=hints)


class OpenAIEmbeddings(_DialectsOwn429):
    """The OpenAI dialect's ``/embeddings`` for one flavor, refusing in its words."""

    def route(self, method: str, path: str, body: Any) -> Call | None:
        if method == "POST" and path == EMBEDDINGS_PATH:
            return Call(EMBEDDINGS_PATH, _body_model(body))
        return None

    def _bad(self, text: str, param: str | None) -> ErrorAnswer:
        body = flavors.error_body(
            self.dialect.name, 400, text, "invalid_request_error", None, param
        )
        return ErrorAnswer(400, body)

    def parse(self, call: Call, body: Any) -> EmbedRequest | ErrorAnswer:
        model = _body_model(body)
        if not isinstance(body, dict) or not model:
            return self._bad("you must provide a model parameter", "model")
        inputs = _openai_inputs(body.get("input"))
        if isinstance(inputs, str):
            return self._bad(inputs, "input")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            return self._bad("encoding_format must be float or base64", "encoding_format")
        dimensions = body.get("dimensions")
        if dimensions is not None and (
            isinstance(dimensions, bool) or not isinstance(dimensions, int)
        ):
            return self._bad("dimensions must be an integer", "dimensions")
        problem = size_problem(model, dimensions)
        if problem is not None:
            return self._bad(problem, "dimensions")
        return EmbedRequest(model, inputs, dimensions, base64=encoding == "base64")

    def answer(self, request: EmbedRequest, serial: int) -> Any:
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": _base64(floats) if request.base64 else floats,
            }
            for index, floats in enumerate(vectors(request))
        ]
        tokens = request.tokens
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return {"object": "list", "data": data, "model": request.model, "usage": usage}


class GeminiEmbeddings:
    """Google AI Studio's ``:batchEmbedContents`` and ``:embedContent``."""

    def route(self, method: str, path: str, body: Any) -> Call | None:
        if method != "POST" or not path.startswith(MODELS_PATH + "/"):
            return None
        resource, _, verb = path[len(MODELS_PATH) + 1 :].partition(":")
        if resource and verb in ("batchEmbedContents", "embedContent"):
            return Call(EMBEDDINGS_PATH, resource)
        return None

    def parse(self, call: Call, body: Any) -> EmbedRequest | ErrorAnswer:
        model = call.model or ""
        if not isinstance(body, dict):
            return error(400, "Invalid JSON payload received.")
        # batchEmbedContents carries `requests`; embedContent is one request's fields.
        single = "requests" not in body
        requests = [{**body, "model": f"models/{model}"}] if single else body["requests"]
        if not isinstance(requests, list) or not requests:
            return error(400, "* BatchEmbedContentsRequest.requests: contents is not specified")
        if len(requests) > GEMINI_MAX_BATCH:
            return error(
                400,
                "* BatchEmbedContentsRequest.requests: at most "
                f"{GEMINI_MAX_BATCH} requests can be in one batch",
            )
        texts: list[Input] = []
        sizes = set()
        for index, request in enumerate(requests):
            if not isinstance(request, dict) or request.get("model") != f"models/{model}":
                return error(
                    400,
                    f"* BatchEmbedContentsRequest.requests[{index}].model: the model of every "
                    "request must be the batch's",
                )
            content = request.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            text = text_of_parts(parts) if isinstance(parts, list) and parts else None
            if not text:
                return error(
                    400,
                    f"* BatchEmbedContentsRequest.requests[{index}].content: "
                    "contents is not specified",
                )
            texts.append(text)
            sizes.add(request.get("outputDimensionality"))
        if len(sizes) > 1:
            return error(400, "The fake asks one outputDimensionality of a whole batch.")
        (dimensions,) = sizes
        problem = size_problem(model, dimensions)
        if problem is not None:
            return error(400, problem)
        return EmbedRequest(model, tuple(texts), dimensions, single=single)

    def answer(self, request: EmbedRequest, serial: int) -> Any:
        embeddings = [{"values": floats} for floats in vectors(request)]
        return {"embedding": embeddings[0]} if request.single else {"embeddings": embeddings}

    def rate_limited(
        self,
        violation: Violation,
        model: str,
        standings: Standings,
        epoch_now: float,
        *,
        hints: bool,
    ) -> ErrorAnswer:
        return quota_exceeded(violation, model, hints=hints, quotas=GEMINI_EMBED_QUOTAS)


class CohereEmbeddings(_DialectsOwn429):
    """Cohere's native ``/v2/embed``."""

    def route(self, method: str, path: str, body: Any) -> Call | None:
        if method == "POST" and path == "/v2/embed":
            return Call(EMBEDDINGS_PATH, _body_model(body))
        return None

    def parse(self, call: Call, body: Any) -> EmbedRequest | ErrorAnswer:
        model = _body_model(body)
        if not isinstance(body, dict) or not model:
            return message(400, "invalid request: model must be specified")
        texts = body.get("texts")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return message(400, "invalid request: texts must be a non-empty list of strings")
        if len(texts) > COHERE_MAX_TEXTS:
            return message(
                400,
                "invalid request: total number of texts must be at most "
                f"{COHERE_MAX_TEXTS} - received {len(texts)}",
            )
        if body.get("input_type") not in COHERE_INPUT_TYPES:
            return message(400, f"invalid request: input_type is required for {model}")
        if body.get("embedding_types") != ["float"]:
            return message(400, 'invalid request: the fake writes embedding_types ["float"] only')
        dimensions = body.get("output_dimension")
        if dimensions is not None and (
            model != "embed-v4.0" or dimensions not in COHERE_DIMENSIONS
        ):
            return message(
                400, f"invalid request: output_dimension {dimensions} is not supported for {model}"
            )
        return EmbedRequest(model, tuple(texts), dimensions)

    def answer(self, request: EmbedRequest, serial: int) -> Any:
        return {
            "id": str(uuid.UUID(int=serial)),
            "embeddings": {"float": vectors(request)},
            "texts": list(request.inputs),
            "meta": {
                "api_version": {"version": "2"},
                "billed_units": {"input_tokens": request.tokens},
            },
            "response_type": "embeddings_by_type",
        }


def make_embedding_wire(dialect: Dialect) -> EmbeddingWire:
    """The embeddings call of `dialect`'s wire format."""
    if dialect.name == "gemini":
        return GeminiEmbeddings()
    if dialect.name == "cohere":
        return CohereEmbeddings(dialect)
    return OpenAIEmbeddings(dialect)
