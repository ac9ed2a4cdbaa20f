"""What a fake's router asks of a dialect: how a wire format names things and words its answers.

The router (:mod:`freellm.sim.fakes.app`) owns everything dialects share: keys, recording,
counters, caps, fault timing. A dialect owns the wire: which paths exist and what they mean
(:meth:`Dialect.route`), where the key is (:meth:`Dialect.credential`), how a body is checked
(:meth:`Dialect.parse`), and the JSON and SSE of every answer and refusal.

Requests are told apart by *endpoint*, named the OpenAI way whatever the dialect's own paths:
``/chat/completions`` (:data:`~freellm.sim.fakes.faults.CHAT_PATH`), ``/models`` and
``/models/{id}``. Fault plans match on these names, so ``FaultKind.STATUS`` on the default path
hits Gemini's ``:generateContent`` and Cohere's ``/v2/chat`` alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

from freellm.sim.fakes.answers import Answer, ErrorAnswer
from freellm.sim.fakes.caps import Dimension, Standing, Violation, WindowName
from freellm.sim.fakes.exchange import Headers
from freellm.sim.fakes.faults import CHAT_PATH

MODELS_PATH = "/models"
Standings = Mapping[tuple[Dimension, WindowName], Standing]


@attrs.frozen
class Call:
    """What a request asks for: its `endpoint` (see above), the `model` it names (chat requests
    and ``/models/{id}``), whether the answer is `streamed` (several responses) and whether they
    come as SSE events (`sse`; else one JSON body).
    """

    endpoint: str
    model: str | None = None
    streamed: bool = False
    sse: bool = False


@attrs.frozen
class Credential:
    """The secret a request carries (None: none) and the header it came in (None: elsewhere)."""

    secret: str | None
    header: str | None


def bearer(headers: Mapping[str, str]) -> Credential:
    """The key of an ``Authorization: Bearer <key>`` header (the OpenAI and Cohere way)."""
    value = headers.get("authorization")
    if value is None:
        return Credential(None, None)
    scheme, _, rest = value.partition(" ")
    return Credential(rest.strip() if scheme.lower() == "bearer" else None, "authorization")


def chat_call(body: Any) -> Call:
    """A chat call whose model and ``stream`` flag are in the JSON `body` (OpenAI, Cohere)."""
    model = body.get("model") if isinstance(body, dict) else None
    stream = isinstance(body, dict) and body.get("stream") is True
    return Call(CHAT_PATH, model if isinstance(model, str) else None, stream, stream)


class ChatLike(Protocol):
    """What the router reads of a checked chat request: the model it asks for."""

    @property
    def model(self) -> str: ...


class Dialect(Protocol):
    """One wire format. `prefix` is the base URL's path; `default_models` are served when the
    fake is given none; `reported` lists the caps its rate-limit headers describe.
    """

    name: str
    prefix: str
    default_models: tuple[str, ...]
    reported: tuple[tuple[Dimension, WindowName], ...]

    def route(self, method: str, path: str, query: Mapping[str, str], body: Any) -> Call | None:
        """The call `method` `path` (relative to `prefix`) makes, or None for an unknown URL."""

    def credential(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Credential: ...

    def unknown_url(self, method: str, path: str) -> ErrorAnswer: ...

    def unauthorized(self, sent: bool) -> ErrorAnswer:
        """The refusal of a key that is wrong (`sent`) or missing."""

    def model_not_found(self, model: str) -> ErrorAnswer: ...

    def server_error(self, status: int) -> ErrorAnswer: ...

    def rate_limited(
        self,
        violation: Violation,
        model: str,
        standings: Standings,
        epoch_now: float,
        *,
        hints: bool = True,
    ) -> ErrorAnswer:
        """The 429 for `violation`; without `hints`, with no word of when to retry."""

    def standing_headers(self, standings: Standings) -> Headers: ...

    def model_list(self, models: Sequence[str]) -> Any: ...

    def model_info(self, model: str) -> Any: ...

    def parse(self, call: Call, body: Any) -> ChatLike | ErrorAnswer:
        """The chat request in `body`, or the dialect's refusal of it (a 400 or the like)."""

    def answer(self, request: Any, serial: int, created: int) -> Answer:
        """The answer to a request from :meth:`parse`, numbered `serial`, made at `created`."""

    def malformed(self, call: Call) -> tuple[bytes, bytes]:
        """The content type and body of a 200 that is not the JSON it claims to be."""
