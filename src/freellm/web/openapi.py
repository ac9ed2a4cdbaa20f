"""``GET /openapi.json``: an OpenAPI 3.1 description of freellm's own HTTP API.

It is what a user's tools read (client generators, API explorers) and what the test suite runs
schemathesis against, so it says what the server does, no more: every ``/v1`` and ``/api`` route,
the probes and ``/metrics``, their bodies as the server checks them (:mod:`freellm.core.chat` for
a chat request, :mod:`freellm.web.bodies` for ``/api``), the answers with their shapes, and who
may call what. The dashboard's pages, ``/login`` and ``/static`` are for browsers, not tools,
and are left out. tests/e2e/test_openapi.py checks it against the app's routes, so that a route
added or dropped without it fails there.

The document is data, built once per app by :func:`document`; :class:`OpenAPI` serves it to
whoever holds the unified key (or the dashboard's session), like every route but the probes.
"""

from __future__ import annotations

import json
from typing import Any, Final

from freellm import __version__
from freellm.core.wire import error_body
from freellm.shell.logins import COOKIE
from freellm.shell.runtime import Runtime
from freellm.web.asgi import Receive, Scope, Send, json_response
from freellm.web.auth import Access, access
from freellm.web.openapi_schemas import (
    BOOLEAN,
    INTEGER,
    STRING,
    TIME,
    Schema,
    api_schemas,
    array,
    chat_schemas,
    door_schemas,
    nullable,
    obj,
    ref,
)

__all__ = ["OpenAPI", "document"]

JSON: Final = "application/json"

# Who may call what (``security`` of an operation: any one of the listed ways).
Security = list[dict[str, list[str]]]
KEY: Final[Security] = [{"bearer": []}, {"apiKey": []}]
KEY_OR_SESSION: Final[Security] = [*KEY, {"session": []}]
KEY_OR_SESSION_AND_CSRF: Final[Security] = [*KEY, {"session": [], "csrf": []}]
OPEN: Final[Security] = []

ERRORS: Final = {
    400: "Bad input: `param` names the field (or the body as a whole, when null).",
    401: "Missing or wrong credentials.",
    403: "A session cookie on a call that changes something, without its X-CSRF-Token.",
    404: "No such model, key or endpoint.",
    405: "The route exists, but not with this method.",
    408: "The request body did not arrive in time.",
    409: "The key is disabled or cannot be opened.",
    413: "The request body is too large.",
    429: "No capacity anywhere now (Retry-After says when), or too many failed logins.",
    502: "Every provider tried failed.",
    503: "No provider key is configured (the message says how to add one).",
}


def errors(*statuses: int) -> dict[str, Any]:
    """The error answers of an operation: OpenAI's shape, whatever the status. Every
    operation can also meet the ones any request can (a header sent twice is a 400)."""
    found = {400, *statuses}
    return {
        str(status): {"description": ERRORS[status], "content": {JSON: {"schema": ref("Error")}}}
        for status in sorted(found)
    }


def answer(schema: Schema, description: str = "OK", **more: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **more}


def body(schema: Schema) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": schema}}}


def operation(
    summary: str,
    responses: dict[str, Any],
    *,
    security: Security,
    tag: str,
    **more: Any,
) -> dict[str, Any]:
    return {"summary": summary, "tags": [tag], "security": security, "responses": responses, **more}


