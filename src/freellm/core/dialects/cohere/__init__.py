"""The Cohere dialect: OpenAI chat requests to Cohere's native ``POST /v2/chat``, and answers back.

Three pure translations, none of which raises on any input:

- :func:`prepare_body` turns an OpenAI ``/v1/chat/completions`` body into a Cohere v2 chat body,
  or returns an :class:`Untranslatable` naming the OpenAI field (``param`` style, as in
  :mod:`freellm.core.chat`) that Cohere cannot express. The shell turns that into a 400 or skips
  to a provider that can serve the request.
- :func:`translate_response` turns a Cohere ``V2ChatResponse`` into an OpenAI ``chat.completion``
  (an :class:`Answer`), or an :class:`UpstreamFailure` when Cohere reports ``ERROR``/``TIMEOUT``
  or the body is not a chat response.
- :func:`fold_event` is one step of the stream translation: ``(StreamState, sse.Event) ->
  (StreamState, [chunk bytes])``. :class:`StreamFold` wraps it behind the interface of
  :class:`freellm.core.dialects.openai.StreamFold` (``step``, ``usage``, ``done``,
  ``completion_tokens``; :class:`~freellm.core.dialects.openai.StreamError` on an error).

What is translated (OpenAI -> Cohere)
-------------------------------------
==========================================  ======================================================
OpenAI                                      Cohere v2
==========================================  ======================================================
``messages``: system, developer             ``system`` (text, or text parts)
user (text and ``image_url`` parts)         ``user``, parts kept; ``image_url`` {url, detail} is
                                            Cohere's own shape (only vision models such as
                                            command-a-vision accept it; routing checks that)
assistant (text, ``refusal`` parts)         ``assistant`` ``content``
assistant with ``tool_calls``               ``tool_calls`` [{id, type, function{name, arguments}}];
                                            its text (or a ``tool_plan`` field) -> ``tool_plan``
tool (``tool_call_id``, text)               ``tool`` with ``tool_call_id``; a string stays a
                                            string, text parts stay text parts
``tools`` (function)                        ``tools`` {type, function{name, description,
                                            parameters}}; no parameters -> an empty object schema;
                                            every tool ``strict`` -> ``strict_tools: true``
``tool_choice`` auto / none / required      omitted / ``NONE`` / ``REQUIRED``
``max_tokens``, ``max_completion_tokens``   ``max_tokens`` (the smaller of the two)
``temperature``, ``seed``                   the same
``top_p``                                   ``p``, clamped to Cohere's [0.01, 0.99] (Cohere's
                                            default is 0.75, so an explicit 1 becomes 0.99)
``top_k`` (not OpenAI, sent by some)        ``k``, clamped to [0, 500]
``frequency_penalty``, ``presence_penalty`` the same, clamped from OpenAI's [-2, 2] to [0, 1]
``stop`` (string or array)                  ``stop_sequences``
``response_format`` json_object             ``{type: "json_object"}``
``response_format`` json_schema             ``{type: "json_object", json_schema: <its schema>}``
``stream``                                  ``stream`` (Cohere always reports usage at the end)
==========================================  ======================================================

Dropped: hints Cohere has no knob for, which leave the answer's shape as it is: ``user``,
``metadata``, ``store``, ``service_tier``, ``stream_options`` (honoured by the fold),
``parallel_tool_calls`` (Cohere may call several tools at once either way), ``n`` (1;
:mod:`freellm.core.chat` refuses more), ``reasoning_effort``, ``verbosity``, ``prediction``, a
user message's ``name``, and any field unknown to OpenAI (vendor extensions mean nothing to
Cohere, so they are not forwarded).

Untranslatable: ``tool_choice`` naming a function (Cohere can only force *some* tool) or
``required`` without tools, the legacy ``functions``/``function_call`` and ``function`` role,
a non-empty ``logit_bias``, ``logprobs``/``top_logprobs`` (Cohere's logprobs have another shape),
audio output (``audio``, ``modalities`` other than text), ``web_search_options``, images outside
user messages, content parts other than text and images (``input_audio``, ``file``), and values
of the wrong type where a translation has to read them.

What comes back (Cohere -> OpenAI)
----------------------------------
- ``finish_reason``: COMPLETE and STOP_SEQUENCE -> ``stop``, MAX_TOKENS -> ``length``, TOOL_CALL
  -> ``tool_calls`` (so is COMPLETE when the message made tool calls); ERROR and TIMEOUT are
  failures, not answers. Anything else -> ``stop``.
- ``tool_plan`` (the model's "I will look up the weather...") becomes the message's ``content``,
  before any text. It is what an OpenAI model says beside its tool calls, clients show it, and
  when the client sends the assistant message back its text becomes ``tool_plan`` again, so the
  plan survives the round trip. In streams, tool-plan deltas are content deltas.
- ``content`` text parts are joined; ``thinking`` parts (reasoning models) become
  ``reasoning_content``, the field other OpenAI-compatible providers use for it.
- Tool calls keep Cohere's ids. ``refusal`` is ``null``, ``annotations`` ``[]``. Citations are
  dropped: OpenAI's annotations describe URLs, Cohere's describe spans of documents.
- Usage: ``usage.billed_units`` input/output tokens, each falling back to ``usage.tokens``.
- The OpenAI ``id`` is ``chatcmpl-`` + Cohere's id; ``model`` and ``created`` come in as
  arguments (the core reads no clock).

The stream (theory of operation)
--------------------------------
Cohere frames its stream as SSE with the event type twice, ``event: content-delta`` and
``data: {"type": "content-delta", ...}``. The fold reads ``type`` from the data and falls back to
the ``event:`` name, so either alone is enough. It sends, as OpenAI does: a role chunk first (on
message-start, or before the first delta if message-start never came), content deltas (tool plan,
text), ``reasoning_content`` deltas, tool-call deltas with ``index`` on every one (``id``,
``type`` and ``name`` on the first delta of each call, ``arguments`` in pieces), then on
message-end a chunk with ``finish_reason``, a usage chunk (``choices: []``) only when the client
asked for ``stream_options.include_usage``, and ``data: [DONE]``. The stream is done at
message-end, whether or not a ``[DONE]`` follows (Cohere's SDK accepts one; one after
message-end is ignored, one before it ends the stream as it is). content-end, tool-call-end,
citation-* and debug events produce nothing. A message-end with ERROR/TIMEOUT, an ``error``
event, an event whose data is an error object, or one whose data is not a JSON object at all
puts a :class:`StreamFailure` in the state; the fold then raises ``StreamError`` and nothing more
is sent.
"""

from __future__ import annotations

from freellm.core.dialects import Untranslatable
from freellm.core.dialects.cohere.request import prepare_body
from freellm.core.dialects.cohere.response import (
    FINISH_REASONS,
    Answer,
    UpstreamFailure,
    translate_response,
    usage_of,
)
from freellm.core.dialects.cohere.stream import StreamFailure, StreamFold, StreamState, fold_event

__all__ = [
    "FINISH_REASONS",
    "Answer",
    "StreamFailure",
    "StreamFold",
    "StreamState",
    "Untranslatable",
    "UpstreamFailure",
    "fold_event",
    "prepare_body",
    "translate_response",
    "usage_of",
]
