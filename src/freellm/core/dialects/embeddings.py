"""``/v1/embeddings``: the request checked, and translated for each dialect's embeddings call.

An embeddings request takes the same routing and dispatch path as a chat completion, with an
adapter of this module (:data:`EMBEDDING_ADAPTERS`) in place of the chat one: the request to
send, and the OpenAI ``list`` of ``embedding`` objects read back. Vectors always come back as
floats here; the client's ``encoding_format`` is the door's business (:func:`answer_for_client`:
base64 is a way of writing the same floats).

Theory of operation
-------------------
:func:`inspect_embeddings` checks the body once, before routing, the way OpenAI does (``input``
a string, strings, token ids or arrays of token ids; at most 2,048 inputs; no empty string), and
returns a :class:`~freellm.core.chat.ChatShape` of kind ``EMBEDDING`` whose ``prompt_tokens``
are every input's estimate (a token array counts its length): what the ledger reserves.

Each adapter then says, per target, whether it can send the request as asked, else an
:class:`~freellm.core.dialects.Untranslatable` (the plan skips that target; 400 naming the field
when none can):

==================  ===================================  ====================================
                    OpenAI-compatible (``/embeddings``)  Gemini (``:batchEmbedContents``),
                                                         Cohere (``/v2/embed``)
==================  ===================================  ====================================
strings             as they are                          one request / one text each
token ids           as they are (only OpenAI's own       refused (``input``)
                    models read them)
more than the       refused (``input``)                  refused (``input``)
model's max_batch
``dimensions``      sent to a model with                 ``outputDimensionality`` /
                    ``custom_dimensions``; dropped when  ``output_dimension``, same rule
                    it is the native size; else refused
``encoding_format`` always ``float`` upstream            floats (Cohere: ``embedding_types``)
``user``            as it is                             dropped
==================  ===================================  ====================================

Cohere embeds with ``input_type`` ``search_document`` unless the client sends one of Cohere's
own (``search_query``, ``classification``, ``clustering``): OpenAI's API has no such field, and a
document is what an embeddings call most often stores. NVIDIA's ``embedqa`` models need an
``input_type`` too (``passage`` or ``query``): ``passage`` unless the client sent one.

Every answer becomes OpenAI's ``{"object": "list", "data": [{"object": "embedding", "index",
"embedding"}], "model", "usage"}``, with ``model`` the provider's model id and the entries in
input order. Gemini reports no usage: its answer carries none, and :func:`answer_for_client`
fills in the request's estimate.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

from freellm.core import wire
from freellm.core.catalog import Dialect, ModelKind, ModelSpec, ProviderSpec
from freellm.core.chat import BadRequest, ChatShape
from freellm.core.dialects import Untranslatable
from freellm.core.dialects.adapters import Adapter, Fold, Outgoing, auth_headers, openai_endpoint
from freellm.core.dialects.openai import Usage
from freellm.core.ledger import Slot
from freellm.core.tokens import estimate_text

__all__ = [
    "COHERE_INPUT_TYPES",
    "EMBEDDING_ADAPTERS",
    "ENCODINGS",
    "MAX_INPUTS",
    "EmbeddingsFace",
    "answer_for_client",
    "encode_base64",
    "inputs_of",
    "inspect_embeddings",
]

MAX_INPUTS: Final = 2048
"""OpenAI's limit on the inputs of one embeddings request."""
ENCODINGS: Final = frozenset({"float", "base64"})
COHERE_INPUT_TYPES: Final = frozenset(
    {"search_document", "search_query", "classification", "clustering"}
)
COHERE_DEFAULT_INPUT_TYPE: Final = "search_document"
NVIDIA_INPUT_TYPES: Final = frozenset({"passage", "query"})
FLOAT32_MAX: Final = 3.4028234663852886e38

Input = str | Sequence[int]


# --- the request, checked -----------------------------------------------------------------------


def _token_ids(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value
    )


