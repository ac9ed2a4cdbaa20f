"""What a fake embeds, whatever its dialect: the neutral request, its vectors, its token count.

Each dialect reads its embeddings call into an :class:`EmbedRequest` (see
:mod:`.embedding_wires`) and writes the vectors in its own wire format. The fake's router
(:mod:`.app`) counts and caps the call like a chat request, on the endpoint named the OpenAI way,
:data:`EMBEDDINGS_PATH`, whatever the dialect's own path: fault plans aim at it with
``path=EMBEDDINGS_PATH``.

Counting and vectors (exact, so tests can predict every number):

- Tokens: each text's characters divided by 4, rounded up, at least 1 (the chat rule); a
  token-id array counts its length. A call counts as one request.
- A model's vectors have the size :data:`MODELS` gives it (the real model's size), else
  :data:`DEFAULT_DIMENSIONS`. A model that :data:`MODELS` marks Matryoshka-trained (and any
  model it does not know) gives shorter vectors on request; the others refuse a size of their
  own, as the real APIs do.
- :func:`vector` is the vector of one input: floats in [-1, 1] drawn from SHA-256 of the model
  and the input, cut to the size asked for and scaled to unit length, each a float32 value (so
  base64's float32 carries it exactly). The same input gives the same vector on every fake.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Final

import attrs

from freellm.sim.fakes.replies import count_tokens

EMBEDDINGS_PATH: Final = "/embeddings"
DEFAULT_DIMENSIONS: Final = 8
MODELS: Final[Mapping[str, tuple[int, bool]]] = {
    # model id: (native size, Matryoshka: shorter vectors on request)
    "gemini-embedding-001": (3072, True),
    "text-embedding-3-small": (1536, True),
    "text-embedding-3-large": (3072, True),
    "openai/text-embedding-3-small": (1536, True),
    "openai/text-embedding-3-large": (3072, True),
    "text-embedding-ada-002": (1536, False),
    "mistral-embed": (1024, False),
    "embed-v4.0": (1536, True),
    "embed-english-v3.0": (1024, False),
    "embed-multilingual-v3.0": (1024, False),
    "nvidia/llama-3.2-nv-embedqa-1b-v2": (2048, True),
    "baai/bge-m3": (1024, False),
    "@cf/baai/bge-m3": (1024, False),
    "@cf/baai/bge-base-en-v1.5": (768, False),
}

Input = str | tuple[int, ...]


@attrs.frozen
class EmbedRequest:
    """One embeddings call in the fakes' neutral form: `inputs` in order, the vector size asked
    for (`dimensions`, None: the model's own), how the answer is written (`base64`: as
    OpenAI's little-endian float32, else floats) and whether it is Gemini's one-text
    ``:embedContent`` (`single`)."""

    model: str
    inputs: tuple[Input, ...]
    dimensions: int | None = None
    base64: bool = False
    single: bool = False

    @property
    def tokens(self) -> int:
        """What the call counts against token caps (see the module docstring)."""
        return sum(
            len(item) if isinstance(item, tuple) else count_tokens(len(item))
            for item in self.inputs
        )


def native_size(model: str) -> int:
    return MODELS.get(model, (DEFAULT_DIMENSIONS, True))[0]


def size_problem(model: str, dimensions: int | None) -> str | None:
    """Why `model` cannot give vectors of `dimensions` (None: it can)."""
    if dimensions is None:
        return None
    size, matryoshka = MODELS.get(model, (DEFAULT_DIMENSIONS, True))
    if not matryoshka and dimensions != size:
        return f"{model} does not support specifying dimensions."
    if not 1 <= dimensions <= size:
        return f"dimensions must be between 1 and {size} for {model}."
    return None


def _float32(value: float) -> float:
    packed: tuple[float] = struct.unpack("<f", struct.pack("<f", value))
    return packed[0]


def vector(model: str, item: Input, dimensions: int | None = None) -> list[float]:
    """The vector the fakes give `item` on `model` (see the module docstring)."""
    size = dimensions or native_size(model)
    key = item if isinstance(item, str) else json.dumps(list(item))
    raw: list[float] = []
    block = 0
    while len(raw) < size:
        digest = hashlib.sha256(f"{model}\x00{block}\x00{key}".encode()).digest()
        raw += [(word / 0xFFFFFFFF) * 2 - 1 for word in struct.unpack("<8I", digest)]
        block += 1
    raw = raw[:size]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [_float32(x / norm) for x in raw]


def vectors(request: EmbedRequest) -> list[list[float]]:
    return [vector(request.model, item, request.dimensions) for item in request.inputs]


def text_of_parts(parts: Sequence[object]) -> str | None:
    """The text of Gemini content parts (None when a part is not text)."""
    texts = []
    for part in parts:
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            return None
        texts.append(part["text"])
    return "".join(texts)
