"""``POST /v1/embeddings`` end to end: the openai SDK through freellm, in front of fake
OpenAI-dialect, Gemini and Cohere servers that embed (and refuse what the real ones refuse).

Every answer is validated against the SDK's own ``CreateEmbeddingResponse``; the vectors are
the ones the fakes promise (:func:`freellm.sim.fakes.embeddings.vector`), so a vector that went
to the wrong input, the wrong model or the wrong size shows. (Named ``_door`` beside
``tests/core/test_embeddings.py``: pytest imports test modules by their base name.)
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import openai
import pytest
from harness import CLIENT_GENERATORS, Proxy, config_text, running_proxy
from openai.types import CreateEmbeddingResponse

from freellm.sim.fakes import EMBEDDINGS_PATH, FakeCaps, FakeProvider, FaultKind, open_fake_provider
from freellm.sim.fakes.embeddings import vector

pytestmark = CLIENT_GENERATORS  # the SDK's generators: see harness.py

TEXTS = ["the quick brown fox", "jumps over the lazy dog", "and again"]


@attrs.frozen
class Door:
    """One provider of the catalog, its embedding model and its fake."""

    flavor: str  # the fake's
    provider: str  # the catalog's
    model: str
    table: str  # the model's [[providers.X.models]] entry, less its id

    @property
    def target(self) -> str:
        return f"{self.provider}/{self.model}"

    def models_table(self) -> str:
        return f'[[providers.{self.provider}.models]]\nid = "{self.model}"\n{self.table}\n'


OPENAI = Door(
    "openai",
    "github",
    "openai/text-embedding-3-small",
    'kind = "embedding"\nrpm = 100\ncontext = 8191\ndimensions = 1536\n'
    "custom_dimensions = true\nmax_batch = 2048",
)
GEMINI = Door(
    "gemini",
    "google",
    "gemini-embedding-001",
    'kind = "embedding"\nrpm = 100\ncontext = 2048\ndimensions = 3072\n'
    "custom_dimensions = true\nmax_batch = 100",
)
COHERE = Door(
    "cohere",
    "cohere",
    "embed-english-v3.0",
    'kind = "embedding"\nrpm = 100\ncontext = 512\ndimensions = 1024\nmax_batch = 96',
)
DOORS = [
    pytest.param(OPENAI, id="openai"),
    pytest.param(GEMINI, id="gemini"),
    pytest.param(COHERE, id="cohere"),
]


@attrs.frozen
class Running:
    proxy: Proxy
    fakes: Mapping[str, FakeProvider]  # by catalog provider

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.proxy.base_url, api_key=self.proxy.key, max_retries=0
        )

    async def post(self, body: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.proxy.key}"}
        async with httpx.AsyncClient(timeout=30) as http:
            return await http.post(f"{self.proxy.base_url}/embeddings", json=body, headers=headers)


@pytest.fixture
def embeddings_proxy(tmp_path: Path) -> Callable[..., Any]:
    """freellm in front of one fake per door, the embeddings chain in the doors' order."""

    @asynccontextmanager
    async def start(doors: Sequence[Door], keys: int = 1) -> AsyncIterator[Running]:
        async with AsyncExitStack() as stack:
            fakes: dict[str, FakeProvider] = {}
            secrets: dict[str, list[str]] = {}
            for door in doors:
                secrets[door.provider] = [f"{door.provider}-key-{n}" for n in range(keys)]
                fakes[door.provider] = await stack.enter_async_context(
                    open_fake_provider(
                        door.flavor,
                        keys=secrets[door.provider],
                        models={door.model: FakeCaps()},
                    )
                )
            tables = {door.provider: door.models_table() for door in doors}
            chain = ", ".join(f'"{door.target}"' for door in doors)
            config = config_text(fakes, tables, ["google/gemini-2.5-flash"])
            config += f"\n[router.chains]\nembeddings = [{chain}]\n"
            proxy = await stack.enter_async_context(
                running_proxy(tmp_path / "data", config, secrets)
            )
            yield Running(proxy, fakes)

    return start


def checked(raw: Any) -> CreateEmbeddingResponse:
    """``raw`` (an answer's JSON) as the SDK's type, with nothing the type does not name."""
    answer = CreateEmbeddingResponse.model_validate(raw)
    assert set(raw) == {"object", "data", "model", "usage"}
    for item in raw["data"]:
        assert set(item) == {"object", "index", "embedding"}
    return answer


@pytest.mark.parametrize("door", DOORS)
async def test_auto_embeds_with_the_embeddings_chains_first_model(
    embeddings_proxy: Callable[..., Any], door: Door
) -> None:
    async with embeddings_proxy([door]) as running:
        client = running.client()
        raw = await client.embeddings.with_raw_response.create(
            model="auto", input=TEXTS, encoding_format="float"
        )
        await client.close()
    answer = checked(raw.http_response.json())
    assert [item.embedding for item in answer.data] == [vector(door.model, t) for t in TEXTS]
    assert [item.index for item in answer.data] == [0, 1, 2]
    assert answer.model == door.model
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens
    headers = raw.http_response.headers
    assert headers["x-routed-via"] == door.target
    assert headers["x-request-id"].startswith("req_")
    assert headers["x-fallback-trail"] == f"{door.target}=ok"
    assert "x-fallback-attempts" not in headers


@pytest.mark.parametrize("door", DOORS)
async def test_the_sdks_default_base64_gives_the_same_floats(
    embeddings_proxy: Callable[..., Any], door: Door
) -> None:
    async with embeddings_proxy([door]) as running:
        client = running.client()
        answer = await client.embeddings.create(model=door.model, input=TEXTS)
        await client.close()
        sent = running.fakes[door.provider].requests[-1].body
    # The SDK asked for base64 (its default) and decoded it; the provider was asked for floats.
    assert [item.embedding for item in answer.data] == [vector(door.model, t) for t in TEXTS]
    assert sent.get("encoding_format", "float") == "float"


