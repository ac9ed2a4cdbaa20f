"""Anthropic's Messages API (``POST /v1/messages``) as a door onto the chat path.

Theory of operation
-------------------
A Messages request becomes an OpenAI chat completion request (:func:`translate`), routed like any
other; the chat answer becomes a Messages answer (:class:`MessagesFace`), a whole ``Message`` or
Anthropic's stream of events. ``POST /v1/messages/count_tokens`` is :func:`count_tokens`, the
estimator's count of the same translation. Errors are Anthropic-shaped (:func:`error_body`).
Everything here is a pure function of its input, or (the face) of the bytes fed to it so far.

- :mod:`.request`: :func:`translate` and :func:`count_tokens`, the top-level fields and the
  refusals; :mod:`.turns`: the conversation (system prompts, turns, blocks, tool results,
  images). A refusal is raised as :class:`~.common.Refusal` however deep the check, and
  returned as a :class:`~freellm.core.doors.DoorError`: neither function raises.
- :mod:`.answer`: a ``chat.completion`` as a ``Message`` (:func:`message_of`), ``stop_reason``,
  and :func:`error_body`.
- :mod:`.stream`: :class:`MessagesFace`, which answers whole through :mod:`.answer` and folds a
  stream event by event into Anthropic's events.

Requests
--------
Translated: ``model`` as given (``auto``, ``auto:NAME``, a catalog model, ``provider/model``, or a
Claude name the router maps to a chain); ``system`` (a string or text blocks) and ``system``-role
messages become system messages; ``text`` blocks (joined with a blank line when a message holds
text alone), ``image`` blocks (base64 as a ``data:`` URL, or a URL) in user turns; ``tool_use``
blocks become the assistant's ``tool_calls`` (``input`` as JSON text); ``tool_result`` blocks
become ``tool`` messages, ahead of the rest of their turn as OpenAI wants them (their text
joined; ``is_error`` marks the text with ``(error)``; their images follow in a user message);
``thinking`` and ``redacted_thinking`` blocks of past assistant turns are dropped (no provider
could check their signatures); ``tools`` (custom tools: ``name``, ``description``,
``input_schema``, ``strict``); ``tool_choice`` (``auto``, ``any`` as ``required``, ``tool`` as the
named function, ``none``; ``disable_parallel_tool_use`` as ``parallel_tool_calls: false``);
``max_tokens``; ``stop_sequences`` as ``stop``; ``temperature``, ``top_p``, ``top_k``;
``metadata.user_id`` as ``user`` (the session); ``stream`` (with ``stream_options.include_usage``:
the closing ``message_delta`` carries the usage); ``thinking`` ``enabled`` as ``reasoning_effort``
by its budget (below 4,096 tokens ``low``, below 16,384 ``medium``, else ``high``; the adapters
send it only to models that reason), else ``output_config.effort`` (``xhigh`` and ``max`` as
``high``); ``output_config.format`` (a JSON schema) as ``response_format``.

Ignored, as they ask nothing a free tier can give or refuse: ``cache_control`` (anywhere),
``citations`` on text blocks, ``service_tier``, ``inference_geo``, ``speed``, ``diagnostics``,
``user_profile_id``, ``workspace_id``, ``context_management`` (the conversation goes as sent,
uncleared: too long for a model, it is routed to a larger one or refused as any would be), and
top-level fields this door does not know. An assistant turn left with nothing (an empty one, or
one of thinking alone) is dropped.

Refused with a 400 naming Anthropic's field path (``messages.0.content.1.type``): a missing
``max_tokens`` (``count_tokens`` does without), ``max_tokens`` below 1 (no prompt cache to warm),
``document``, ``search_result``, ``server_tool_use`` and every server tool's result blocks, image
``file`` sources (no Files API), server and Anthropic-defined tools (web search and fetch, code
execution, bash, text editor, computer, memory, tool search...), ``container``, ``mcp_servers``,
and anything not of Anthropic's shapes.

Answers
-------
A ``chat.completion`` becomes a ``Message`` whose ``id`` comes from the request id (``req_X`` ->
``msg_X``): a ``thinking`` block for ``reasoning_content`` (or ``reasoning``) with an empty
``signature`` (freellm cannot sign), a ``text`` block when there is text, a ``tool_use`` block per
tool call (the call's id, or ``toolu_N`` by position when it has none; ``input`` the parsed
arguments: empty arguments are ``{}``, and arguments that are not a JSON object are kept as
``{"arguments": <the text>}``, so the client's schema check fails and shows the model what it
wrote instead of running the tool with nothing); ``stop_reason`` ``tool_use`` when there are tool
calls, ``max_tokens`` for ``length``, ``refusal`` for ``content_filter``, ``stop_sequence`` when the
provider says which stop sequence matched (vLLM's ``stop_reason``, SGLang's ``matched_stop``) or
the text ends with one (providers that keep it; the text keeps it too, as a stream's text
already sent would), else ``end_turn``: most providers strip the stop sequence and do not say,
so a stop sequence usually reads as ``end_turn``; ``usage`` from the chat usage, else the
estimates.

Streams: ``message_start`` (usage: the prompt's estimate) and ``ping`` at the first chunk; then
content blocks in order of appearance, each opened by ``content_block_start`` and closed by
``content_block_stop`` before the next starts, with ``thinking_delta``, ``text_delta`` and
``input_json_delta`` pieces as they come (a tool call's are the provider's argument pieces).
A block cannot reopen, and some providers interleave the pieces of parallel calls: so a tool
call's block closes for the next block only once its arguments are a whole JSON value; until
then, pieces of anything else are held, and sent whole, one block each, at the
``finish_reason`` (pieces that come for a call after its arguments were whole are dropped: they
could only break them). The JSON answer's rule for arguments that are not an object cannot apply
to pieces already sent. A call whose first piece has no name is held until its name comes. At
``[DONE]``: ``message_delta`` (``stop_reason``, the usage chunk's tokens, else the estimates)
and ``message_stop``. A failure mid-stream, or a stream cut before ``[DONE]``, is an ``error``
event (``api_error``), and nothing after it.

Errors: ``{"type": "error", "error": {"type", "message"}}`` with freellm's message and status, the
type by status: 400 ``invalid_request_error``, 401 ``authentication_error``, 403
``permission_error``, 404 ``not_found_error``, 408 and 504 ``timeout_error``, 413
``request_too_large``, 429 ``rate_limit_error``, 529 ``overloaded_error``, any other 4xx
``invalid_request_error``, any other 5xx (502: every provider failed; 503: no key configured)
``api_error``: ``overloaded_error`` would tell agents to retry at once, which a missing key does
not deserve.
"""

