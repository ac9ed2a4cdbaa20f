"""The fake provider: a raw ASGI router with its caps, faults, counters and record of requests.

Everything that depends on the wire format is the flavor's dialect (:mod:`.dialect`): OpenAI's
(:mod:`.openai`), Gemini's (:mod:`.gemini`) or Cohere's (:mod:`.cohere`). One request goes
through these steps, in order (each may answer and stop):

1. the dialect routes the method and path (below the base URL's path) to an endpoint, else the
   dialect's 404;
2. authentication, when the fake was given keys: the key where the dialect reads it, else the
   dialect's refusal of a wrong or missing key;
3. the fault plan's draw for the endpoint (see :mod:`.faults`): wait ``seconds``, then act out
   the fault;
4. for chat: the dialect checks the body (400), the model must exist (404), the dialect makes
   the answer, and the caps are checked with the answer's exact tokens (429, nothing counted);
   embeddings go the same way through the dialect's embeddings wire (:mod:`.embedding_wires`),
   counted by their inputs' tokens (:mod:`.embeddings`);
5. the admitted request is counted and answered, as JSON or as an SSE stream.

A client that goes away during a wait, a hang or a stream is counted in ``cancelled``; the fake
notices through ASGI's ``http.disconnect``. Raw secrets are never kept: keys are held as
SHA-256 digests, recorded headers show the key's id instead of the key, and the query string
(where Gemini's ``?key=`` goes) is not recorded.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import parse_qsl

import attrs
import trio

from freellm.sim.fakes import flavors
from freellm.sim.fakes.answers import (
    Answer,
    ErrorAnswer,
    send_answer,
    send_error,
    send_malformed,
)
from freellm.sim.fakes.caps import (
    MINUTE,
    Dimension,
    FakeCaps,
    Standing,
    Usage,
    UsageLog,
    Violation,
    WindowName,
    worst_violation,
)
from freellm.sim.fakes.cohere import CohereDialect
from freellm.sim.fakes.dialect import MODELS_PATH, Call, Dialect
from freellm.sim.fakes.embedding_wires import make_embedding_wire
from freellm.sim.fakes.embeddings import EMBEDDINGS_PATH, EmbedRequest
from freellm.sim.fakes.exchange import Exchange, Message, Receive, Send, lifespan, read_body
from freellm.sim.fakes.faults import CHAT_PATH, Fault, FaultKind, FaultPlan
from freellm.sim.fakes.gemini import GeminiDialect
from freellm.sim.fakes.gemini_request import GeminiRequest
from freellm.sim.fakes.openai import OpenAIDialect
from freellm.sim.fakes.replies import ChatRequest

ANONYMOUS: Final = "anonymous"
REJECTED: Final = "<rejected>"
REDACTED: Final = "<redacted>"
SECRET_HEADERS: Final = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
NATIVE_DIALECTS: Final[Mapping[str, Callable[[], Dialect]]] = {
    "gemini": GeminiDialect,
    "cohere": CohereDialect,
}
ALL_FLAVORS: Final = tuple(sorted([*flavors.FLAVORS, *NATIVE_DIALECTS]))


def key_id(secret: str) -> str:
    """The id under which a fake records and counts the key `secret`."""
    return "key-" + hashlib.sha256(secret.encode()).hexdigest()[:10]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def make_dialect(flavor: str) -> Dialect:
    """A fresh dialect for `flavor`; raises ``ValueError`` for an unknown one."""
    if flavor in flavors.FLAVORS:
        return OpenAIDialect(flavors.FLAVORS[flavor])
    if flavor in NATIVE_DIALECTS:
        return NATIVE_DIALECTS[flavor]()
    raise ValueError(f"unknown flavor {flavor!r}; one of {list(ALL_FLAVORS)}")


@attrs.define
class RecordedRequest:
    """One request as the fake saw it; `status` and `outcome` are filled in as it is answered.

    `path` is relative to the base URL (``/chat/completions``, Gemini's
    ``/models/{model}:generateContent``, Cohere's ``/v2/chat``), without the query; `body` is
    the parsed JSON, or None when it was not JSON; `key_id` is the id of the key it carried
    (None for a rejected one; ``anonymous`` without one, when the fake accepts any); `model` is
    the model a chat or embeddings request named. `outcome` is ``ok``, ``rate_limited``,
    ``unauthorized``, ``not_found``, ``bad_request``, ``cancelled``, ``aborted`` (cut short by
    the server shutting down), or the value of the fault kind that answered it (``status``,
    ``reset``, ``cut``, ...). `status` stays None when no response was sent.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    key_id: str | None
    time: float
    status: int | None = None
    outcome: str = "pending"
    model: str | None = None


class FakeProvider:
    """A fake provider of one `flavor` (one of :data:`ALL_FLAVORS`), as an ASGI app.

    Serve it with :func:`freellm.sim.fakes.open_fake_provider`, which also sets `base_url`.
    `keys` (None: any key, or none, is accepted) are the valid secrets; `models` maps each
    served model to its per-key caps (default: the flavor's models, uncapped); `account_caps`
    cap each key across all models. `clock` drives the caps' windows, `epoch` the ``created``
    fields and OpenRouter's reset times; `seed` seeds the fault plan. `reply_tokens` (opt in,
    for the simulator's live replays) sizes each text reply: ``reply_tokens(request)`` words,
    None for the usual rules (see :mod:`.replies`). Raises ``ValueError`` for an unknown flavor.

    Public state: `faults` (a :class:`FaultPlan`), `requests` (every :class:`RecordedRequest`,
    unless `record` is False), `served` (chat and embeddings answers completed in full),
    `rate_limited` (429s sent), `cancelled` (clients gone before their answer finished) and
    `in_flight`.
    """

    def __init__(
        self,
        flavor: str,
        *,
        keys: Collection[str] | None = None,
        models: Mapping[str, FakeCaps] | None = None,
        account_caps: FakeCaps | None = None,
        clock: Callable[[], float] = trio.current_time,
        epoch: Callable[[], float] = time.time,
        seed: int = 0,
        record: bool = True,
        reply_tokens: Callable[[ChatRequest], int | None] | None = None,
    ) -> None:
        self.dialect = make_dialect(flavor)
        self.embedding_wire = make_embedding_wire(self.dialect)
        self.flavor = flavor
        self.prefix = self.dialect.prefix
        default = self.dialect.default_models
        self.models = dict(models) if models is not None else dict.fromkeys(default, FakeCaps())
        self.account_caps = account_caps
        self.faults = FaultPlan(seed=seed)
        self.requests: list[RecordedRequest] = []
        self.record = record
        self.reply_tokens = reply_tokens
        self.served = 0
        self.rate_limited = 0
        self.cancelled = 0
        self.in_flight = 0
        self._digests = None if keys is None else {_digest(k): key_id(k) for k in keys}
        self._clock = clock
        self._epoch = epoch
        self._logs: dict[tuple[str, str | None], UsageLog] = {}
        self._serial = 0
        self._idle = trio.Event()
        self._idle.set()
        self._origin: str | None = None

    key_id = staticmethod(key_id)

    def accept_key(self, secret: str) -> None:
        """Accept ``secret`` from now on, as a provider does with a key made valid while it runs
        (a fake that accepts any key is left as it is)."""
        if self._digests is not None:
            self._digests[_digest(secret)] = key_id(secret)

    def bind(self, origin: str) -> None:
        """Record where the fake is served (``http://127.0.0.1:PORT``)."""
        self._origin = origin.rstrip("/")

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``. Raises ``RuntimeError`` before :meth:`bind`."""
        if self._origin is None:
            raise RuntimeError("the fake is not served yet; use open_fake_provider")
        return self._origin

    @property
    def base_url(self) -> str:
        """The base URL clients are given: the origin and the dialect's path prefix."""
        return self.origin + self.prefix

    def usage(self, key: str, model: str | None = None) -> Usage:
        """What key id `key` has used on `model` (None: across all models) in each window now."""
        return self._log(key, model).usage(self._clock())

    async def wait_idle(self) -> None:
        """Return once no request is in flight (e.g. once a client's leaving is noticed)."""
        while self.in_flight:
            await self._idle.wait()

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)

    # -- the request's way through the fake -----------------------------------------------

    def _authenticate(
        self, headers: dict[str, str], query: Mapping[str, str]
    ) -> tuple[str | None, bool, bool]:
        """(key id, accepted, a key was sent); replaces the recorded secrets on the way."""
        credential = self.dialect.credential(headers, query)
        token = credential.secret
        kid: str | None
        if self._digests is None:
            kid = key_id(token) if token else ANONYMOUS
        else:
            kid = self._digests.get(_digest(token)) if token else None
        for name in SECRET_HEADERS:
            if name in headers:
                headers[name] = (kid or REJECTED) if name == credential.header else REDACTED
        return kid, kid is not None, bool(token)

    async def _http(self, scope: Message, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        prefixed = path.startswith(self.prefix + "/")
        relative = path[len(self.prefix) :] if prefixed else path
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        kid, accepted, sent = self._authenticate(headers, query)
        self.in_flight += 1
        if self.in_flight == 1:
            self._idle = trio.Event()
        try:
            raw = await read_body(receive)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            method = scope["method"]
            call = None
            if prefixed:
                call = self.dialect.route(method, relative, query, body)
                call = call or self.embedding_wire.route(method, relative, body)
            record = RecordedRequest(method, relative, headers, body, kid, self._clock())
            if call is not None and call.endpoint in (CHAT_PATH, EMBEDDINGS_PATH):
                record.model = call.model
            if self.record:
                self.requests.append(record)
            if raw is None:
                self._finish(record, None, "cancelled")
            else:
                try:
                    await self._route(Exchange(receive, send), record, call, accepted, sent)
                finally:
                    if record.outcome == "pending":
                        # Cut short by the server shutting down (or by a bug): say so.
                        record.outcome = "aborted"
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    def _finish(self, record: RecordedRequest, status: int | None, outcome: str) -> None:
        record.status, record.outcome = status, outcome
        if outcome == "cancelled":
            self.cancelled += 1
        elif status == 429:
            self.rate_limited += 1

    async def _refuse(
        self, exchange: Exchange, record: RecordedRequest, outcome: str, error: ErrorAnswer
    ) -> None:
        # Counted first: a client that has its answer must find the fake's counters up to date.
        self._finish(record, error.status, outcome)
        await send_error(exchange, error)

    async def _route(
        self,
        exchange: Exchange,
        record: RecordedRequest,
        call: Call | None,
        accepted: bool,
        sent: bool,
    ) -> None:
        if call is None:
            error = self.dialect.unknown_url(record.method, record.path)
            await self._refuse(exchange, record, "not_found", error)
            return
        if not accepted:
            await self._refuse(exchange, record, "unauthorized", self.dialect.unauthorized(sent))
            return
        fault = self.faults.draw(call.endpoint)
        if fault is not None:
            delay = fault.seconds
            if delay and not await exchange.guard(trio.sleep, delay):
                self._finish(record, None, "cancelled")
                return
            if await self._act_out(exchange, record, call, fault):
                return
        if call.endpoint == CHAT_PATH:
            await self._chat(exchange, record, call, fault)
        elif call.endpoint == EMBEDDINGS_PATH:
            await self._embed(exchange, record, call, fault)
        elif call.endpoint == MODELS_PATH:
            self._finish(record, 200, "ok")
            await exchange.json(200, self.dialect.model_list(list(self.models)))
        elif call.model in self.models:
            self._finish(record, 200, "ok")
            await exchange.json(200, self.dialect.model_info(call.model))
        else:
            error = self.dialect.model_not_found(call.model or "")
            await self._refuse(exchange, record, "not_found", error)

    async def _act_out(
        self, exchange: Exchange, record: RecordedRequest, call: Call, fault: Fault
    ) -> bool:
        """Answer with a fault that refuses the request before admission; False for the rest."""
        kind, outcome = fault.kind, fault.kind.value
        if kind is FaultKind.HANG:
            await exchange.guard(trio.sleep_forever)
            self._finish(record, None, "cancelled")
        elif kind is FaultKind.RESET:
            # An ASGI app cannot close its socket, and hypercorn answers 500 for an app that
            # returns or raises before starting a response. After an interim 100 response,
            # hypercorn counts the response as started and closes the connection when the app
            # returns; clients skip the 100 and see the server close with no response.
            self._finish(record, None, outcome)
            await exchange.start(100, [])
        elif kind is FaultKind.STATUS:
            await self._refuse(exchange, record, outcome, self.dialect.server_error(fault.status))
        elif kind is FaultKind.INVALID_KEY:
            await self._refuse(exchange, record, outcome, self.dialect.unauthorized(True))
        elif kind is FaultKind.MALFORMED:
            self._finish(record, 200, outcome)
            await send_malformed(exchange, *self.dialect.malformed(call))
        elif kind is FaultKind.RATE_LIMIT:
            model = call.model or "unknown"
            rpm = self.models.get(model, FakeCaps()).rpm
            limit = rpm if rpm is not None else 1
            # No retry_after: the 429 gives no hint; the window's length words its message.
            retry = MINUTE if fault.retry_after is None else fault.retry_after
            violation = Violation("requests", "minute", limit, limit, 1, retry)
            hints = fault.retry_after is not None
            embeddings = call.endpoint == EMBEDDINGS_PATH
            await self._rate_limited(
                exchange, record, violation, model, hints=hints, embeddings=embeddings
            )
        else:
            return False
        return True

    # -- caps -------------------------------------------------------------------------------

    def _log(self, key: str, model: str | None) -> UsageLog:
        log = self._logs.get((key, model))
        if log is None:
            log = self._logs[key, model] = UsageLog()
        return log

    def _counters(self, kid: str, model: str) -> list[tuple[FakeCaps, UsageLog]]:
        """The key's counter on `model` and across all models (kept even when uncapped)."""
        account = self.account_caps if self.account_caps is not None else FakeCaps()
        return [(self.models[model], self._log(kid, model)), (account, self._log(kid, None))]

    def _standings(self, kid: str, model: str) -> dict[tuple[Dimension, WindowName], Standing]:
        """The caps the dialect reports: the model's, else the account's, per dimension."""
        now = self._clock()
        standings = {}
        scopes = ((self.models.get(model, FakeCaps()), model), (self.account_caps, None))
        for dimension, window in self.dialect.reported:
            for caps, scope in scopes:
                cap = caps.cap(dimension, window) if caps is not None else None
                if cap is not None:
                    log = self._log(kid, scope)
                    standings[dimension, window] = log.standing(now, dimension, window, cap)
                    break
        return standings

    async def _rate_limited(
        self,
        exchange: Exchange,
        record: RecordedRequest,
        violation: Violation,
        model: str,
        *,
        hints: bool = True,
        embeddings: bool = False,
    ) -> None:
        standings = self._standings(record.key_id or ANONYMOUS, model)
        epoch = self._epoch()
        wire = self.embedding_wire if embeddings else self.dialect
        error = wire.rate_limited(violation, model, standings, epoch, hints=hints)
        await self._refuse(exchange, record, "rate_limited", error)

    # -- chat -------------------------------------------------------------------------------

    async def _chat(
        self, exchange: Exchange, record: RecordedRequest, call: Call, fault: Fault | None
    ) -> None:
        request = await self._servable(exchange, record, self.dialect.parse(call, record.body))
        if request is None:
            return
        if self.reply_tokens is not None:
            request = _sized(request, self.reply_tokens)
        self._serial += 1
        answer = self.dialect.answer(request, self._serial, int(self._epoch()))
        await self._count_and_send(
            exchange, record, request.model, answer.cap_tokens, lambda: answer, fault
        )

    # -- embeddings -------------------------------------------------------------------------

    async def _embed(
        self, exchange: Exchange, record: RecordedRequest, call: Call, fault: Fault | None
    ) -> None:
        parsed = self.embedding_wire.parse(call, record.body)
        request = await self._servable(exchange, record, parsed)
        if request is None:
            return

        def answer() -> Answer:
            self._serial += 1
            return self._embedding_answer(request, self._serial)

        await self._count_and_send(
            exchange, record, request.model, request.tokens, answer, fault, embeddings=True
        )

    # -- shared -----------------------------------------------------------------------------

    async def _servable(
        self, exchange: Exchange, record: RecordedRequest, request: _Named | ErrorAnswer
    ) -> _Named | None:
        """`request` (a dialect's parse of the call) if it is one to serve; else None, and it
        is refused: a bad request, or a model this fake does not serve."""
        if isinstance(request, ErrorAnswer):
            await self._refuse(exchange, record, "bad_request", request)
            return None
        if request.model not in self.models:
            error = self.dialect.model_not_found(request.model)
            await self._refuse(exchange, record, "not_found", error)
            return None
        return request

    async def _count_and_send(
        self,
        exchange: Exchange,
        record: RecordedRequest,
        model: str,
        tokens: int,
        answer: Callable[[], Answer],
        fault: Fault | None,
        *,
        embeddings: bool = False,
    ) -> None:
        """Count a call of `tokens` against the key's caps of `model` and send its answer, or
        answer the cap it would break with the dialect's 429."""
        kid = record.key_id or ANONYMOUS
        counters = self._counters(kid, model)
        now = self._clock()
        violation = worst_violation(counters, now, tokens)
        if violation is not None:
            await self._rate_limited(exchange, record, violation, model, embeddings=embeddings)
            return
        for _, log in counters:
            log.add(now, tokens)
        made = answer()
        headers = self.dialect.standing_headers(self._standings(kid, model))

        def settle(outcome: str) -> None:
            self._finish(record, 200, outcome)
            if outcome == "ok":
                self.served += 1

        await send_answer(exchange, made, headers, fault, settle)

    def _embedding_answer(self, request: EmbedRequest, serial: int) -> Answer:
        """The vectors as the wire writes them; a MIDSTREAM_ERROR makes them a 500."""
        body = self.embedding_wire.answer(request, serial)
        return Answer(request.tokens, body=body, broken=self.dialect.server_error(500))


class _HasModel(Protocol):
    @property
    def model(self) -> str: ...


_Named = TypeVar("_Named", bound=_HasModel)


def _sized(request: Any, size: Callable[[ChatRequest], int | None]) -> Any:
    """`request` with the reply length `size` gives it (Gemini's request holds a chat one)."""
    if isinstance(request, GeminiRequest):
        return attrs.evolve(request, chat=_sized(request.chat, size))
    chat: ChatRequest = request
    return attrs.evolve(chat, reply_tokens=size(chat))