def _check_input(value: object) -> tuple[int, int] | BadRequest:
    """The estimated tokens of ``input``, all of them and its longest text's, or why it is not
    one OpenAI accepts."""
    if isinstance(value, str):
        if not value:
            return BadRequest("`input` must not be an empty string.", "input")
        tokens = estimate_text(value)
        return tokens, tokens
    if not isinstance(value, list) or not value:
        return BadRequest(
            "`input` must be a string, an array of strings, an array of token ids or an array "
            "of arrays of token ids, and not empty.",
            "input",
        )
    if _token_ids(value):
        return len(value), len(value)
    if len(value) > MAX_INPUTS:
        return BadRequest(f"`input` may hold at most {MAX_INPUTS} inputs.", "input")
    total = longest = 0
    strings = isinstance(value[0], str)
    for index, item in enumerate(value):
        if strings and isinstance(item, str) and item:
            tokens = estimate_text(item)
        elif not strings and _token_ids(item) and item:
            tokens = len(item)
        else:
            kind = "a non-empty string" if strings else "a non-empty array of token ids"
            return BadRequest(
                f"`input[{index}]` must be {kind}: an array of inputs holds non-empty strings "
                "only, or non-empty arrays of token ids only.",
                f"input[{index}]",
            )
        total += tokens
        longest = max(longest, tokens)
    return total, longest


def inspect_embeddings(body: object) -> ChatShape | BadRequest:
    """Check ``body`` (decoded JSON) as an embeddings request. Never raises.

    Fields it does not know are left alone for the adapters (an OpenAI-compatible provider gets
    them untouched)."""
    if not isinstance(body, dict):
        return BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return BadRequest("`model` is required and must be a non-empty string.", "model")
    if "input" not in body:
        return BadRequest("`input` is required.", "input")
    counted = _check_input(body["input"])
    if isinstance(counted, BadRequest):
        return counted
    tokens, longest = counted
    encoding = body.get("encoding_format")
    if encoding is not None and (not isinstance(encoding, str) or encoding not in ENCODINGS):
        return BadRequest("`encoding_format` must be `float` or `base64`.", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
    ):
        return BadRequest("`dimensions` must be an integer >= 1.", "dimensions")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        return BadRequest("`user` must be a string.", "user")
    return ChatShape(
        model=model,
        messages=(),
        prompt_tokens=tokens,
        kind=ModelKind.EMBEDDING,
        longest_input=longest,
        user=user,
    )


def inputs_of(body: Mapping[str, Any]) -> list[Input]:
    """The inputs of a checked body, one per vector, in order: a lone string or token array is
    one input."""
    value = body["input"]
    if isinstance(value, str) or _token_ids(value):
        return [value]
    return list(value)


# --- shared checks of a target --------------------------------------------------------------------


def _too_many(model: ModelSpec, count: int) -> Untranslatable | None:
    if model.max_batch is not None and count > model.max_batch:
        return Untranslatable(
            "input",
            f"{model.id} embeds at most {model.max_batch} inputs a call, not {count}",
            "too_many_inputs",
        )
    return None


def _dimensions(model: ModelSpec, body: Mapping[str, Any]) -> int | Untranslatable | None:
    """The ``dimensions`` to ask of ``model``: None when the client asked none or its native
    size; Untranslatable when ``model`` cannot give that size."""
    wanted = body.get("dimensions")
    if wanted is None or wanted == model.dimensions:
        return None
    if not model.custom_dimensions:
        return Untranslatable("dimensions", f"{model.id} gives only {model.dimensions} dimensions")
    if model.dimensions is not None and wanted > model.dimensions:
        return Untranslatable(
            "dimensions", f"{model.id} gives at most {model.dimensions} dimensions"
        )
    return int(wanted)


def _one_of(value: object, names: frozenset[str]) -> bool:
    """Whether ``value`` (any JSON) is one of ``names``: a list or an object is unhashable."""
    return isinstance(value, str) and value in names


def _texts(model: ModelSpec, inputs: list[Input]) -> list[str] | Untranslatable:
    if all(isinstance(item, str) for item in inputs):
        return [item for item in inputs if isinstance(item, str)]
    return Untranslatable("input", f"{model.id} embeds text, not token ids")


# --- answers ----------------------------------------------------------------------------------


def _floats(vector: object) -> list[float]:
    """A vector of numbers as floats; ``ValueError`` for anything else (a broken answer).

    Only finite numbers within float32's range pass: ``json.loads`` reads ``NaN`` and
    ``Infinity``, which are no JSON to write back, and base64 writes float32."""
    if not isinstance(vector, list) or not vector:
        raise ValueError("an embedding that is not an array of numbers")
    floats = []
    for value in vector:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("an embedding that is not an array of numbers")
        # NaN fails both comparisons; an int too large for a float is compared exactly.
        if not -FLOAT32_MAX <= value <= FLOAT32_MAX:
            raise ValueError("an embedding value that is not a finite float32")
        floats.append(float(value))
    return floats