V1_HEADERS: Final = {
    "X-Request-Id": {"description": "This request's id, as logged.", "schema": STRING},
    "X-Routed-Via": {"description": "The provider/model that answered.", "schema": STRING},
    "X-Fallback-Attempts": {
        "description": "Attempts before the one that answered (only when some were made).",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "X-Fallback-Trail": {
        "description": "provider/model=outcome for each candidate tried, comma-separated.",
        "schema": STRING,
    },
}


def v1_paths() -> dict[str, Any]:
    chat_answer = {
        "description": "The completion; with `stream: true`, server-sent events (`data: {chunk}`"
        " lines, `data: [DONE]` last; a failure mid-stream is an `error` event, then [DONE]).",
        "headers": V1_HEADERS,
        "content": {
            JSON: {"schema": ref("ChatCompletion")},
            "text/event-stream": {"schema": STRING},
        },
    }
    session = {
        "name": "X-Session-Id",
        "in": "header",
        "required": False,
        "schema": STRING,
        "description": "Keeps a conversation on one model (else the body's session_id, its "
        "user, or a hash of its first messages).",
    }
    model_list = obj({"object": {"const": "list"}, "data": array(ref("Model"))}, "object", "data")
    model_id = {
        "name": "model",
        "in": "path",
        "required": True,
        "schema": STRING,
        "description": "`auto`, a model id, or provider/model-id (slashes as they are).",
    }
    return {
        "/v1/chat/completions": {
            "post": operation(
                "A chat completion from whichever provider has capacity",
                {"200": chat_answer, **errors(401, 404, 408, 413, 429, 502, 503)},
                security=KEY,
                tag="v1",
                operationId="createChatCompletion",
                parameters=[session],
                requestBody=body(ref("ChatRequest")),
            )
        },
        "/v1/models": {
            "get": operation(
                "`auto`, then every provider/model with a key, then every plain model id",
                {"200": answer(model_list), **errors(401)},
                security=KEY,
                tag="v1",
                operationId="listModels",
            )
        },
        "/v1/models/{model}": {
            "get": operation(
                "One model of the list",
                {"200": answer(ref("Model")), **errors(401, 404)},
                security=KEY,
                tag="v1",
                operationId="getModel",
                parameters=[model_id],
            )
        },
    }


def anthropic_errors(*statuses: int) -> dict[str, Any]:
    """:func:`errors`, in Anthropic's shape (``/v1/messages``)."""
    return {
        status: answer | {"content": {JSON: {"schema": ref("AnthropicError")}}}
        for status, answer in errors(*statuses).items()
    }


def door_paths() -> dict[str, Any]:
    """The doors beside chat completions (:mod:`freellm.web.doors`): the same routing, the
    same headers."""
    session = v1_paths()["/v1/chat/completions"]["post"]["parameters"]
    failures = (401, 404, 408, 413, 429, 502, 503)

    def routed(schema: str, events: str) -> dict[str, Any]:
        return {
            "description": f"The answer; with `stream: true`, {events}",
            "headers": V1_HEADERS,
            "content": {JSON: {"schema": ref(schema)}, "text/event-stream": {"schema": STRING}},
        }

    response_id = {"name": "response_id", "in": "path", "required": True, "schema": STRING}
    deleted = obj(
        {"id": STRING, "object": {"const": "response"}, "deleted": {"const": True}},
        "id",
        "object",
        "deleted",
    )
    return {
        "/v1/messages": {
            "post": operation(
                "Anthropic's Messages API, answered by whichever provider has capacity",
                {
                    "200": routed("Message", "Anthropic's stream events."),
                    **anthropic_errors(*failures),
                },
                security=KEY,
                tag="v1",
                operationId="createMessage",
                parameters=session,
                requestBody=body(ref("MessagesRequest")),
            )
        },
        "/v1/messages/count_tokens": {
            "post": operation(
                "The prompt's tokens, as freellm estimates them for routing",
                {
                    "200": answer(obj({"input_tokens": INTEGER}, "input_tokens")),
                    **anthropic_errors(401, 408, 413),
                },
                security=KEY,
                tag="v1",
                operationId="countMessageTokens",
                requestBody=body(ref("CountTokensRequest")),
            )
        },
        "/v1/responses": {
            "post": operation(
                "OpenAI's Responses API, answered by whichever provider has capacity; stored "
                "for `previous_response_id` unless `store` is false",
                {
                    "200": routed("Response", "the Responses API's events."),
                    **errors(*failures),
                },
                security=KEY,
                tag="v1",
                operationId="createResponse",
                parameters=session,
                requestBody=body(ref("ResponsesRequest")),
            )
        },
        "/v1/responses/{response_id}": {
            "get": operation(
                "A stored response",
                {"200": answer(ref("Response")), **errors(401, 404)},
                security=KEY,
                tag="v1",
                operationId="getResponse",
                parameters=[response_id],
            ),
            "delete": operation(
                "Forget a stored response",
                {"200": answer(deleted), **errors(401, 404)},
                security=KEY,
                tag="v1",
                operationId="deleteResponse",
                parameters=[response_id],
            ),
        },
        "/v1/embeddings": {
            "post": operation(
                "Embeddings from one model, on whichever key or provider serving it has capacity",
                {"200": answer(ref("EmbeddingList"), headers=V1_HEADERS), **errors(*failures)},
                security=KEY,
                tag="v1",
                operationId="createEmbeddings",
                requestBody=body(ref("EmbeddingsRequest")),
            )
        },
    }


def server_paths() -> dict[str, Any]:
    background = obj(
        {
            "ok": BOOLEAN,
            "failures": INTEGER,
            "last_error": nullable(STRING),
            "failing_since": nullable(TIME),
        },
        "ok",
    )
    ready = obj(
        {
            "status": {"enum": ["ready", "degraded", "starting"]},
            "background": {"type": "object", "additionalProperties": background},
        },
        "status",
    )
    text = {"text/plain": {"schema": STRING}}
    return {
        "/livez": {
            "get": operation(
                "The server is up",
                {"200": answer(obj({"status": {"const": "ok"}}, "status"))},
                security=OPEN,
                tag="server",
                operationId="livez",
            )
        },
        "/readyz": {
            "get": operation(
                "The server serves; `degraded` while a background job fails",
                {
                    "200": answer(ready),
                    "503": answer(ready, "Starting: not serving yet."),
                },
                security=OPEN,
                tag="server",
                operationId="readyz",
            )
        },
        "/metrics": {
            "get": operation(
                "Prometheus metrics (text format 0.0.4)",
                {"200": {"description": "OK", "content": text}, **errors(401)},
                security=KEY_OR_SESSION,
                tag="server",
                operationId="metrics",
            )
        },
        "/openapi.json": {
            "get": operation(
                "This document",
                {"200": answer({"type": "object"}), **errors(401)},
                security=KEY_OR_SESSION,
                tag="server",
                operationId="openapi",
            )
        },
    }


def api_paths() -> dict[str, Any]:
    key_id = {"name": "key_id", "in": "path", "required": True, "schema": STRING}
    changes: dict[str, Any] = {"security": KEY_OR_SESSION_AND_CSRF, "tag": "api"}
    reads: dict[str, Any] = {"security": KEY_OR_SESSION, "tag": "api"}
    denied = errors(401, 403, 408, 413)
    key_answer = answer(ref("Key"))
    login = obj(
        {"token": {"type": "string", "maxLength": 4096}}, "token", additionalProperties=False
    )
    opened = obj({"csrf_token": STRING, "expires": TIME}, "csrf_token", "expires")
    token = obj({"masked": STRING}, "masked")
    windows = {"name": "window", "in": "query", "schema": {"enum": ["1h", "24h", "7d", "30d"]}}
    chain_name = {
        "name": "name",
        "in": "query",
        "schema": {"type": "string", "pattern": "^(|auto|[a-z0-9][a-z0-9_-]{0,63})$"},
        "description": "A named chain (`auto:NAME`); left out, empty or `auto`: `auto`'s chain.",
    }
    limit = {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 200},
    }
    failed = {"name": "failed", "in": "query", "schema": {"enum": ["1", "true", "0", "false"]}}
    return {
        "/api/login": {
            "post": operation(
                "Log in with the unified key: sets the session cookie",
                {
                    "200": answer(opened, headers={"Set-Cookie": {"schema": STRING}}),
                    **errors(401, 408, 413, 429),
                },
                security=OPEN,
                tag="api",
                operationId="login",
                requestBody=body(login),
            )
        },
        "/api/logout": {
            "post": operation(
                "End this session",
                {"200": answer(obj({"logged_out": {"const": True}}, "logged_out")), **denied},
                operationId="logout",
                **changes,
            )
        },
        "/api/token": {
            "get": operation(
                "The unified key, masked",
                {"200": answer(token), **errors(401)},
                operationId="getToken",
                **reads,
            )
        },
        "/api/token/regenerate": {
            "post": operation(
                "A new unified key, shown once; every session ends",
                {
                    "200": answer(obj({"token": STRING, "masked": STRING}, "token", "masked")),
                    **denied,
                },
                operationId="regenerateToken",
                **changes,
            )
        },
        "/api/keys": {
            "get": operation(
                "The provider keys, without their secrets",
                {"200": answer(obj({"data": array(ref("Key"))}, "data")), **errors(401)},
                operationId="listKeys",
                **reads,
            ),
            "post": operation(
                "Add a provider key (checked in the background)",
                {"201": answer(ref("Key"), "Added"), **denied},
                operationId="addKey",
                requestBody=body(ref("NewKey")),
                **changes,
            ),
        },
        "/api/keys/{key_id}": {
            "patch": operation(
                "Enable, disable, relabel or replace a key",
                {"200": key_answer, **errors(401, 403, 404, 408, 413)},
                operationId="editKey",
                parameters=[key_id],
                requestBody=body(ref("KeyPatch")),
                **changes,
            ),
            "delete": operation(
                "Remove a key",
                {
                    "200": answer(obj({"id": STRING, "deleted": {"const": True}}, "id", "deleted")),
                    **errors(401, 403, 404),
                },
                operationId="removeKey",
                parameters=[key_id],
                **changes,
            ),
        },
        "/api/keys/{key_id}/check": {
            "post": operation(
                "Check a key with its provider now",
                {"200": key_answer, **errors(401, 403, 404, 409)},
                operationId="checkKey",
                parameters=[key_id],
                **changes,
            )
        },
        "/api/chain": {
            "get": operation(
                "A chain (`auto`'s unless `name` says which), with what each entry can serve now",
                {"200": answer(ref("Chain")), **errors(401)},
                operationId="getChain",
                parameters=[chain_name],
                **reads,
            ),
            "put": operation(
                "Replace a chain (`auto`'s unless `name` says which; one entry at least enabled)",
                {"200": answer(ref("Chain")), **denied},
                operationId="setChain",
                requestBody=body(ref("ChainUpdate")),
                **changes,
            ),
            "delete": operation(
                "Forget the named chain `name`: back to the config file's, or gone",
                {"200": answer(ref("Chain")), **denied},
                operationId="deleteChain",
                parameters=[chain_name | {"required": True}],
                **changes,
            ),
        },
        "/api/strategy": {
            "get": operation(
                "How `auto` and model requests are routed: chain order, or by capacity",
                {"200": answer(ref("Strategy")), **errors(401)},
                operationId="getStrategy",
                **reads,
            ),
            "put": operation(
                "Set the routing strategy (null: back to the config's)",
                {"200": answer(ref("Strategy")), **denied},
                operationId="setStrategy",
                requestBody=body(ref("StrategyUpdate")),
                **changes,
            ),
        },
        "/api/catalog": {
            "get": operation(
                "Providers, models, caps and capabilities, and the presets of a chain",
                {"200": answer(ref("Catalog")), **errors(401)},
                operationId="getCatalog",
                parameters=[chain_name | {"name": "chain"}],
                **reads,
            )
        },
        "/api/quotas": {
            "get": operation(
                "Per key and model: used and cap per window, cooldowns, next reset",
                {"200": answer(ref("Quotas")), **errors(401)},
                operationId="getQuotas",
                **reads,
            )
        },
        "/api/analytics": {
            "get": operation(
                "Traffic, success, tokens and latency over a window",
                {"200": answer(ref("Analytics")), **errors(401)},
                operationId="getAnalytics",
                parameters=[windows],
                **reads,
            )
        },
        "/api/requests": {
            "get": operation(
                "The latest requests with their attempts",
                {"200": answer(ref("Requests")), **errors(401)},
                operationId="listRequests",
                parameters=[limit, failed],
                **reads,
            )
        },
        "/api/events": {
            "get": operation(
                "Server-sent events: `request` (each request as it ends), `quotas` (the live "
                "ledger, at most once a second) and a comment now and then; never ends",
                {
                    "200": {
                        "description": "OK",
                        "content": {"text/event-stream": {"schema": STRING}},
                    },
                    **errors(401),
                },
                operationId="events",
                **reads,
            )
        },
        "/api/chat/completions": {
            "post": operation(
                "The playground's chat: /v1/chat/completions behind the dashboard's session",
                v1_paths()["/v1/chat/completions"]["post"]["responses"] | errors(401, 403),
                operationId="playgroundChat",
                requestBody=body(ref("ChatRequest")),
                **changes,
            )
        },
    }


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "freellm",
            "version": __version__,
            "description": "One OpenAI-compatible endpoint in front of many free-tier LLM "
            "providers (/v1: OpenAI's chat completions, Responses and embeddings, Anthropic's "
            "Messages), and the dashboard's API (/api). Errors are OpenAI-shaped, but on "
            "/v1/messages, Anthropic's.",
        },
        "tags": [
            {"name": "v1", "description": "OpenAI-compatible: point any OpenAI client here."},
            {"name": "api", "description": "The dashboard's API."},
            {"name": "server", "description": "Probes, metrics and this document."},
        ],
        "paths": v1_paths() | door_paths() | server_paths() | api_paths(),
        "components": {
            "schemas": {
                "Error": obj(
                    {
                        "error": obj(
                            {
                                "message": STRING,
                                "type": STRING,
                                "param": nullable(STRING),
                                "code": nullable(STRING),
                            },
                            "message",
                            "type",
                            "param",
                            "code",
                        )
                    },
                    "error",
                ),
                **chat_schemas(),
                **door_schemas(),
                **api_schemas(),
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The unified freellm key (`freellm token` prints it).",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": COOKIE,
                    "description": "The dashboard's session, from POST /api/login.",
                },
                "csrf": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-CSRF-Token",
                    "description": "With the session cookie, on a call that changes something: "
                    "the csrf_token of POST /api/login (pages carry it in a meta tag).",
                },
            },
        },
    }


class OpenAPI:
    """The ASGI handler of ``GET /openapi.json``: the document, to the key or a session."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._body: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if access(self.runtime, "GET", scope["headers"]) is Access.DENIED:
            problem = error_body(
                "Send the unified freellm key as `Authorization: Bearer <key>`, or log in.",
                "invalid_request_error",
                code="invalid_api_key",
            )
            await json_response(send, 401, problem)
            return
        if scope["method"] not in ("GET", "HEAD"):
            problem = error_body(
                "Use GET here.", "invalid_request_error", code="method_not_allowed"
            )
            await json_response(send, 405, problem, [(b"allow", b"GET, HEAD")])
            return
        if self._body is None:
            self._body = json.dumps(document()).encode()
        await json_response(send, 200, self._body)
