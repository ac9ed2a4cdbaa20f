"""OpenAI's chat wire format as providers send it, for the tests that script a provider."""

from __future__ import annotations

import json
from typing import Any, Final

DONE: Final = b"data: [DONE]\n\n"
USAGE_CHUNK: Final = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
    b'"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}\n\n'
)


def completion(text: str = "hi") -> dict[str, Any]:
    """A ``chat.completion`` answering ``text``, with usage (7 + 3 tokens)."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


def chunk(text: str) -> bytes:
    """One SSE event of a ``chat.completion.chunk`` carrying ``text``."""
    data = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    data["choices"] = [{"index": 0, "delta": {"content": text}, "finish_reason": None}]
    return b"data: " + json.dumps(data).encode() + b"\n\n"
