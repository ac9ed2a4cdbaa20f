"""The fakes' embeddings calls, as each provider's own SDK and a plain HTTP client see them.

OpenAI's ``embeddings.create`` (float, and the base64 it asks for by default), Google's
``embed_content`` (``batchEmbedContents``) and Cohere's ``embed`` read the fakes' answers
through their own types; the vectors are the ones :func:`~freellm.sim.fakes.embeddings.vector`
promises. Caps and faults are the chat endpoints', in each dialect's shapes.
"""

from __future__ import annotations

import base64
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import cohere
import httpx
import openai
import pytest
import trio.testing
from google import genai
from google.genai import types

from freellm.core.outcome import Kind, classify
from freellm.sim.fakes import FakeCaps, FakeProvider, FaultKind, key_id, open_fake_provider
from freellm.sim.fakes.embeddings import EMBEDDINGS_PATH, EmbedRequest, vector

KEY = "fake-embedding-key"
TLS = ssl.create_default_context()
TEXTS = ["the quick brown fox", "jumps over", "the lazy dog, twice over"]


def tokens_of(texts: list[str]) -> int:
    return sum(max(1, -(-len(text) // 4)) for text in texts)


@asynccontextmanager
async def fake(flavor: str, models: dict[str, FakeCaps], **options: Any) -> AsyncIterator[Any]:
    headers = {"x-goog-api-key": KEY} if flavor == "gemini" else {"authorization": f"Bearer {KEY}"}
    async with (
        open_fake_provider(flavor, keys=[KEY], models=models, **options) as provider,
        httpx.AsyncClient(headers=headers, timeout=None, verify=TLS) as http,
    ):
        yield provider, http


# -- OpenAI ------------------------------------------------------------------------------------

SMALL = "text-embedding-3-small"
ADA = "text-embedding-ada-002"


def openai_sdk(provider: FakeProvider) -> openai.AsyncOpenAI:
    # The SDK brings its own HTTP client (a vendored httpx): it cannot take ours.
    return openai.AsyncOpenAI(api_key=KEY, base_url=provider.base_url, max_retries=0)


async def test_openai_sdk_gets_floats_and_usage() -> None:
    async with fake("openai", {SMALL: FakeCaps()}) as (provider, _), openai_sdk(provider) as sdk:
        answer = await sdk.embeddings.create(model=SMALL, input=TEXTS, encoding_format="float")
    assert [item.embedding for item in answer.data] == [vector(SMALL, t) for t in TEXTS]
    assert [item.index for item in answer.data] == [0, 1, 2]
    assert len(answer.data[0].embedding) == 1536
    assert answer.model == SMALL
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == tokens_of(TEXTS)
    assert provider.served == 1


async def test_openai_sdk_default_base64_decodes_to_the_same_floats() -> None:
    async with fake("groq", {SMALL: FakeCaps()}) as (provider, _), openai_sdk(provider) as sdk:
        answer = await sdk.embeddings.create(model=SMALL, input=TEXTS)
        assert provider.requests[-1].body["encoding_format"] == "base64"
    assert [item.embedding for item in answer.data] == [vector(SMALL, t) for t in TEXTS]


async def test_openai_token_ids_and_dimensions() -> None:
    async with fake("openai", {SMALL: FakeCaps()}) as (provider, http):
        body = {"model": SMALL, "input": [[1, 2, 3], [4]], "dimensions": 64}
        response = await http.post(f"{provider.base_url}/embeddings", json=body)
    assert response.status_code == 200
    data = response.json()
    assert [len(item["embedding"]) for item in data["data"]] == [64, 64]
    assert data["data"][0]["embedding"] == vector(SMALL, (1, 2, 3), 64)
    assert data["usage"]["prompt_tokens"] == 4
    norm = sum(x * x for x in data["data"][1]["embedding"])
    assert norm == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": SMALL, "input": ""}, "input"),
        ({"model": SMALL, "input": []}, "input"),
        ({"model": SMALL, "input": ["a", 1]}, "input"),
        ({"model": SMALL, "input": ["a"] * 2049}, "input"),
        ({"model": SMALL, "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": SMALL, "input": "a", "dimensions": 1537}, "dimensions"),
        ({"model": ADA, "input": "a", "dimensions": 256}, "dimensions"),
    ],
)
async def test_openai_bad_bodies_are_400s_naming_the_field(body: Any, param: str) -> None:
    async with fake("openai", {SMALL: FakeCaps(), ADA: FakeCaps()}) as (provider, http):
        response = await http.post(f"{provider.base_url}/embeddings", json=body)
        assert provider.requests[-1].outcome == "bad_request"
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


async def test_an_embedding_models_own_size_is_not_refused() -> None:
    async with fake("openai", {ADA: FakeCaps()}) as (provider, http):
        body = {"model": ADA, "input": "a", "dimensions": 1536}
        response = await http.post(f"{provider.base_url}/embeddings", json=body)
    assert response.status_code == 200


async def test_groq_caps_embeddings_with_its_own_429(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with fake("groq", {SMALL: FakeCaps(rpm=1)}) as (provider, http):
        url = f"{provider.base_url}/embeddings"
        assert (await http.post(url, json={"model": SMALL, "input": "a"})).status_code == 200
        refused = await http.post(url, json={"model": SMALL, "input": "b"})
        assert provider.usage(key_id(KEY), SMALL).requests_minute == 1
        await trio.sleep(60)
        assert (await http.post(url, json={"model": SMALL, "input": "c"})).status_code == 200
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "retry-after" in refused.headers
    assert (provider.served, provider.rate_limited) == (2, 1)


async def test_a_token_cap_counts_every_input_and_refuses_whole() -> None:
    async with fake("openai", {SMALL: FakeCaps(tpm=5)}) as (provider, http):
        url = f"{provider.base_url}/embeddings"
        over = await http.post(url, json={"model": SMALL, "input": ["a" * 12, "b" * 9]})
        fits = await http.post(url, json={"model": SMALL, "input": ["a" * 12, "b"]})
        used = provider.usage(key_id(KEY), SMALL)
    assert (over.status_code, fits.status_code) == (429, 200)
    assert (used.requests_minute, used.tokens_minute) == (1, 4)


async def test_an_unknown_model_is_the_dialects_404() -> None:
    async with fake("openai", {SMALL: FakeCaps()}) as (provider, http):
        response = await http.post(
            f"{provider.base_url}/embeddings", json={"model": "nope", "input": "a"}
        )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


# -- Gemini ------------------------------------------------------------------------------------

GEMINI = "gemini-embedding-001"


def gemini_sdk(provider: FakeProvider, http: httpx.AsyncClient) -> Any:
    options = types.HttpOptions(
        base_url=provider.origin, api_version="v1beta", httpx_async_client=http
    )
    return genai.Client(api_key=KEY, http_options=options).aio


def batch(texts: list[str], model: str = GEMINI, **extra: Any) -> dict[str, Any]:
    return {
        "requests": [
            {"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **extra}
            for t in texts
        ]
    }


async def test_gemini_sdk_embeds_a_batch_with_a_shorter_size() -> None:
    async with fake("gemini", {GEMINI: FakeCaps()}) as (provider, http):
        config = types.EmbedContentConfig(output_dimensionality=768)
        answer = await gemini_sdk(provider, http).models.embed_content(
            model=GEMINI, contents=TEXTS, config=config
        )
        assert provider.requests[-1].path == f"/models/{GEMINI}:batchEmbedContents"
    assert answer.embeddings is not None
    assert [e.values for e in answer.embeddings] == [vector(GEMINI, t, 768) for t in TEXTS]


async def test_gemini_batch_answer_has_no_usage_and_embed_content_one_vector() -> None:
    async with fake("gemini", {GEMINI: FakeCaps()}) as (provider, http):
        url = f"{provider.base_url}/models/{GEMINI}"
        batched = await http.post(f"{url}:batchEmbedContents", json=batch(TEXTS))
        one = await http.post(f"{url}:embedContent", json={"content": {"parts": [{"text": "hi"}]}})
    assert set(batched.json()) == {"embeddings"}
    assert len(batched.json()["embeddings"][0]["values"]) == 3072
    types.EmbedContentResponse.model_validate(batched.json())
    assert one.json() == {"embedding": {"values": vector(GEMINI, "hi")}}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (batch(["a"] * 101), "at most 100 requests"),
        (batch(["a"], model="other"), "requests[0].model"),
        (batch([""]), "requests[0].content"),
        (batch(["a"], outputDimensionality=4000), "between 1 and 3072"),
    ],
)
async def test_gemini_bad_batches_are_400s(body: Any, words: str) -> None:
    async with fake("gemini", {GEMINI: FakeCaps()}) as (provider, http):
        url = f"{provider.base_url}/models/{GEMINI}:batchEmbedContents"
        response = await http.post(url, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert words in response.json()["error"]["message"]


async def test_gemini_429_names_the_embedding_quota() -> None:
    async with fake("gemini", {GEMINI: FakeCaps(rpd=1)}) as (provider, http):
        url = f"{provider.base_url}/models/{GEMINI}:batchEmbedContents"
        assert (await http.post(url, json=batch(TEXTS))).status_code == 200
        refused = await http.post(url, json=batch(TEXTS))
    error = refused.json()["error"]
    assert (refused.status_code, error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert "generativelanguage.googleapis.com/embed_content_free_tier_requests" in error["message"]
    [failure] = [d for d in error["details"] if d["@type"].endswith("QuotaFailure")]
    assert failure["violations"][0]["quotaId"].startswith("EmbedContentRequestsPerDay")
    assert classify(429, dict(refused.headers), refused.content, now=0.0).kind is (
        Kind.QUOTA_EXHAUSTED
    )


# -- Cohere ------------------------------------------------------------------------------------

EMBED = "embed-v4.0"
ENGLISH = "embed-english-v3.0"


async def test_cohere_sdk_embeds_floats_with_billed_tokens() -> None:
    async with fake("cohere", {EMBED: FakeCaps()}) as (provider, http):
        sdk = cohere.AsyncClientV2(
            api_key=KEY, base_url=provider.origin, httpx_client=http, max_retries=0
        )
        answer = await sdk.embed(
            model=EMBED,
            texts=TEXTS,
            input_type="search_document",
            embedding_types=["float"],
            output_dimension=256,
        )
    assert answer.embeddings.float_ == [vector(EMBED, t, 256) for t in TEXTS]
    assert answer.meta is not None
    assert answer.meta.billed_units is not None
    assert answer.meta.billed_units.input_tokens == tokens_of(TEXTS)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"texts": ["a"] * 97}, "at most 96 - received 97"),
        ({"input_type": None}, "input_type is required"),
        ({"embedding_types": ["int8"]}, "embedding_types"),
        ({"model": ENGLISH, "output_dimension": 256}, "output_dimension 256"),
    ],
)
async def test_cohere_bad_bodies_are_400s(extra: dict[str, Any], words: str) -> None:
    body = {
        "model": EMBED,
        "texts": ["a"],
        "input_type": "search_query",
        "embedding_types": ["float"],
        **extra,
    }
    async with fake("cohere", {EMBED: FakeCaps(), ENGLISH: FakeCaps()}) as (provider, http):
        response = await http.post(f"{provider.base_url}/v2/embed", json=body)
    assert response.status_code == 400
    assert words in response.json()["message"]


