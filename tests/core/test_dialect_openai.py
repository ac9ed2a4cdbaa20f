"""The OpenAI dialect: bodies going up, answers and streams coming back."""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freellm.core.dialects.adapters import OpenAIAdapter
from freellm.core.dialects.openai import (
    StreamError,
    StreamFold,
    Usage,
    normalize_response,
    prepare_body,
    usage_of,
)
from freellm.core.sse import Decoder
from freellm.core.tokens import estimate_text
from sse_feed import feed


def test_the_body_goes_up_untouched_but_for_the_model_and_usage() -> None:
    body = {"model": "auto", "messages": [], "seed": 7, "x_vendor": {"a": 1}}
    up = prepare_body(body, "llama", stream=True, stream_options=True)
    assert up == {**body, "model": "llama", "stream_options": {"include_usage": True}}
    assert body["model"] == "auto"  # the client's body is not changed
    no_options = prepare_body(
        {**body, "stream_options": {}}, "m", stream=True, stream_options=False
    )
    assert "stream_options" not in no_options


def test_answers_are_brought_to_openai_shape() -> None:
    data = {
        "choices": [
            {"message": {"role": "assistant", "content": [{"type": "text", "text": "a"},
                                                           {"type": "text", "text": "b"}]}},
            {"message": {"role": "assistant", "content": None}},
            {"message": {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}},
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }  # fmt: skip
    out = normalize_response(data)
    messages = [choice["message"] for choice in out["choices"]]
    assert [m["content"] for m in messages] == ["ab", "", None]
    assert all(m["refusal"] is None for m in messages)
    assert out["object"] == "chat.completion"
    assert usage_of(out) == Usage(3, 4)


def chunk(content: str) -> str:
    return json.dumps({"id": "c", "choices": [{"index": 0, "delta": {"content": content}}]})


STREAM = (
    "".join(f"data: {chunk(word)}\n\n" for word in ["Hello", " wor", "ld"])
    + 'data: {"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}\n\n'
    + "data: [DONE]\n\n"
).encode()


def fold_all(data: bytes, cuts: list[int], *, wants_usage: bool) -> tuple[bytes, StreamFold]:
    fold = StreamFold(client_wants_usage=wants_usage)
    return feed(fold, data, cuts), fold


@given(st.lists(st.integers(0, len(STREAM)), max_size=10), st.booleans())
def test_any_split_of_a_stream_folds_to_the_same_output(cuts: list[int], wants: bool) -> None:
    out, fold = fold_all(STREAM, cuts, wants_usage=wants)
    whole, _ = fold_all(STREAM, [], wants_usage=wants)
    assert out == whole
    assert fold.done
    assert fold.usage == Usage(5, 3)
    # The streamed text, estimated with the one estimator, as a whole.
    assert fold.completion_tokens == estimate_text("Hello world")
    assert (b'"usage"' in out) is wants  # the usage chunk only when the client asked


def test_a_mid_stream_error_event_raises_with_the_providers_message() -> None:
    fold = StreamFold(client_wants_usage=False)
    event = Decoder().feed(
        b'data: {"error": {"message": "upstream overloaded"}, "choices": '
        b'[{"finish_reason": "error"}]}\n\n'
    )[0]
    with pytest.raises(StreamError, match=r"^upstream overloaded$"):
        fold.step(event)


@pytest.mark.parametrize("first", [b"{not json", b"[1, 2]", b""])
def test_a_first_chunk_that_is_not_a_json_object_breaks_the_stream(first: bytes) -> None:
    # Nothing reached the client yet: the attempt is broken and the request fails over.
    fold = StreamFold(client_wants_usage=False)
    (event,) = Decoder().feed(b"data: " + first + b"\n\n")
    with pytest.raises(ValueError):  # noqa: PT011 - what the attempt catches, whatever the text
        fold.step(event)


def test_after_the_first_chunk_chunks_pass_through_unparsed() -> None:
    fold = StreamFold(client_wants_usage=False)
    first, later = Decoder().feed(f"data: {chunk('a')}\n\ndata: {{half\n\n".encode())
    assert fold.step(first) == [f"data: {chunk('a')}\n\n".encode()]
    assert fold.step(later) == [b"data: {half\n\n"]  # the client has the stream: no failover


def test_a_2xx_answer_that_carries_an_error_is_broken() -> None:
    answer: dict[str, Any] = {
        "object": "chat.completion",
        "choices": [{"message": {"role": "assistant", "content": ""}, "finish_reason": "error"}],
        "error": {"code": "server_error", "message": "Provider disconnected unexpectedly"},
    }
    adapter = OpenAIAdapter()
    with pytest.raises(ValueError, match="carries an error"):
        adapter.answer(json.dumps(answer).encode(), model="m", created=0)
    answer["error"] = None  # some providers send it, empty, with every answer
    assert adapter.answer(json.dumps(answer).encode(), model="m", created=0)[0]["choices"]
