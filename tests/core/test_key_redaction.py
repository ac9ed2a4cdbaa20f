"""A provider that quotes the key it was sent (``Incorrect API key provided: ...``) never gets it
past freellm: the attempt's outcome, which the client's error, the request log and the key's
health note are made of, has it taken out, whatever the dialect, the status or where the key
stands in the message (even cut short at the message's limit)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hypothesis import assume, example, given
from hypothesis import strategies as st

from freellm.core.attempt import Attempt
from freellm.core.catalog import Catalog, apply_config
from freellm.core.chat import ChatShape, inspect_request
from freellm.core.exchange import Exchange, Send, Start
from freellm.core.outcome import Kind
from freellm.core.router import Key, RouterState, Topology
from openai_wire import chunk

NOW = 1_780_000_000.0
CONFIG = {
    "providers": {
        "alpha": {  # the key in `Authorization: Bearer ...`
            "dialect": "openai",
            "base_url": "http://127.0.0.1:9/alpha",
            "models": [{"id": "m", "context": 32_000}],
        },
        "gem": {  # the key in `x-goog-api-key`
            "dialect": "gemini",
            "base_url": "http://127.0.0.1:9/gem",
            "models": [{"id": "m", "context": 32_000}],
        },
    },
}
CATALOG = apply_config(Catalog(), CONFIG)

# Keys as freellm takes them (visible ASCII), long enough not to hide inside "[redacted]"; the
# provider's own words drawn from characters no key here has, so that any piece of the key
# found in the message can only have come from the key.
KEYS = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=" ,;()"),
    min_size=12,
    max_size=80,
)
WORDS = st.text(st.sampled_from(" ,;()"), max_size=600)


def attempt_for(provider: str, secret: str, *, stream: bool) -> tuple[Exchange, Attempt]:
    body: dict[str, Any] = {
        "model": f"{provider}/m",
        "messages": [{"role": "user", "content": "hi"}],
    }
    if stream:
        body["stream"] = True
    shape = inspect_request(body)
    assert isinstance(shape, ChatShape)
    state = RouterState(Topology(CATALOG, (Key(provider, "k1", secret),)))
    ex = Exchange(state, shape, body, id="req_1", session=None, now=NOW)
    for slot in ex.plan:
        ex.admit(slot, state, now=NOW)
        if ex.attempt is not None:
            return ex, ex.attempt
    raise AssertionError("nothing admitted")


def written(effects: Sequence[object]) -> bytes:
    return b"".join(e.data for e in effects if isinstance(e, Send))


@given(
    provider=st.sampled_from(["alpha", "gem"]),
    secret=KEYS,
    before=WORDS,
    after=WORDS,
    status=st.sampled_from([400, 401, 403, 429, 500, 503]),
    as_json=st.booleans(),
)
@example("alpha", "sk-cut.short.at-the-limit", "," * 490, "", 401, True)  # 10 of its characters
@example("gem", "AIza.cut.short.at-the-limit", "(" * 495, "", 400, False)  # 5 of them
def test_an_error_answer_quoting_the_key_keeps_no_piece_of_it(
    provider: str, secret: str, before: str, after: str, status: int, as_json: bool
) -> None:
    assume("redacted" not in secret)
    ex, attempt = attempt_for(provider, secret, stream=False)
    quoted = f"{before}{secret}{after}"
    body = json.dumps({"error": {"message": quoted}}) if as_json else quoted
    effects = ex.head(status, {}, now=NOW)
    effects += ex.data(body.encode(), now=NOW)
    effects += ex.end(now=NOW) if attempt.reading else []
    assert attempt.outcome is not None
    message = attempt.outcome.message
    assert secret[:8] not in message
    assert secret[:4] not in message[-len(secret) :]  # nor its start, where a message is cut
    assert "[redacted]" in message
    assert secret[:8] not in written(effects).decode()  # a 400 goes back to the client


def _mid_stream_failure(secret: str, before: str) -> tuple[str, Exchange, Attempt]:
    """A stream on ``secret`` whose provider fails after one chunk, quoting the key: what the
    client got, the exchange and its attempt."""
    ex, attempt = attempt_for("alpha", secret, stream=True)
    effects = ex.head(200, {"content-type": "text/event-stream"}, now=NOW)
    failure = json.dumps({"error": {"message": f"{before}Bearer {secret}"}})
    effects += ex.data(chunk("Hi") + f"data: {failure}\n\n".encode(), now=NOW)
    assert any(isinstance(e, Start) for e in effects)
    return written(effects).decode(), ex, attempt


@given(secret=KEYS, before=WORDS)
def test_an_error_event_mid_stream_quoting_the_key_keeps_no_piece_of_it(
    secret: str, before: str
) -> None:
    assume("redacted" not in secret)
    # What freellm writes around the key (with another key in its place) must not hold the
    # key's first bytes by chance ("response..." is in "broken_response").
    assume(secret[:8] not in _mid_stream_failure("~" * len(secret), before)[0])
    sent, ex, attempt = _mid_stream_failure(secret, before)
    assert attempt.outcome is not None
    assert attempt.outcome.kind is Kind.BROKEN_RESPONSE
    assert sent.startswith("data: ")  # the response started with the chunk before the error
    assert "event: error" in sent
    assert secret[:8] not in sent
    assert secret[:8] not in attempt.outcome.message
    assert secret[:8] not in (ex.error or "")
