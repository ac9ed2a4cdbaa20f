"""``/v1/embeddings`` in the core: the request's checks, each dialect's translation and answer,
base64 for the client, and the bundled catalog's embedding models."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import struct
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from freellm.core.catalog import (
    EMBEDDINGS_CHAIN,
    AuthStyle,
    Dialect,
    ModelKind,
    ModelSpec,
    ProviderSpec,
)
from freellm.core.chat import BadRequest, ChatShape
from freellm.core.dialects import Untranslatable
from freellm.core.dialects.adapters import Outgoing
from freellm.core.dialects.embeddings import (
    EMBEDDING_ADAPTERS,
    answer_for_client,
    encode_base64,
    inputs_of,
    inspect_embeddings,
)
from freellm.core.dialects.openai import Usage
from freellm.core.ledger import Slot
from freellm.core.tokens import estimate_text
from freellm.shell.config import bundled_catalog

MODEL = ModelSpec(
    "embedder", kind=ModelKind.EMBEDDING, dimensions=8, custom_dimensions=True, max_batch=4
)
FIXED = attrs.evolve(MODEL, id="fixed", custom_dimensions=False)
PROVIDERS = {
    Dialect.OPENAI: ProviderSpec("openaiish", "O", "https://o.example/v1", Dialect.OPENAI),
    Dialect.GEMINI: ProviderSpec(
        "google", "G", "https://g.example/v1beta", Dialect.GEMINI, AuthStyle.GOOG_API_KEY
    ),
    Dialect.COHERE: ProviderSpec("cohere", "C", "https://c.example", Dialect.COHERE),
}
DIALECTS = list(PROVIDERS)


def send(
    dialect: Dialect, body: dict[str, Any], model: ModelSpec = MODEL, provider: Any = None
) -> Outgoing | Untranslatable:
    spec = provider or PROVIDERS[dialect]
    slot = Slot(spec.id, "k1", model)
    return EMBEDDING_ADAPTERS[dialect].request(spec, slot, "secret", body, stream=False)


def sent(dialect: Dialect, body: dict[str, Any], **options: Any) -> tuple[str, dict[str, Any]]:
    outgoing = send(dialect, body, **options)
    assert isinstance(outgoing, Outgoing)
    return outgoing.url, json.loads(outgoing.body)


def texts_sent(dialect: Dialect, upstream: dict[str, Any]) -> list[Any]:
    if dialect is Dialect.GEMINI:
        return [r["content"]["parts"][0]["text"] for r in upstream["requests"]]
    if dialect is Dialect.COHERE:
        return list(upstream["texts"])
    value = upstream["input"]
    return [value] if isinstance(value, str) else list(value)


def provider_answer(dialect: Dialect, vectors: list[list[float]], order: list[int]) -> bytes:
    """What the provider of `dialect` answers with `vectors` (OpenAI's entries in `order`)."""
    if dialect is Dialect.GEMINI:
        return json.dumps({"embeddings": [{"values": v} for v in vectors]}).encode()
    if dialect is Dialect.COHERE:
        meta = {"billed_units": {"input_tokens": 7}}
        return json.dumps({"id": "x", "embeddings": {"float": vectors}, "meta": meta}).encode()
    data = [{"object": "embedding", "index": i, "embedding": vectors[i]} for i in order]
    usage = {"prompt_tokens": 7, "total_tokens": 7}
    return json.dumps({"object": "list", "data": data, "model": "m", "usage": usage}).encode()


# --- inspect_embeddings -------------------------------------------------------------------------


def test_a_string_is_one_input_counted_by_the_estimate() -> None:
    shape = inspect_embeddings({"model": "auto", "input": "hello world", "user": "u1"})
    assert shape == ChatShape(
        model="auto",
        messages=(),
        prompt_tokens=estimate_text("hello world"),
        kind=ModelKind.EMBEDDING,
        longest_input=estimate_text("hello world"),
        user="u1",
    )


def test_the_longest_input_is_what_a_models_context_is_held_to() -> None:
    texts = ["short", "a much longer text " * 50, "mid length text " * 5]
    shape = inspect_embeddings({"model": "auto", "input": texts})
    assert isinstance(shape, ChatShape)
    assert shape.prompt_tokens == sum(estimate_text(t) for t in texts)
    assert shape.longest_input == max(estimate_text(t) for t in texts)


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        (["ab cd", "ef"], estimate_text("ab cd") + estimate_text("ef")),
        ([1, 2, 3], 3),
        ([[1, 2], [3], [4, 5, 6]], 6),
    ],
)
def test_arrays_count_every_input(value: Any, tokens: int) -> None:
    shape = inspect_embeddings({"model": "m", "input": value, "encoding_format": "base64"})
    assert isinstance(shape, ChatShape)
    assert shape.prompt_tokens == tokens
    assert shape.stream is False
    assert shape.max_tokens is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], None),
        ({"input": "a"}, "model"),
        ({"model": "", "input": "a"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": ""}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": ["a", ""]}, "input[1]"),
        ({"model": "m", "input": ["a", [1]]}, "input[1]"),
        ({"model": "m", "input": [[1], []]}, "input[1]"),
        ({"model": "m", "input": [[1], [-1]]}, "input[1]"),
        ({"model": "m", "input": [[True]]}, "input[0]"),
        ({"model": "m", "input": ["a"] * 2049}, "input"),
        ({"model": "m", "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "m", "input": "a", "dimensions": 0}, "dimensions"),
        ({"model": "m", "input": "a", "dimensions": True}, "dimensions"),
        ({"model": "m", "input": "a", "dimensions": 2.5}, "dimensions"),
        ({"model": "m", "input": "a", "user": 5}, "user"),
    ],
)
def test_bad_requests_name_the_field(body: Any, param: str | None) -> None:
    result = inspect_embeddings(body)
    assert isinstance(result, BadRequest)
    assert result.param == param