async def test_base64_asked_for_is_little_endian_float32(
    embeddings_proxy: Callable[..., Any],
) -> None:
    async with embeddings_proxy([GEMINI]) as running:
        response = await running.post(
            {"model": "auto", "input": "hello", "encoding_format": "base64"}
        )
    assert response.status_code == 200
    [item] = response.json()["data"]
    packed = base64.b64decode(item["embedding"])
    floats = list(struct.unpack(f"<{len(packed) // 4}f", packed))
    assert floats == vector(GEMINI.model, "hello")
    assert response.json()["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize(("door", "size"), [(OPENAI, 256), (GEMINI, 768)], ids=["openai", "gemini"])
async def test_dimensions_reach_a_model_that_gives_shorter_vectors(
    embeddings_proxy: Callable[..., Any], door: Door, size: int
) -> None:
    async with embeddings_proxy([door]) as running:
        client = running.client()
        answer = await client.embeddings.create(
            model="auto", input=TEXTS, dimensions=size, encoding_format="float"
        )
        await client.close()
    assert [item.embedding for item in answer.data] == [vector(door.model, t, size) for t in TEXTS]


async def test_dimensions_a_model_cannot_give_are_a_400_naming_them(
    embeddings_proxy: Callable[..., Any],
) -> None:
    async with embeddings_proxy([COHERE]) as running:
        refused = await running.post({"model": "auto", "input": "a", "dimensions": 256})
        native = await running.post({"model": "auto", "input": "a", "dimensions": 1024})
        assert running.fakes["cohere"].requests[-1].body.get("output_dimension") is None
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "dimensions"
    assert native.status_code == 200


async def test_a_rate_limited_key_fails_over_to_another_key_of_the_same_model(
    embeddings_proxy: Callable[..., Any],
) -> None:
    async with embeddings_proxy([OPENAI], keys=2) as running:
        fake = running.fakes["github"]
        fake.faults.next(1, FaultKind.RATE_LIMIT, path=EMBEDDINGS_PATH, retry_after=30)
        client = running.client()
        raw = await client.embeddings.with_raw_response.create(
            model="auto", input=TEXTS, encoding_format="float"
        )
        await client.close()
        served_by = [r.key_id for r in fake.requests if r.outcome in ("ok", "rate_limited")]
    answer = checked(raw.http_response.json())
    assert [item.embedding for item in answer.data] == [vector(OPENAI.model, t) for t in TEXTS]
    headers = raw.http_response.headers
    assert headers["x-fallback-attempts"] == "1"
    assert headers["x-fallback-trail"] == f"{OPENAI.target}=429,{OPENAI.target}=ok"
    assert len(set(served_by)) == 2


async def test_a_rate_limited_model_is_a_429_not_another_models_vectors(
    embeddings_proxy: Callable[..., Any],
) -> None:
    async with embeddings_proxy([GEMINI, OPENAI]) as running:
        running.fakes["google"].faults.next(
            1, FaultKind.RATE_LIMIT, path=EMBEDDINGS_PATH, retry_after=30
        )
        client = running.client()
        with pytest.raises(openai.RateLimitError) as caught:
            await client.embeddings.create(model="auto", input=TEXTS, encoding_format="float")
        await client.close()
        assert not running.fakes["github"].requests
    response = caught.value.response
    assert response.json()["error"]["code"] == "no_capacity"
    assert int(response.headers["retry-after"]) > 0
    assert response.headers["x-fallback-trail"] == f"{GEMINI.target}=429"
    assert response.headers["x-request-id"].startswith("req_")


async def test_a_model_named_is_the_one_that_answers(
    embeddings_proxy: Callable[..., Any],
) -> None:
    async with embeddings_proxy([GEMINI, OPENAI]) as running:
        response = await running.post({"model": OPENAI.model, "input": "a"})
    assert response.status_code == 200
    assert checked(response.json()).model == OPENAI.model
    assert response.headers["x-routed-via"] == OPENAI.target


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "auto", "input": ""}, "input"),
        ({"model": "auto", "input": ["a", 2]}, "input[1]"),
        ({"model": "auto", "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "auto", "input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a"}, "model"),
        # Gemini reads text only, and takes at most 100 texts a call.
        ({"model": "auto", "input": [[1, 2, 3]]}, "input"),
        ({"model": "auto", "input": ["a"] * 101}, "input"),
    ],
)
async def test_what_cannot_be_embedded_is_a_400_naming_the_field(
    embeddings_proxy: Callable[..., Any], body: Any, param: str
) -> None:
    async with embeddings_proxy([GEMINI]) as running:
        response = await running.post(body)
        assert not running.fakes["google"].requests
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


async def test_a_chat_model_does_not_embed_and_an_embedding_model_does_not_chat(
    embeddings_proxy: Callable[..., Any],
) -> None:
    async with embeddings_proxy([OPENAI]) as running:
        embed = await running.post({"model": "github/openai/gpt-4.1", "input": "a"})
        client = running.client()
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model=OPENAI.model, messages=[{"role": "user", "content": "hi"}]
            )
        await client.close()
        assert not running.fakes["github"].requests
    assert embed.status_code == caught.value.status_code == 400
    assert embed.json()["error"]["code"] == "no_suitable_model"
    assert "embedding model" in embed.json()["error"]["message"]
    assert "not a chat model" in caught.value.message