from __future__ import annotations

from freellm.core.doors.messages.answer import (
    ERROR_TYPES,
    FINISH_REASONS,
    error_body,
    error_type,
    message_id,
    message_of,
    tool_input,
)
from freellm.core.doors.messages.request import (
    EFFORT_BUDGETS,
    EFFORTS,
    REFUSED_FIELDS,
    THINKING_TYPES,
    TOOL_CHOICES,
    count_tokens,
    translate,
)
from freellm.core.doors.messages.stream import MessagesFace
from freellm.core.doors.messages.turns import (
    ASSISTANT_BLOCKS,
    IMAGE_TYPES,
    REFUSED_BLOCKS,
    TOOL_RESULT_BLOCKS,
    USER_BLOCKS,
)

__all__ = [
    "ASSISTANT_BLOCKS",
    "EFFORTS",
    "EFFORT_BUDGETS",
    "ERROR_TYPES",
    "FINISH_REASONS",
    "IMAGE_TYPES",
    "REFUSED_BLOCKS",
    "REFUSED_FIELDS",
    "THINKING_TYPES",
    "TOOL_CHOICES",
    "TOOL_RESULT_BLOCKS",
    "USER_BLOCKS",
    "MessagesFace",
    "count_tokens",
    "error_body",
    "error_type",
    "message_id",
    "message_of",
    "tool_input",
    "translate",
]
