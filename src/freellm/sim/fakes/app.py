"""The fake provider: a raw ASGI app with its caps, faults, counters and record of requests.

One request goes through these steps, in order (each may answer and stop):

1. the path must be ``{prefix}/chat/completions`` (POST), ``{prefix}/models`` or
   ``{prefix}/models/{id}`` (GET), else 404;
2. authentication, when the fake was given keys: ``Authorization: Bearer <key>``, else 401;
3. the fault plan's draw (see :mod:`.faults`): wait ``seconds``, then act out the fault;
4. for chat: the body is checked (400), the model must exist (404), the reply is made, and the
   caps are checked with the request's exact tokens (429, and nothing is counted);
5. the admitted request is counted and answered, as JSON or as an SSE stream.

A client that goes away during a wait, a hang or a stream is counted in ``cancelled``; the fake
notices through ASGI's ``http.disconnect``. Raw secrets are never kept: keys are held as
SHA-256 digests, and recorded headers show the key's id instead of the Authorization value.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

import attrs
import trio

from freellm.sim.fakes import flavors
from freellm.sim.fakes.answers import send_completion, send_malformed, send_stream
from freellm.sim.fakes.caps import (
    Dimension,
    FakeCaps,
    Standing,
    Usage,
    UsageLog,
    Violation,
    WindowName,
    worst_violation,
)
from freellm.sim.fakes.exchange import Exchange, Message, Receive, Send, lifespan, read_body
from freellm.sim.fakes.faults import CHAT_PATH, Fault, FaultKind, FaultPlan
from freellm.sim.fakes.replies import (
    BadRequest,
    completion_json,
    make_reply,
    parse_chat,
    stream_chunks,
)

ANONYMOUS: Final = "anonymous"
REJECTED: Final = "<rejected>"
REDACTED: Final = "<redacted>"


def key_id(secret: str) -> str:
    """The id under which a fake records and counts the key `secret`."""
    return "key-" + hashlib.sha256(secret.encode()).hexdigest()[:10]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@attrs.define
class RecordedRequest:
    """One request as the fake saw it; `status` and `outcome` are filled in as it is answered.

    `path` is relative to the base URL (``/chat/completions``); `body` is the parsed JSON, or
    None when it was not JSON; `key_id` is the id of the key it carried (None for a rejected
    one; ``anonymous`` without one, when the fake accepts any). `outcome` is ``ok``,
    ``rate_limited``, ``unauthorized``, ``not_found``, ``bad_request``, ``cancelled``,
    ``aborted`` (cut short by the server shutting down), or the value of the fault kind that
    answered it (``status``, ``reset``, ``cut``, ...). `status` stays None when no response
    was sent.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    key_id: str | None
    time: float
    status: int | None = None
    outcome: str = "pending"

    @property
    def model(self) -> str | None:
        model = self.body.get("model") if isinstance(self.body, dict) else None
        return model if isinstance(model, str) else None


