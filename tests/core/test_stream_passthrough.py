"""The stream fast path: whole events passed on as they came must give the client exactly what
event-by-event folding gives, however the stream is cut into reads.

:meth:`StreamFold.passthrough` takes the plain events at the start of a read in one step; the
property runs the same reads through an exchange with it and without it (patched out) and
compares everything the client and the ledger see.
"""

from __future__ import annotations

import itertools
import json
from typing import Any
from unittest import mock

from hypothesis import example, given
from hypothesis import strategies as st
from test_exchange import CATALOG, KEYS, NOW, admitted

from freellm.core.attempt import DEFAULT_BOUNDS, FINAL, Bounds
from freellm.core.chat import ChatShape, inspect_request
from freellm.core.dialects.openai import StreamFold
from freellm.core.exchange import Exchange, Send
from freellm.core.router import RouterState, Topology


def chunk(content: Any, **extra: Any) -> bytes:
    delta = {"content": content}
    data = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
    return b"data: " + json.dumps({**data, **extra}, ensure_ascii=False).encode() + b"\n\n"


USAGE_ONLY = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}\n\n'
TEXT = st.text(max_size=12)  # quotes, backslashes, "data: ", line ends, anything
EVENTS = st.one_of(
    TEXT.map(chunk),  # the common case, most of the time
    TEXT.map(chunk),
    TEXT.map(chunk),
    TEXT.map(lambda text: chunk(text).replace(b"\n\n", b"\r\n\r\n")),
    TEXT.map(lambda text: chunk(text).replace(b"data: ", b"data:")),
    TEXT.map(lambda text: b": OPENROUTER PROCESSING\n\n" + chunk(text)),
    TEXT.map(lambda text: chunk([{"type": "text", "text": text}])),  # content to normalise
    st.just(USAGE_ONLY),
    st.just(b'data: {"id":"c",\ndata: "choices":[{"index":0,"delta":{"content":"two"}}]}\n\n'),
    st.just(b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"\xff\xfe"}}]}\n\n'),
    st.just(b'data: {"error":{"message":"overloaded"}}\n\n'),
    st.just(b"data: not json\n\n"),
    st.just(b"data: [DONE]\n\n"),
)


def client_bytes(reads: list[bytes], *, wants_usage: bool, bounds: Bounds) -> tuple[Any, ...]:
    """What one stream answered with ``reads`` gives the client, and what it settles."""
    state = RouterState(Topology(CATALOG, KEYS))
    body: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": wants_usage},
    }
    checked = inspect_request(body)
    assert isinstance(checked, ChatShape)
    ex = Exchange(state, checked, body, id="r", session=None, now=NOW, bounds=bounds)
    _, attempt = admitted(state, ex)
    effects = ex.head(200, {"content-type": "text/event-stream"}, now=NOW)
    for read in reads:
        if attempt.phase in FINAL:
            break
        effects += ex.data(read, now=NOW)
    if attempt.phase not in FINAL:
        effects += ex.end(now=NOW)
    sent = b"".join(e.data for e in effects if isinstance(e, Send))
    outcome = attempt.outcome
    return sent, outcome and (outcome.kind, outcome.message), attempt.usage, attempt.tokens()


@example(
    events=[USAGE_ONLY, b"data: not json\n\n"], cuts=[], wants_usage=False, bounds=DEFAULT_BOUNDS
)
@given(
    events=st.lists(EVENTS, min_size=1, max_size=12),
    cuts=st.lists(st.integers(0, 4000), max_size=6),
    wants_usage=st.booleans(),
    bounds=st.sampled_from([DEFAULT_BOUNDS, Bounds(max_event_bytes=120)]),
)
def test_passing_plain_events_whole_changes_nothing_the_client_or_the_ledger_sees(
    events: list[bytes], cuts: list[int], wants_usage: bool, bounds: Bounds
) -> None:
    stream = b"".join(events)
    points = sorted({0, *(cut % (len(stream) + 1) for cut in cuts), len(stream)})
    reads = [stream[a:b] for a, b in itertools.pairwise(points) if b > a]
    fast = client_bytes(reads, wants_usage=wants_usage, bounds=bounds)
    with mock.patch.object(StreamFold, "passthrough", return_value=0):
        slow = client_bytes(reads, wants_usage=wants_usage, bounds=bounds)
    assert fast == slow


def test_a_read_of_plain_events_passes_whole_and_stops_at_the_first_marker() -> None:
    fold = StreamFold(client_wants_usage=False)
    plain = chunk("a") + chunk("b") + chunk("c")
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":3}}\n\n'
    out: list[bytes] = []
    taken = fold.passthrough(plain + usage + b"data: [DONE]\n\n", out)
    assert taken == len(plain)  # the first chunk read whole, the next two passed as they came
    assert b"".join(out) == plain
    assert fold.chunks == 3
    assert not fold.done