async def test_cohere_trial_429_is_its_message() -> None:
    async with fake("cohere", {EMBED: FakeCaps(rpm=1)}) as (provider, http):
        body = {
            "model": EMBED,
            "texts": ["a"],
            "input_type": "search_query",
            "embedding_types": ["float"],
        }
        assert (await http.post(f"{provider.base_url}/v2/embed", json=body)).status_code == 200
        refused = await http.post(f"{provider.base_url}/v2/embed", json=body)
    assert refused.status_code == 429
    assert "limited to 1 API calls / minute" in refused.json()["message"]


# -- faults ------------------------------------------------------------------------------------


def call_of(flavor: str) -> tuple[str, str, dict[str, Any]]:
    """(model, path below the base URL, body) of one embeddings call in `flavor`."""
    if flavor == "gemini":
        return GEMINI, f"/models/{GEMINI}:batchEmbedContents", batch(["a"])
    if flavor == "cohere":
        body = {
            "model": EMBED,
            "texts": ["a"],
            "input_type": "search_query",
            "embedding_types": ["float"],
        }
        return EMBED, "/v2/embed", body
    return SMALL, "/embeddings", {"model": SMALL, "input": "a"}


@pytest.mark.parametrize("flavor", ["openai", "openrouter", "gemini", "cohere"])
async def test_faults_on_the_embeddings_path_hit_only_embeddings(flavor: str) -> None:
    model, path, body = call_of(flavor)
    async with fake(flavor, {model: FakeCaps()}) as (provider, http):
        provider.faults.next(1, FaultKind.STATUS, status=503, path=EMBEDDINGS_PATH)
        provider.faults.next(1, FaultKind.STATUS, status=500)  # the chat path's, not ours
        failed = await http.post(provider.base_url + path, json=body)
        served = await http.post(provider.base_url + path, json=body)
        assert provider.faults.pending == 1
    assert (failed.status_code, served.status_code) == (503, 200)
    assert classify(503, dict(failed.headers), failed.content, now=0.0).kind is not Kind.SUCCESS