class FakeProvider:
    """A fake OpenAI-dialect provider of one `flavor`, as an ASGI app.

    Serve it with :func:`freellm.sim.fakes.open_fake_provider`, which also sets `base_url`.
    `keys` (None: any key, or none, is accepted) are the valid secrets; `models` maps each
    served model to its per-key caps (default: the flavor's models, uncapped); `account_caps`
    cap each key across all models. `clock` drives the caps' windows, `epoch` the ``created``
    fields and OpenRouter's reset times; `seed` seeds the fault plan. Raises ``ValueError`` for
    an unknown flavor.

    Public state: `faults` (a :class:`FaultPlan`), `requests` (every :class:`RecordedRequest`,
    unless `record` is False), `served` (chat answers completed in full), `rate_limited` (429s
    sent), `cancelled` (clients gone before their answer finished) and `in_flight`.
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
    ) -> None:
        if flavor not in flavors.FLAVORS:
            raise ValueError(f"unknown flavor {flavor!r}; one of {sorted(flavors.FLAVORS)}")
        self.flavor = flavor
        self.prefix = flavors.FLAVORS[flavor].prefix
        default = flavors.FLAVORS[flavor].default_models
        self.models = dict(models) if models is not None else dict.fromkeys(default, FakeCaps())
        self.account_caps = account_caps
        self.faults = FaultPlan(seed=seed)
        self.requests: list[RecordedRequest] = []
        self.record = record
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

    def bind(self, origin: str) -> None:
        """Record where the fake is served (``http://127.0.0.1:PORT``)."""
        self._origin = origin.rstrip("/")

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, prefix included. Raises ``RuntimeError`` before :meth:`bind`."""
        if self._origin is None:
            raise RuntimeError("the fake is not served yet; use open_fake_provider")
        return self._origin + self.prefix

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

    def _authenticate(self, headers: dict[str, str]) -> tuple[str | None, bool]:
        """(key id, accepted); replaces the recorded secrets on the way."""
        for name in ("x-api-key", "api-key"):
            if name in headers:
                headers[name] = REDACTED
        value = headers.get("authorization")
        token: str | None = None
        if value is not None:
            scheme, _, rest = value.partition(" ")
            token = rest.strip() if scheme.lower() == "bearer" else None
        kid: str | None
        if self._digests is None:
            kid = key_id(token) if token else ANONYMOUS
        else:
            kid = self._digests.get(_digest(token)) if token else None
        if value is not None:
            headers["authorization"] = kid or REJECTED
        return kid, kid is not None

    async def _http(self, scope: Message, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        prefixed = path.startswith(self.prefix + "/")
        relative = path[len(self.prefix) :] if prefixed else path
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        kid, accepted = self._authenticate(headers)
        self.in_flight += 1
        if self.in_flight == 1:
            self._idle = trio.Event()
        try:
            raw = await read_body(receive)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            record = RecordedRequest(scope["method"], relative, headers, body, kid, self._clock())
            if self.record:
                self.requests.append(record)
            if raw is None:
                self._finish(record, None, "cancelled")
            else:
                try:
                    await self._route(Exchange(receive, send), record, accepted, prefixed)
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

    async def _answer(
        self, exchange: Exchange, record: RecordedRequest, status: int, outcome: str, body: Any
    ) -> None:
        # Counted first: a client that has its answer must find the fake's counters up to date.
        self._finish(record, status, outcome)
        await exchange.json(status, body)

    async def _route(
        self, exchange: Exchange, record: RecordedRequest, accepted: bool, prefixed: bool
    ) -> None:
        method, path = record.method, record.path
        models_path = path == "/models" or path.startswith("/models/")
        known = (method == "POST" and path == CHAT_PATH) or (method == "GET" and models_path)
        if not (prefixed and known):
            message = f"Unknown request URL: {method} {path}"
            body = flavors.error_body(
                self.flavor, 404, message, "invalid_request_error", "unknown_url"
            )
            await self._answer(exchange, record, 404, "not_found", body)
            return
        if not accepted:
            await self._answer(exchange, record, 401, "unauthorized", flavors.INVALID_KEY_BODY)
            return
        fault = self.faults.draw(path)
        if fault is not None:
            delay = fault.seconds
            if delay and not await exchange.guard(trio.sleep, delay):
                self._finish(record, None, "cancelled")
                return
            if await self._act_out(exchange, record, fault):
                return
        if path == CHAT_PATH:
            await self._chat(exchange, record, fault)
        elif path == "/models":
            data = [self._model_json(model) for model in self.models]
            await self._answer(exchange, record, 200, "ok", {"object": "list", "data": data})
        elif (model := path[len("/models/") :]) in self.models:
            await self._answer(exchange, record, 200, "ok", self._model_json(model))
        else:
            await self._model_not_found(exchange, record, model)

    def _model_json(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 0, "owned_by": f"fake-{self.flavor}"}

    async def _model_not_found(
        self, exchange: Exchange, record: RecordedRequest, model: str
    ) -> None:
        message = f"The model `{model}` does not exist or you do not have access to it."
        body = flavors.error_body(
            self.flavor, 404, message, "invalid_request_error", "model_not_found", "model"
        )
        await self._answer(exchange, record, 404, "not_found", body)

    async def _act_out(self, exchange: Exchange, record: RecordedRequest, fault: Fault) -> bool:
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
            message = f"Injected fault: HTTP {fault.status}"
            body = flavors.error_body(self.flavor, fault.status, message, "server_error", None)
            await self._answer(exchange, record, fault.status, outcome, body)
        elif kind is FaultKind.INVALID_KEY:
            await self._answer(exchange, record, 401, outcome, flavors.INVALID_KEY_BODY)
        elif kind is FaultKind.MALFORMED:
            body = record.body
            self._finish(record, 200, outcome)
            await send_malformed(exchange, isinstance(body, dict) and body.get("stream") is True)
        elif kind is FaultKind.RATE_LIMIT:
            model = record.model or "unknown"
            rpm = self.models.get(model, FakeCaps()).rpm
            limit = rpm if rpm is not None else 1
            violation = Violation("requests", "minute", limit, limit, 1, fault.retry_after)
            await self._rate_limited(exchange, record, violation, model)
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
        """The caps the flavor reports: the model's, else the account's, per dimension."""
        now = self._clock()
        standings = {}
        scopes = ((self.models.get(model, FakeCaps()), model), (self.account_caps, None))
        for dimension, window in flavors.REPORTED[self.flavor]:
            for caps, scope in scopes:
                cap = caps.cap(dimension, window) if caps is not None else None
                if cap is not None:
                    log = self._log(kid, scope)
                    standings[dimension, window] = log.standing(now, dimension, window, cap)
                    break
        return standings

    async def _rate_limited(
        self, exchange: Exchange, record: RecordedRequest, violation: Violation, model: str
    ) -> None:
        standings = self._standings(record.key_id or ANONYMOUS, model)
        headers, body = flavors.rate_limited(
            self.flavor, violation, model, standings, self._epoch()
        )
        self._finish(record, 429, "rate_limited")
        await exchange.json(429, body, headers)

    # -- chat -------------------------------------------------------------------------------

    async def _chat(self, exchange: Exchange, record: RecordedRequest, fault: Fault | None) -> None:
        try:
            request = parse_chat(record.body)
        except BadRequest as error:
            body = flavors.error_body(
                self.flavor, 400, error.message, "invalid_request_error", None, error.param
            )
            await self._answer(exchange, record, 400, "bad_request", body)
            return
        if request.model not in self.models:
            await self._model_not_found(exchange, record, request.model)
            return
        self._serial += 1
        reply = make_reply(self.flavor, request, self._serial)
        kid = record.key_id or ANONYMOUS
        counters = self._counters(kid, request.model)
        now = self._clock()
        tokens = reply.prompt_tokens + reply.completion_tokens
        violation = worst_violation(counters, now, tokens)
        if violation is not None:
            await self._rate_limited(exchange, record, violation, request.model)
            return
        for _, log in counters:
            log.add(now, tokens)
        headers = flavors.standing_headers(self.flavor, self._standings(kid, request.model))
        completion_id = f"chatcmpl-{self.flavor}-{self._serial:06d}"
        created = int(self._epoch())

        def settle(outcome: str) -> None:
            self._finish(record, 200, outcome)
            if outcome == "ok":
                self.served += 1

        if request.stream:
            chunks = stream_chunks(
                reply, completion_id, request.model, created, request.include_usage
            )
            await send_stream(exchange, self.flavor, chunks, headers, fault, settle)
        else:
            payload = completion_json(reply, completion_id, request.model, created)
            await send_completion(exchange, self.flavor, payload, headers, fault, settle)