def test_2048_inputs_pass() -> None:
    assert isinstance(inspect_embeddings({"model": "m", "input": ["a"] * 2048}), ChatShape)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "model": JSON | st.just("m"),
        "input": JSON | st.lists(st.text(max_size=3), max_size=3),
        "encoding_format": JSON | st.sampled_from(["float", "base64"]),
        "dimensions": JSON,
        "user": JSON,
        "input_type": JSON | st.sampled_from(["search_query", "query"]),
    },
)


NVIDIA = ProviderSpec("nvidia", "N", "https://n.example/v1", Dialect.OPENAI)
EMBEDQA = attrs.evolve(MODEL, id="nvidia/nv-embedqa")


@given(JSON | FIELDS)
def test_inspect_never_raises_nor_does_any_adapter_on_what_it_passes(body: Any) -> None:
    result = inspect_embeddings(body)
    assert isinstance(result, ChatShape | BadRequest)
    if isinstance(result, ChatShape):
        assert result.kind is ModelKind.EMBEDDING
        assert len(inputs_of(body)) >= 1
        for dialect in DIALECTS:
            assert isinstance(send(dialect, body), Outgoing | Untranslatable)
        assert isinstance(send(Dialect.OPENAI, body, EMBEDQA, NVIDIA), Outgoing | Untranslatable)


# --- the translations ---------------------------------------------------------------------------

TEXTS = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4)


@pytest.mark.parametrize("dialect", DIALECTS)
@given(texts=TEXTS, order_seed=st.randoms(use_true_random=False))
def test_every_input_goes_in_order_and_comes_back_by_index(
    dialect: Dialect, texts: list[str], order_seed: Any
) -> None:
    body = {"model": "auto", "input": texts if len(texts) > 1 else texts[0]}
    assert isinstance(inspect_embeddings(body), ChatShape)
    _, upstream = sent(dialect, body)
    assert texts_sent(dialect, upstream) == texts
    # The provider's vector of input i names i, so a mix-up shows; OpenAI's entries may come
    # in any order, each with its index.
    vectors = [[float(i), float(len(text))] for i, text in enumerate(texts)]
    order = list(range(len(texts)))
    order_seed.shuffle(order)
    answer, usage = EMBEDDING_ADAPTERS[dialect].answer(
        provider_answer(dialect, vectors, order), model="embedder", created=0
    )
    assert answer["object"] == "list"
    assert answer["model"] == "embedder"
    assert [d["index"] for d in answer["data"]] == list(range(len(texts)))
    assert [d["embedding"] for d in answer["data"]] == vectors
    assert all(d["object"] == "embedding" for d in answer["data"])
    if dialect is Dialect.GEMINI:
        assert usage is None
        assert "usage" not in answer
    else:
        assert usage == Usage(7, 0)
        assert answer["usage"] == {"prompt_tokens": 7, "total_tokens": 7}


def test_openai_asks_floats_of_the_slots_model_and_keeps_other_fields() -> None:
    url, upstream = sent(
        Dialect.OPENAI,
        {"model": "auto", "input": [[1, 2]], "encoding_format": "base64", "user": "u", "x": 1},
    )
    assert url == "https://o.example/v1/embeddings"
    assert upstream == {
        "model": "embedder",
        "input": [[1, 2]],
        "encoding_format": "float",
        "user": "u",
        "x": 1,
    }