@pytest.mark.parametrize("flavor", ["groq", "gemini", "cohere"])
async def test_rate_limit_and_malformed_faults_speak_the_dialect(flavor: str) -> None:
    model, path, body = call_of(flavor)
    async with fake(flavor, {model: FakeCaps()}) as (provider, http):
        provider.faults.next(1, FaultKind.RATE_LIMIT, path=EMBEDDINGS_PATH)
        provider.faults.next(1, FaultKind.MALFORMED, path=EMBEDDINGS_PATH)
        limited = await http.post(provider.base_url + path, json=body)
        broken = await http.post(provider.base_url + path, json=body)
    assert limited.status_code == 429
    assert classify(429, dict(limited.headers), limited.content, now=0.0).kind is (
        Kind.RATE_LIMITED
    )
    assert broken.status_code == 200
    with pytest.raises(ValueError, match="Expecting value"):
        broken.json()


async def test_midstream_error_makes_an_embeddings_answer_a_500_after_admission() -> None:
    async with fake("openai", {SMALL: FakeCaps(rpm=5)}) as (provider, http):
        provider.faults.next(1, FaultKind.MIDSTREAM_ERROR, path=EMBEDDINGS_PATH)
        response = await http.post(
            f"{provider.base_url}/embeddings", json={"model": SMALL, "input": "a"}
        )
        assert provider.usage(key_id(KEY), SMALL).requests_minute == 1
    assert response.status_code == 500


# -- vectors -----------------------------------------------------------------------------------


def test_vectors_are_float32_unit_length_and_differ_by_input_and_model() -> None:
    first = vector(SMALL, "a")
    packed = struct.pack(f"<{len(first)}f", *first)
    assert list(struct.unpack(f"<{len(first)}f", base64.b64decode(base64.b64encode(packed)))) == (
        first
    )
    assert sum(x * x for x in first) == pytest.approx(1.0, abs=1e-5)
    assert first != vector(SMALL, "b")
    assert first[:8] != vector(GEMINI, "a")[:8]
    assert len(vector("some-unknown-model", "a")) == 8


def test_a_request_counts_characters_over_four_and_token_ids_one_each() -> None:
    request = EmbedRequest("m", ("abcde", "ab", (1, 2, 3)))
    assert request.tokens == 2 + 1 + 3
