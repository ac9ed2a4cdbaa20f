"""A Messages request as an OpenAI chat completion request (:func:`translate`), or the 400
that refuses it; :func:`count_tokens` counts the same translation. The top-level fields are
read here, the conversation in :mod:`~freellm.core.doors.messages.turns`; the chat path's own
(:func:`~freellm.core.chat.inspect_request`) checks come last."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from freellm.core.chat import BadRequest, inspect_request
from freellm.core.doors import DoorError, Translated
from freellm.core.doors.messages.common import Refusal, among, is_int
from freellm.core.doors.messages.turns import chat_messages, system_text

EFFORT_BUDGETS: Final = ((4096, "low"), (16384, "medium"))
"""``thinking.budget_tokens`` below each bound is that ``reasoning_effort``; above all, high."""

EFFORTS: Final[Mapping[str, str]] = {
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}

REFUSED_FIELDS: Final[Mapping[str, str]] = {
    "container": "containers run Anthropic's code execution, which no free tier offers",
    "mcp_servers": "freellm does not connect to MCP servers for the model",
}

THINKING_TYPES: Final = frozenset({"enabled", "disabled", "adaptive", "between_tools"})
TOOL_CHOICES: Final = frozenset({"auto", "any", "tool", "none"})


def translate(body: object) -> Translated | DoorError:
    """A Messages request as a chat completion request, or why it is refused. Never raises."""
    return _translate(body, count_only=False)


def count_tokens(body: object) -> int | DoorError:
    """The estimator's count of a ``count_tokens`` request's prompt (system, messages, tools):
    what routing counts for the same request. ``max_tokens`` is not asked for."""
    translated = _translate(body, count_only=True)
    if isinstance(translated, DoorError):
        return translated
    return translated.shape.prompt_tokens


def _translate(body: object, *, count_only: bool) -> Translated | DoorError:
    try:
        chat = _chat_body(body, count_only=count_only)
    except Refusal as refusal:
        return refusal.error
    shape = inspect_request(chat)
    if isinstance(shape, BadRequest):
        # The door's own checks come first; what is left is a value the chat path holds to
        # tighter bounds. Its OpenAI param names the translated field, not the client's.
        return DoorError(400, shape.message, code=shape.code)
    return Translated(chat, shape)


def _chat_body(body: object, *, count_only: bool) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Refusal("", "The request body must be a JSON object.")
    for field, why in REFUSED_FIELDS.items():
        if body.get(field) is not None:
            raise Refusal(field, f"not supported: {why}.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Refusal("model", "Field required: a non-empty string.")
    chat: dict[str, Any] = {"model": model}

    messages: list[dict[str, Any]] = []
    if "system" in body:
        system = system_text(body["system"], "system")
        if system:
            messages.append({"role": "system", "content": system})
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise Refusal("messages", "Field required: a non-empty array of messages.")
    for index, message in enumerate(raw_messages):
        messages += chat_messages(message, f"messages.{index}")
    chat["messages"] = messages

    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        if not count_only:
            raise Refusal("max_tokens", "Field required.")
    elif not is_int(max_tokens) or max_tokens < 1:
        raise Refusal("max_tokens", "must be an integer >= 1.")
    elif not count_only:
        chat["max_tokens"] = max_tokens

    _sampling(body, chat)
    _session(body, chat)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise Refusal("stream", "must be a boolean.")
    if stream and not count_only:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}

    effort = _output_config(body.get("output_config"), chat)
    thinking = _thinking(body.get("thinking"))
    if thinking != "disabled" and (thinking or effort):
        chat["reasoning_effort"] = thinking or effort

    tools = body.get("tools")
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            raise Refusal("tools", "must be an array of tools.")
        chat_tools = [_tool(tool, f"tools.{index}") for index, tool in enumerate(tools)]
        names = [tool["function"]["name"] for tool in chat_tools]
        if chat_tools:
            chat["tools"] = chat_tools
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], names, chat)
    return chat


def _sampling(body: Mapping[str, Any], chat: dict[str, Any]) -> None:
    """``stop_sequences``, ``temperature``, ``top_p`` and ``top_k``, onto ``chat``."""
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise Refusal("stop_sequences", "must be an array of non-empty strings.")
        if stop:
            chat["stop"] = list(stop)
    for field in ("temperature", "top_p"):  # Anthropic's range for both
        value = body.get(field)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise Refusal(field, "must be a number between 0 and 1.")
            chat[field] = value
    top_k = body.get("top_k")
    if top_k is not None:
        if not is_int(top_k) or top_k < 0:
            raise Refusal("top_k", "must be an integer >= 0.")
        chat["top_k"] = top_k


def _session(body: Mapping[str, Any], chat: dict[str, Any]) -> None:
    """``metadata.user_id`` as ``user``: what names the session (the sticky model)."""
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise Refusal("metadata", "must be an object.")
        user = metadata.get("user_id")
        if user is not None and not isinstance(user, str):
            raise Refusal("metadata.user_id", "must be a string.")
        if user:
            chat["user"] = user


def _tool(tool: object, path: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise Refusal(path, "must be an object.")
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise Refusal(
            f"{path}.type",
            f"`{kind}` is a tool Anthropic defines or runs itself; freellm's providers know only "
            "custom tools (name, description, input_schema).",
        )
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise Refusal(f"{path}.name", "Field required: a non-empty string.")
    schema = tool.get("input_schema")
    if not isinstance(schema, dict):
        raise Refusal(f"{path}.input_schema", "Field required: a JSON Schema object.")
    function: dict[str, Any] = {"name": name, "parameters": schema}
    description = tool.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise Refusal(f"{path}.description", "must be a string.")
        function["description"] = description
    strict = tool.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            raise Refusal(f"{path}.strict", "must be a boolean.")
        function["strict"] = strict
    return {"type": "function", "function": function}


def _tool_choice(choice: object, names: list[str], chat: dict[str, Any]) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or not among(kind, TOOL_CHOICES):
        raise Refusal("tool_choice.type", 'must be "auto", "any", "tool" or "none".')
    parallel = choice.get("disable_parallel_tool_use")
    if parallel is not None and not isinstance(parallel, bool):
        raise Refusal("tool_choice.disable_parallel_tool_use", "must be a boolean.")
    if not names:
        if kind in ("any", "tool"):
            raise Refusal("tool_choice", f'"{kind}" needs `tools`.')
        return  # OpenAI refuses a tool_choice without tools; without tools there is no choice
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or name not in names:
            raise Refusal("tool_choice.name", "must name one of `tools`.")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if parallel:
        chat["parallel_tool_calls"] = False


def _thinking(thinking: object) -> str | None:
    """``reasoning_effort`` for ``thinking``, ``"disabled"``, or None (the provider's default)."""
    if thinking is None:
        return None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if not isinstance(thinking, dict) or not among(kind, THINKING_TYPES):
        raise Refusal("thinking.type", f"must be one of {', '.join(sorted(THINKING_TYPES))}.")
    if kind == "disabled":
        return "disabled"
    if kind != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not is_int(budget) or budget < 1:
        raise Refusal("thinking.budget_tokens", "Field required: an integer >= 1.")
    for bound, effort in EFFORT_BUDGETS:
        if budget < bound:
            return effort
    return "high"


def _output_config(config: object, chat: dict[str, Any]) -> str | None:
    """Sets ``response_format`` from ``output_config.format``; returns its effort, if any."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise Refusal("output_config", "must be an object.")
    effort = config.get("effort")
    if effort is not None and not among(effort, EFFORTS):
        raise Refusal("output_config.effort", f"must be one of {', '.join(EFFORTS)}.")
    format_ = config.get("format")
    if format_ is not None:
        if not isinstance(format_, dict) or format_.get("type") != "json_schema":
            raise Refusal("output_config.format.type", 'must be "json_schema".')
        schema = format_.get("schema")
        if not isinstance(schema, dict):
            raise Refusal("output_config.format.schema", "Field required: a JSON Schema object.")
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True},
        }
    return EFFORTS[effort] if effort is not None else None