def test_gemini_batch_names_the_model_in_the_url_and_every_request() -> None:
    url, upstream = sent(Dialect.GEMINI, {"model": "auto", "input": ["a", "b"], "dimensions": 4})
    assert url == "https://g.example/v1beta/models/embedder:batchEmbedContents"
    assert upstream == {
        "requests": [
            {
                "model": "models/embedder",
                "content": {"parts": [{"text": t}]},
                "outputDimensionality": 4,
            }
            for t in ("a", "b")
        ]
    }


@pytest.mark.parametrize(
    ("given_type", "input_type"),
    [(None, "search_document"), ("search_query", "search_query"), ("query", "search_document")],
)
def test_cohere_embeds_documents_unless_told(given_type: str | None, input_type: str) -> None:
    body: dict[str, Any] = {"model": "auto", "input": "a", "dimensions": 4}
    if given_type is not None:
        body["input_type"] = given_type
    url, upstream = sent(Dialect.COHERE, body)
    assert url == "https://c.example/v2/embed"
    assert upstream == {
        "model": "embedder",
        "texts": ["a"],
        "input_type": input_type,
        "embedding_types": ["float"],
        "output_dimension": 4,
    }


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_batch_over_max_batch_is_untranslatable(dialect: Dialect) -> None:
    refusal = send(dialect, {"model": "auto", "input": ["a"] * 5})
    assert isinstance(refusal, Untranslatable)
    assert refusal.param == "input"
    assert isinstance(send(dialect, {"model": "auto", "input": ["a"] * 4}), Outgoing)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("model", "dimensions", "accepted"),
    [(MODEL, 4, True), (MODEL, 8, True), (MODEL, 9, False), (FIXED, 4, False), (FIXED, 8, True)],
)
def test_dimensions_go_only_where_the_model_gives_them(
    dialect: Dialect, model: ModelSpec, dimensions: int, accepted: bool
) -> None:
    outgoing = send(dialect, {"model": "auto", "input": "a", "dimensions": dimensions}, model)
    if not accepted:
        assert isinstance(outgoing, Untranslatable)
        assert outgoing.param == "dimensions"
        return
    assert isinstance(outgoing, Outgoing)
    text = outgoing.body.decode()
    # The native size is not asked for at all: a model without custom sizes may refuse the field.
    assert (str(dimensions) in text) is (dimensions != model.dimensions)


@pytest.mark.parametrize("dialect", [Dialect.GEMINI, Dialect.COHERE])
def test_token_ids_go_only_to_the_openai_dialect(dialect: Dialect) -> None:
    refusal = send(dialect, {"model": "auto", "input": [1, 2, 3]})
    assert isinstance(refusal, Untranslatable)
    assert refusal.param == "input"


def test_cloudflare_puts_the_account_in_the_url_and_the_token_in_the_header() -> None:
    spec = ProviderSpec(
        "cloudflare",
        "CF",
        "https://api.cf.example/accounts/{account_id}/ai/v1",
        Dialect.OPENAI,
        AuthStyle.CLOUDFLARE,
    )
    slot = Slot("cloudflare", "k", MODEL)
    outgoing = EMBEDDING_ADAPTERS[Dialect.OPENAI].request(
        spec, slot, "acct:tok", {"model": "m", "input": "a"}, stream=False
    )
    assert isinstance(outgoing, Outgoing)
    assert outgoing.url == "https://api.cf.example/accounts/acct/ai/v1/embeddings"
    assert outgoing.headers["authorization"] == "Bearer tok"


@pytest.mark.parametrize(("given_type", "input_type"), [(None, "passage"), ("query", "query")])
def test_nvidia_embedqa_models_get_an_input_type(given_type: str | None, input_type: str) -> None:
    spec = ProviderSpec("nvidia", "N", "https://n.example/v1", Dialect.OPENAI)
    model = attrs.evolve(MODEL, id="nvidia/llama-3.2-nv-embedqa-1b-v2")
    body: dict[str, Any] = {"model": "auto", "input": "a"}
    if given_type is not None:
        body["input_type"] = given_type
    _, upstream = sent(Dialect.OPENAI, body, model=model, provider=spec)
    assert upstream["input_type"] == input_type
    _, other = sent(Dialect.OPENAI, {"model": "auto", "input": "a"}, provider=spec)
    assert "input_type" not in other


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "answer",
    [
        b"[]",
        b"not json",
        b'{"data": [], "embeddings": [], "meta": {}}',
        b'{"data": [{"index": 0, "embedding": [1, "x"]}], "embeddings": [{"values": [1, "x"]}]}',
        b'{"data": [{"index": 0, "embedding": [NaN]}], "embeddings": [{"values": [Infinity]}]}',
        b'{"data": [{"index": 0, "embedding": [1e39]}], "embeddings": [{"values": [1e39]}]}',
    ],
)
def test_a_broken_answer_is_a_value_error(dialect: Dialect, answer: bytes) -> None:
    body = answer.replace(b'"embeddings": [{', b'"embeddings": {"float": [[1e39]]}, "x": [{')
    with pytest.raises(ValueError, match=r"."):
        EMBEDDING_ADAPTERS[dialect].answer(
            answer if dialect is not Dialect.COHERE else body, model="m", created=0
        )