def _listing(vectors: list[list[float]], model: str, prompt_tokens: int | None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": vector}
            for index, vector in enumerate(vectors)
        ],
        "model": model,
    }
    if prompt_tokens is not None:
        answer["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return answer


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _usage(prompt_tokens: int | None) -> Usage | None:
    return None if prompt_tokens is None else Usage(prompt_tokens, 0)


def _object(data: bytes) -> dict[str, Any]:
    parsed = json.loads(data)
    if not isinstance(parsed, dict):
        raise ValueError("not a JSON object")
    return parsed


class _Unstreamed:
    """An embeddings call answers in one piece: the exchange never asks it for a fold."""

    def stream(self, *, client_wants_usage: bool, model: str, created: int) -> Fold:
        raise ValueError("embeddings do not stream")


def _checked(
    model: ModelSpec, body: Mapping[str, Any], *, text_only: bool
) -> tuple[list[str], int | None] | Untranslatable:
    """What every dialect checks of a target before it translates: the texts (``text_only``:
    token ids are refused; else none are returned), the batch size, and the ``dimensions`` to
    ask for (None: the model's own)."""
    inputs = inputs_of(body)
    texts: list[str] = []
    if text_only:
        read = _texts(model, inputs)
        if isinstance(read, Untranslatable):
            return read
        texts = read
    refusal = _too_many(model, len(inputs))
    if refusal is not None:
        return refusal
    dimensions = _dimensions(model, body)
    if isinstance(dimensions, Untranslatable):
        return dimensions
    return texts, dimensions


# --- OpenAI-compatible ------------------------------------------------------------------------


class OpenAIEmbeddings(_Unstreamed):
    """OpenAI-compatible ``POST {base_url}/embeddings``."""

    def request(
        self,
        provider: ProviderSpec,
        slot: Slot,
        secret: str,
        body: Mapping[str, Any],
        *,
        stream: bool,
    ) -> Outgoing | Untranslatable:
        model = slot.model
        checked = _checked(model, body, text_only=False)
        if isinstance(checked, Untranslatable):
            return checked
        _, dimensions = checked
        upstream = dict(body)
        upstream["model"] = model.id
        upstream["encoding_format"] = "float"
        upstream.pop("dimensions", None)
        if dimensions is not None:
            upstream["dimensions"] = dimensions
        asymmetric = provider.id == "nvidia" and "embedqa" in model.id
        if asymmetric and not _one_of(upstream.get("input_type"), NVIDIA_INPUT_TYPES):
            upstream["input_type"] = "passage"
        base_url, headers = openai_endpoint(provider, secret)
        return Outgoing("POST", f"{base_url}/embeddings", headers, wire.dumps(upstream))

    def answer(
        self, data: bytes, *, model: str, created: int
    ) -> tuple[dict[str, Any], Usage | None]:
        parsed = _object(data)
        entries = parsed.get("data")
        if not isinstance(entries, list) or not entries:
            raise ValueError("not an embeddings list")
        vectors: list[list[float] | None] = [None] * len(entries)
        for position, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ValueError("an embedding that is not an object")
            index = entry.get("index", position)
            if _count(index) is None or index >= len(entries) or vectors[index] is not None:
                raise ValueError("embedding indexes that are not 0..n-1")
            vectors[index] = _floats(entry.get("embedding"))
        usage = parsed.get("usage")
        prompt = _count(usage.get("prompt_tokens")) if isinstance(usage, dict) else None
        complete = [vector for vector in vectors if vector is not None]
        return _listing(complete, model, prompt), _usage(prompt)


# --- Gemini -----------------------------------------------------------------------------------


class GeminiEmbeddings(_Unstreamed):
    """Google AI Studio's ``POST {base_url}/models/{model}:batchEmbedContents``."""

    def request(
        self,
        provider: ProviderSpec,
        slot: Slot,
        secret: str,
        body: Mapping[str, Any],
        *,
        stream: bool,
    ) -> Outgoing | Untranslatable:
        model = slot.model
        checked = _checked(model, body, text_only=True)
        if isinstance(checked, Untranslatable):
            return checked
        texts, dimensions = checked
        name = f"models/{model.id}"
        requests = []
        for text in texts:
            request: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
            if dimensions is not None:
                request["outputDimensionality"] = dimensions
            requests.append(request)
        url = f"{provider.base_url}/{name}:batchEmbedContents"
        return Outgoing(
            "POST", url, auth_headers(provider, secret), wire.dumps({"requests": requests})
        )

    def answer(
        self, data: bytes, *, model: str, created: int
    ) -> tuple[dict[str, Any], Usage | None]:
        embeddings = _object(data).get("embeddings")
        if not isinstance(embeddings, list) or not embeddings:
            raise ValueError("not a batchEmbedContents answer")
        vectors = []
        for embedding in embeddings:
            if not isinstance(embedding, dict):
                raise ValueError("an embedding that is not an object")
            vectors.append(_floats(embedding.get("values")))
        return _listing(vectors, model, None), None


# --- Cohere -----------------------------------------------------------------------------------


class CohereEmbeddings(_Unstreamed):
    """Cohere's native ``POST {base_url}/v2/embed``."""

    def request(
        self,
        provider: ProviderSpec,
        slot: Slot,
        secret: str,
        body: Mapping[str, Any],
        *,
        stream: bool,
    ) -> Outgoing | Untranslatable:
        model = slot.model
        checked = _checked(model, body, text_only=True)
        if isinstance(checked, Untranslatable):
            return checked
        texts, dimensions = checked
        input_type = body.get("input_type")
        upstream: dict[str, Any] = {
            "model": model.id,
            "texts": texts,
            "input_type": (
                input_type if _one_of(input_type, COHERE_INPUT_TYPES) else COHERE_DEFAULT_INPUT_TYPE
            ),
            "embedding_types": ["float"],
        }
        if dimensions is not None:
            upstream["output_dimension"] = dimensions
        url = f"{provider.base_url}/v2/embed"
        return Outgoing("POST", url, auth_headers(provider, secret), wire.dumps(upstream))

    def answer(
        self, data: bytes, *, model: str, created: int
    ) -> tuple[dict[str, Any], Usage | None]:
        parsed = _object(data)
        embeddings = parsed.get("embeddings")
        floats = embeddings.get("float") if isinstance(embeddings, dict) else None
        if not isinstance(floats, list) or not floats:
            raise ValueError("not an embed answer with float embeddings")
        vectors = [_floats(vector) for vector in floats]
        meta = parsed.get("meta")
        billed = meta.get("billed_units") if isinstance(meta, dict) else None
        prompt = _count(billed.get("input_tokens")) if isinstance(billed, dict) else None
        return _listing(vectors, model, prompt), _usage(prompt)


EMBEDDING_ADAPTERS: Final[Mapping[Dialect, Adapter]] = MappingProxyType(
    {
        Dialect.OPENAI: OpenAIEmbeddings(),
        Dialect.GEMINI: GeminiEmbeddings(),
        Dialect.COHERE: CohereEmbeddings(),
    }
)


# --- the client's side ------------------------------------------------------------------------


def _base64(vector: Sequence[float]) -> str:
    """OpenAI's base64 embedding: the vector as little-endian float32, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def encode_base64(answer: Mapping[str, Any]) -> dict[str, Any]:
    """``answer`` (an embeddings list of floats) with each embedding written in base64, as
    OpenAI answers ``encoding_format: "base64"``. Raises ``ValueError`` if a value is no
    number (never, for what the adapters write)."""
    data = [{**entry, "embedding": _base64(entry["embedding"])} for entry in answer["data"]]
    return {**answer, "data": data}


def answer_for_client(
    body: bytes, encoding_format: str | None, *, prompt_tokens: int | None = None
) -> bytes:
    """A 200 embeddings answer as the exchange wrote it, as the client asked for it.

    ``usage`` is filled in from ``prompt_tokens`` (the request's estimate) when the provider
    reported none (Gemini never does); base64 when ``encoding_format`` is ``"base64"``. A body
    that needs neither is returned as it is, unparsed. Raises ``ValueError`` for a body that is
    not an embeddings list (never, for what the exchange writes)."""
    base64_wanted = encoding_format == "base64"
    if not base64_wanted and b'"usage":' in body:
        return body
    answer = json.loads(body)
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        raise ValueError("not an embeddings list")
    if "usage" not in answer:
        tokens = prompt_tokens or 0
        answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    if base64_wanted:
        answer = encode_base64(answer)
    return wire.dumps(answer)


class EmbeddingsFace:
    """The client's side of an embeddings request (a :class:`~freellm.core.doors.Face`): the
    answer as the client asked to have it (:func:`answer_for_client`), errors as they are.
    Embeddings never stream."""

    def __init__(self, encoding_format: str | None, prompt_tokens: int) -> None:
        self._encoding_format = encoding_format
        self._prompt_tokens = prompt_tokens  # the usage of an answer that reports none (Gemini)

    def answer(self, status: int, body: bytes) -> bytes:
        if 200 <= status < 300:
            return answer_for_client(body, self._encoding_format, prompt_tokens=self._prompt_tokens)
        return body

    def feed(self, data: bytes) -> bytes:
        return data

    def close(self) -> bytes:
        return b""
