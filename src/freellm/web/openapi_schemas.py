"""The component schemas of :mod:`freellm.web.openapi`: a chat request as
:func:`freellm.core.chat.inspect_request` checks it, the ``/api`` bodies as
:mod:`freellm.web.bodies` takes them, and the answers. A constraint written here must be one the
server enforces: schemathesis sends what breaks each one and expects a 4xx.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "Schema",
    "api_schemas",
    "array",
    "chat_schemas",
    "door_schemas",
    "nullable",
    "obj",
    "ref",
]

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], *required: str, **more: Any) -> Schema:
    return {"type": "object", "properties": properties, "required": list(required), **more}


def array(items: Schema, **more: Any) -> Schema:
    return {"type": "array", "items": items, **more}


STRING: Final[Schema] = {"type": "string"}
NUMBER: Final[Schema] = {"type": "number"}
INTEGER: Final[Schema] = {"type": "integer"}
BOOLEAN: Final[Schema] = {"type": "boolean"}
TIME: Final[Schema] = {"type": "number", "description": "Epoch seconds."}
PERCENTILES: Final[Schema] = obj({"p50": nullable(NUMBER), "p95": nullable(NUMBER)}, "p50", "p95")


def chat_schemas() -> dict[str, Schema]:
    """A chat request as :func:`freellm.core.chat.inspect_request` checks it (fields it does
    not know are forwarded untouched), and the answers."""
    text_part = obj({"type": {"const": "text"}, "text": STRING}, "type", "text")
    image_url = {
        "anyOf": [
            {"type": "string", "minLength": 1},
            obj({"url": {"type": "string", "minLength": 1}}, "url"),
        ]
    }
    image_part = obj({"type": {"const": "image_url"}, "image_url": image_url}, "type", "image_url")
    other_part = obj({"type": {"type": "string", "not": {"enum": ["text", "image_url"]}}}, "type")
    content = {"anyOf": [STRING, array({"anyOf": [text_part, image_part, other_part]})]}
    asked = ["system", "developer", "user", "tool", "function"]
    return {
        "Message": {
            "description": "A message; only an assistant's may leave `content` out or null.",
            "anyOf": [
                obj({"role": {"enum": asked}, "content": content}, "role", "content"),
                obj({"role": {"const": "assistant"}, "content": nullable(content)}, "role"),
            ],
        },
        "Tool": obj(
            {
                "type": {"const": "function"},
                "function": obj(
                    {
                        "name": {"type": "string", "minLength": 1},
                        "parameters": nullable({"type": "object"}),
                    },
                    "name",
                ),
            },
            "function",
        ),
        "ChatRequest": obj(
            {
                "model": {
                    "type": "string",
                    "minLength": 1,
                    "description": "`auto`, a model id (any provider that serves it), or "
                    "`provider/model-id` (that provider only).",
                    "examples": ["auto"],
                },
                "messages": array(ref("Message"), minItems=1),
                "stream": nullable(BOOLEAN),
                "stream_options": nullable(obj({"include_usage": BOOLEAN})),
                "max_tokens": nullable({"type": "integer", "minimum": 1}),
                "max_completion_tokens": nullable({"type": "integer", "minimum": 1}),
                "temperature": nullable({"type": "number", "minimum": 0, "maximum": 2}),
                "top_p": nullable({"type": "number", "minimum": 0, "maximum": 1}),
                "n": nullable({"const": 1, "description": "Only 1: free tiers count each choice."}),
                "tools": nullable(array(ref("Tool"))),
                "tool_choice": nullable(
                    {
                        "anyOf": [
                            {"enum": ["none", "auto", "required"]},
                            obj({"function": obj({"name": STRING}, "name")}, "function"),
                        ]
                    }
                ),
                "response_format": nullable(
                    obj({"type": {"enum": ["text", "json_object", "json_schema"]}}, "type")
                ),
                "user": nullable(STRING),
                "session_id": nullable(
                    {"type": "string", "description": "Names the session, like X-Session-Id."}
                ),
            },
            "model",
            "messages",
            description="OpenAI's chat completion request. Fields not listed here are "
            "forwarded untouched to providers that speak OpenAI's dialect.",
        ),
        "ChatCompletion": obj(
            {
                "id": STRING,
                "object": {"const": "chat.completion"},
                "created": INTEGER,
                "model": STRING,
                "choices": array(
                    obj(
                        {
                            "index": INTEGER,
                            "message": obj({"role": STRING, "content": nullable(STRING)}, "role"),
                            "finish_reason": nullable(STRING),
                        },
                        "index",
                        "message",
                    )
                ),
                "usage": nullable(
                    obj(
                        {
                            "prompt_tokens": INTEGER,
                            "completion_tokens": INTEGER,
                            "total_tokens": INTEGER,
                        }
                    )
                ),
            },
            "object",
            "choices",
        ),
        "Model": obj(
            {
                "id": STRING,
                "object": {"const": "model"},
                "created": INTEGER,
                "owned_by": STRING,
            },
            "id",
            "object",
            "created",
            "owned_by",
        ),
    }


def door_schemas() -> dict[str, Schema]:
    """The other doors' requests, as far as :mod:`freellm.core.doors` and
    :mod:`freellm.core.dialects.embeddings` check them (what they translate beyond is in the
    README), and their answers."""
    model = {"type": "string", "minLength": 1}
    typed_block = obj({"type": STRING}, "type")
    text_block = obj({"type": {"const": "text"}, "text": STRING}, "type", "text")
    messages = array(
        obj(
            {
                "role": {"enum": ["user", "assistant", "system"]},
                "content": {"anyOf": [STRING, array(typed_block)]},
            },
            "role",
            "content",
        ),
        minItems=1,
    )
    system = {"anyOf": [STRING, array(text_block)]}
    token_ids = array(INTEGER, minItems=1)
    usage = obj(
        {"input_tokens": INTEGER, "output_tokens": INTEGER}, "input_tokens", "output_tokens"
    )
    return {
        "AnthropicError": obj(
            {
                "type": {"const": "error"},
                "error": obj({"type": STRING, "message": STRING}, "type", "message"),
            },
            "type",
            "error",
            description="Anthropic's error shape: /v1/messages answers errors so.",
        ),
        "MessagesRequest": obj(
            {
                "model": model
                | {"description": "`auto`, `auto:NAME`, a model, or a Claude name (an alias)."},
                "max_tokens": {"type": "integer", "minimum": 1},
                "messages": messages,
                "system": system,
                "stream": nullable(BOOLEAN),
                "temperature": nullable({"type": "number", "minimum": 0, "maximum": 1}),
                "top_p": nullable({"type": "number", "minimum": 0, "maximum": 1}),
                "top_k": nullable({"type": "integer", "minimum": 0}),
                "stop_sequences": nullable(array({"type": "string", "minLength": 1})),
                "metadata": nullable(obj({"user_id": nullable(STRING)})),
            },
            "model",
            "max_tokens",
            "messages",
            description="Anthropic's Messages request.",
        ),
        "CountTokensRequest": obj(
            {
                "model": model,
                "messages": messages,
                "system": system,
            },
            "model",
            "messages",
        ),
        "Message": obj(
            {
                "id": STRING,
                "type": {"const": "message"},
                "role": {"const": "assistant"},
                "model": STRING,
                "content": array(typed_block),
                "stop_reason": nullable(STRING),
                "stop_sequence": nullable(STRING),
                "usage": usage,
            },
            "id",
            "type",
            "role",
            "content",
            "usage",
        ),
        "ResponsesRequest": obj(
            {
                "model": model,
                "input": {"anyOf": [STRING, array(typed_block)]},
                "instructions": nullable(STRING),
                "max_output_tokens": nullable({"type": "integer", "minimum": 1}),
                "temperature": nullable({"type": "number", "minimum": 0, "maximum": 2}),
                "top_p": nullable({"type": "number", "minimum": 0, "maximum": 1}),
                "stream": nullable(BOOLEAN),
                "store": nullable(BOOLEAN),
                "previous_response_id": nullable(STRING),
                "parallel_tool_calls": nullable(BOOLEAN),
                "tools": nullable(
                    array(
                        obj(
                            {
                                "type": {"const": "function"},
                                "name": {"type": "string", "minLength": 1},
                            },
                            "type",
                            "name",
                        )
                    )
                ),
                "truncation": nullable({"enum": ["auto", "disabled"]}),
                "user": nullable(STRING),
                "metadata": nullable({"type": "object", "additionalProperties": STRING}),
            },
            "model",
            description="OpenAI's Responses request (function tools only).",
        ),
        "Response": obj(
            {
                "id": STRING,
                "object": {"const": "response"},
                "created_at": NUMBER,
                "status": STRING,
                "model": STRING,
                "output": array(typed_block),
                "usage": nullable(obj({"input_tokens": INTEGER, "output_tokens": INTEGER})),
            },
            "id",
            "object",
            "status",
            "output",
        ),
        "EmbeddingsRequest": obj(
            {
                "model": model
                | {"description": "`auto` (the embeddings chain's first model) or a model."},
                "input": {
                    "anyOf": [
                        {"type": "string", "minLength": 1},
                        array({"type": "string", "minLength": 1}, minItems=1, maxItems=2048),
                        token_ids,
                        array(token_ids, minItems=1, maxItems=2048),
                    ]
                },
                "encoding_format": nullable({"enum": ["float", "base64"]}),
                "dimensions": nullable({"type": "integer", "minimum": 1}),
                "user": nullable(STRING),
            },
            "model",
            "input",
        ),
        "EmbeddingList": obj(
            {
                "object": {"const": "list"},
                "model": STRING,
                "data": array(
                    obj(
                        {
                            "object": {"const": "embedding"},
                            "index": INTEGER,
                            "embedding": {"anyOf": [array(NUMBER), STRING]},
                        },
                        "object",
                        "index",
                        "embedding",
                    )
                ),
                "usage": obj({"prompt_tokens": INTEGER, "total_tokens": INTEGER}),
            },
            "object",
            "model",
            "data",
        ),
    }


SECRET: Final[Schema] = {
    "type": "string",
    "maxLength": 4096,
    "pattern": "^[ \t\r\n]*[!-~]+[ \t\r\n]*$",
    "description": "Visible ASCII (spaces and line ends around it are stripped).",
}
LABEL: Final[Schema] = {
    "type": "string",
    "maxLength": 200,
    "description": "One line of text: no control, separator or invisible format character.",
}


def api_schemas() -> dict[str, Schema]:
    """The dashboard's ``/api`` bodies (as :mod:`freellm.web.bodies` takes them: no other
    field, no other type) and answers."""
    window = obj(
        {
            "used": INTEGER,
            "cap": nullable(INTEGER),
            "left": nullable(INTEGER),
            "resets_at": nullable(TIME),
        },
        "used",
        "cap",
        "left",
    )
    return {
        "Key": obj(
            {
                "id": STRING,
                "provider": STRING,
                "label": STRING,
                "enabled": BOOLEAN,
                "routable": BOOLEAN,
                "secret_tail": nullable(STRING),
                "health": STRING,
                "health_since": nullable(TIME),
                "last_check": nullable(TIME),
                "last_error": nullable(STRING),
                "created_at": TIME,
                "today": obj({"requests": INTEGER, "tokens": INTEGER}, "requests", "tokens"),
            },
            "id",
            "provider",
            "label",
            "enabled",
            "routable",
            "health",
            description="A provider key. Its secret is never sent back: `secret_tail` is its "
            "last four characters at most.",
        ),
        "NewKey": obj(
            {
                "provider": {"type": "string", "minLength": 1, "maxLength": 100},
                "secret": SECRET,
                "label": LABEL,
            },
            "provider",
            "secret",
            additionalProperties=False,
        ),
        "KeyPatch": obj(
            {
                "enabled": nullable(BOOLEAN),
                "label": nullable(LABEL),
                "secret": nullable(SECRET),
            },
            additionalProperties=False,
            description="At least one of the three, not null.",
        ),
        "ChainEntry": obj(
            {
                "target": {"type": "string", "pattern": r"^[^/\s]+/\S+$"},
                "enabled": BOOLEAN,
            },
            "target",
            additionalProperties=False,
        ),
        "ChainUpdate": obj(
            {
                "entries": array(ref("ChainEntry"), minItems=1, maxItems=500),
                "name": nullable(
                    {
                        "type": "string",
                        "pattern": "^(auto|[a-z0-9][a-z0-9_-]{0,63})$",
                        "description": "The chain to replace; left out: `auto`'s.",
                    }
                ),
            },
            "entries",
            additionalProperties=False,
        ),
        "Chain": obj(
            {
                "data": array(
                    obj(
                        {
                            "target": STRING,
                            "enabled": BOOLEAN,
                            "keys": INTEGER,
                            "servable_now": BOOLEAN,
                            "retry_at": nullable(TIME),
                        },
                        "target",
                        "enabled",
                    )
                ),
                "source": {"enum": ["dashboard", "config"]},
                "in_use": array(STRING),
                "name": STRING,
                "chains": array(STRING),
            },
            "data",
            "source",
            "in_use",
            "name",
            "chains",
        ),
        "StrategyUpdate": obj(
            {"strategy": nullable({"enum": ["chain", "capacity"]})},
            "strategy",
            additionalProperties=False,
        ),
        "Strategy": obj(
            {
                "strategy": {"enum": ["chain", "capacity"]},
                "source": {"enum": ["dashboard", "config"]},
                "config": {"enum": ["chain", "capacity"]},
                "choices": array(STRING),
            },
            "strategy",
            "source",
            "config",
            "choices",
        ),
        "Catalog": obj(
            {
                "providers": array(
                    obj(
                        {
                            "id": STRING,
                            "name": STRING,
                            "dialect": {"enum": ["openai", "gemini", "cohere"]},
                            "keys": INTEGER,
                            "key_hint": obj({"looks_like": STRING, "url": nullable(STRING)}),
                            "models": array(
                                obj(
                                    {
                                        "id": STRING,
                                        "target": STRING,
                                        "caps": {"type": "object"},
                                        "context": nullable(INTEGER),
                                        "tools": BOOLEAN,
                                        "vision": BOOLEAN,
                                        "json": BOOLEAN,
                                    },
                                    "id",
                                    "target",
                                )
                            ),
                        },
                        "id",
                        "models",
                    )
                ),
                "presets": {"type": "object", "additionalProperties": array(STRING)},
            },
            "providers",
            "presets",
        ),
        "Quotas": obj(
            {
                "now": TIME,
                "rows": array(
                    obj(
                        {
                            "provider": STRING,
                            "key_id": STRING,
                            "model": STRING,
                            "windows": {"type": "object", "additionalProperties": window},
                            "available": BOOLEAN,
                            "blocked_reason": nullable(STRING),
                            "retry_at": nullable(TIME),
                        },
                        "provider",
                        "key_id",
                        "windows",
                    )
                ),
                "capacity": {"type": "object"},
                "targets": array({"type": "object"}),
            },
            "now",
            "rows",
            "targets",
        ),
        "Analytics": obj(
            {
                "window": {"enum": ["1h", "24h", "7d", "30d"]},
                "since": NUMBER,
                "until": NUMBER,
                "step_s": NUMBER,
                "totals": obj(
                    {
                        "requests": INTEGER,
                        "succeeded": INTEGER,
                        "success_rate": nullable(NUMBER),
                        "latency_ms": PERCENTILES,
                        "ttft_ms": PERCENTILES,
                    },
                    "requests",
                ),
                "timeline": array(
                    obj({"at": NUMBER, "requests": INTEGER, "errors": INTEGER}, "at", "requests")
                ),
                "providers": array({"type": "object"}),
                "models": array({"type": "object"}),
                "error_classes": array(obj({"class": STRING, "count": INTEGER}, "class", "count")),
            },
            "window",
            "totals",
            "timeline",
        ),
        "Requests": obj(
            {
                "data": array(
                    obj(
                        {
                            "id": STRING,
                            "at": TIME,
                            "model": STRING,
                            "routed_via": nullable(STRING),
                            "status": INTEGER,
                            "latency_ms": NUMBER,
                            "stream": BOOLEAN,
                            "error": nullable(STRING),
                            "attempts": array(
                                obj(
                                    {
                                        "n": INTEGER,
                                        "target": STRING,
                                        "status": nullable(INTEGER),
                                        "outcome": nullable(STRING),
                                        "latency_ms": nullable(NUMBER),
                                    },
                                    "n",
                                    "target",
                                )
                            ),
                        },
                        "id",
                        "at",
                        "model",
                        "status",
                        "attempts",
                    )
                )
            },
            "data",
        ),
    }