def test_openai_indexes_must_be_each_entry_once() -> None:
    data = [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}]
    with pytest.raises(ValueError, match="indexes"):
        EMBEDDING_ADAPTERS[Dialect.OPENAI].answer(
            json.dumps({"data": data}).encode(), model="m", created=0
        )


@pytest.mark.parametrize("dialect", DIALECTS)
@given(data=st.binary(max_size=40) | JSON.map(lambda v: json.dumps(v).encode()))
def test_answer_raises_only_value_error(dialect: Dialect, data: bytes) -> None:
    with contextlib.suppress(ValueError):
        EMBEDDING_ADAPTERS[dialect].answer(data, model="m", created=0)


# --- the client's side --------------------------------------------------------------------------

FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


def decoded(value: str) -> list[float]:
    packed = base64.b64decode(value)
    return list(struct.unpack(f"<{len(packed) // 4}f", packed))


@given(st.lists(st.lists(FLOAT32, min_size=1, max_size=16), min_size=1, max_size=4))
def test_base64_round_trip_gives_the_same_float32s(vectors: list[list[float]]) -> None:
    answer = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
        "model": "m",
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }
    encoded = encode_base64(answer)
    assert [decoded(d["embedding"]) for d in encoded["data"]] == vectors
    assert {k: v for k, v in encoded.items() if k != "data"} == {
        k: v for k, v in answer.items() if k != "data"
    }


@given(st.floats(min_value=-3e38, max_value=3e38))
def test_base64_of_any_double_is_its_float32(value: float) -> None:
    answer = {"data": [{"index": 0, "embedding": [value]}]}
    [back] = decoded(encode_base64(answer)["data"][0]["embedding"])
    assert back == struct.unpack("<f", struct.pack("<f", value))[0]
    assert math.isclose(back, value, rel_tol=1e-6, abs_tol=1e-38)


def test_a_float_answer_with_usage_passes_unparsed() -> None:
    body = (
        b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5]}],'
        b'"model":"m","usage":{"prompt_tokens":3,"total_tokens":3}}'
    )
    assert answer_for_client(body, "float", prompt_tokens=9) is body


def test_an_answer_without_usage_gets_the_estimate_and_base64_when_asked() -> None:
    body = (
        b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-2.0]}],'
        b'"model":"m"}'
    )
    floats = json.loads(answer_for_client(body, "float", prompt_tokens=9))
    assert floats["usage"] == {"prompt_tokens": 9, "total_tokens": 9}
    assert floats["data"][0]["embedding"] == [0.5, -2.0]
    encoded = json.loads(answer_for_client(body, "base64", prompt_tokens=9))
    assert decoded(encoded["data"][0]["embedding"]) == [0.5, -2.0]
    assert encoded["usage"]["prompt_tokens"] == 9


# --- the bundled catalog ------------------------------------------------------------------------


def test_the_embeddings_chain_lists_every_embedding_model_once_and_no_other() -> None:
    catalog = bundled_catalog()
    every = [
        f"{pid}/{model.id}"
        for pid, spec in catalog.providers.items()
        for model in spec.models.values()
        if model.kind is ModelKind.EMBEDDING
    ]
    chain = [target.name for target in catalog.chains[EMBEDDINGS_CHAIN]]
    assert sorted(chain) == sorted(every)
    assert len(set(chain)) == len(chain)
    assert chain[0] == "google/gemini-embedding-001"
    assert all(name not in catalog.settings.chain for name in chain)


def test_every_bundled_embedding_model_says_its_size_and_input_limit() -> None:
    for spec in bundled_catalog().providers.values():
        for model in spec.models.values():
            if model.kind is ModelKind.EMBEDDING:
                assert model.dimensions is not None, model.id
                assert model.context is not None, model.id
                assert spec.dialect in EMBEDDING_ADAPTERS
                chat_only = (model.tools, model.vision, model.json, model.reasoning)
                assert chat_only == (False, False, False, False), model.id


def test_no_hugging_face_embedding_model_is_bundled() -> None:
    models = bundled_catalog().providers["huggingface"].models.values()
    assert all(model.kind is ModelKind.CHAT for model in models)
