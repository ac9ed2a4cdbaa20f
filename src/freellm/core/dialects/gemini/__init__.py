"""The Gemini dialect: OpenAI chat requests to ``generateContent`` and Gemini's answers back.

Theory of operation
-------------------
Four pure translations, each a function of its input alone (no clock, no randomness):

- :func:`translate_request`: an OpenAI ``/v1/chat/completions`` body (already checked by
  :func:`freellm.core.chat.inspect_request`) becomes a ``generateContent`` body, or an
  :class:`Untranslatable` naming the OpenAI field Gemini cannot honour. It never raises.
- :func:`translate_response`: a ``GenerateContentResponse`` becomes a ``chat.completion`` and its
  :class:`~freellm.core.dialects.openai.Usage`.
- :func:`stream_step`: the stream as a fold, ``(StreamState, event) -> (StreamState, chunks)``.
  With ``alt=sse`` every event is a whole ``GenerateContentResponse`` holding the next parts; there
  is no ``[DONE]``: the event carrying ``finishReason`` (and the final ``usageMetadata``) ends it.
  :class:`GeminiStreamFold` wraps the fold in :class:`~freellm.core.dialects.openai.StreamFold`'s
  interface (SSE wire bytes out, ``usage``, ``done``, ``completion_tokens``, :class:`StreamError`).
  Responses and streams read parts through the same function, so a streamed answer assembles to
  exactly the message the same parts give unstreamed, tool-call ids included.
- :func:`encode_call_id` / :func:`decode_call_id`: Gemini's ``thoughtSignature`` round trip.

Thought signatures
------------------
Gemini 2.5+ puts an opaque ``thoughtSignature`` (base64 bytes) on some parts; Gemini 3 refuses a
tool-calling turn whose first ``functionCall`` part comes back without its signature. An OpenAI
client only echoes the assistant message, so the signature rides in the one field every client
echoes verbatim, the tool call's ``id``::

    call_<12 hex>                          no signature
    call_<12 hex>_<place><form><payload>   place: c = on this functionCall part,
                                                  t = on the message's text part
                                           form:  a = the signature's own base64 in the URL-safe
                                                      alphabet, padding dropped
                                                  h = hex of its UTF-8 (any other text)

The 12 hex digits are a digest of the response id, the choice, the call's position, its name and
its arguments: stable, deterministic and distinct within a conversation. Every id matches
``[A-Za-z0-9_-]+``, so strict validators of tool-call ids accept it; its length is
``20 + len(signature)`` for form ``a`` (less the padding), ``20 + 2 * bytes`` for ``h`` (which
Gemini's own signatures, canonical base64, never need).
Signatures run from a few hundred characters to several kilobytes, and so do these ids.

A text part's signature has no field of its own in an OpenAI message (putting it in ``content``
would show it to the user), so it is carried by the id of the next tool call that has no
signature of its own (place ``t``), and put back on the text part of that assistant message. A
text signature with no later tool call (a final answer) is dropped: Gemini validates signatures
only in the current tool-calling turn. Signatures on thought parts are dropped with the thoughts.
Going up, the first ``functionCall`` part of each model turn that has no signature (a turn
another provider or the client wrote) gets Gemini's documented placeholder, :data:`SKIP_SIGNATURE`.

Generation settings
-------------------
``temperature``, ``top_p``, ``top_k``, ``max_tokens``/``max_completion_tokens`` (the smaller),
``stop``, ``seed`` (folded into Gemini's int32), ``n`` and ``response_format`` go into
``generationConfig``; ``reasoning_effort`` becomes ``thinkingConfig.thinkingBudget`` with the
budgets Gemini's own OpenAI endpoint uses (none and minimal 0, low 1024, medium 8192, high 24576).

Not translated
--------------
An :class:`Untranslatable` (the shell answers 400 naming ``param``, or skips to another provider)
for: ``logit_bias``, ``logprobs``/``top_logprobs``, non-zero ``presence_penalty`` and
``frequency_penalty`` (Gemini 2.5 refuses penalties), ``audio`` and non-text ``modalities``,
``web_search_options``, an unknown ``reasoning_effort``, more than five ``stop`` sequences, non-text
system content, ``file_id`` files, non-base64 data URLs, image URLs that are neither ``data:`` nor
http(s), tool names Gemini refuses, tool parameters that do not describe an object, arguments of
a past tool call that are not a JSON object, a tool message whose ``tool_call_id`` matches no
earlier tool call, a named ``tool_choice`` that names no declared function, and any other
``tool_choice`` form. Ignored: ``parallel_tool_calls``, ``user``, ``metadata``, ``store``,
``service_tier``, ``prediction``, ``stream_options`` (the fold handles usage), image ``detail``,
and any field this module does not know. System and developer messages anywhere in the
conversation are joined into ``systemInstruction``. http(s) image URLs go as
``fileData{fileUri, mimeType}`` (Gemini fetches public and signed URLs itself since January 2026),
with the MIME type taken from the file extension when it is a known one.
"""

from __future__ import annotations

from freellm.core.dialects import Untranslatable
from freellm.core.dialects.gemini.request import endpoint, translate_request
from freellm.core.dialects.gemini.response import (
    FINISH_REASONS,
    ChoiceState,
    translate_response,
    usage_of,
)
from freellm.core.dialects.gemini.schema import clean_schema
from freellm.core.dialects.gemini.signatures import (
    SKIP_SIGNATURE,
    Signature,
    decode_call_id,
    encode_call_id,
)
from freellm.core.dialects.gemini.stream import GeminiStreamFold, StreamState, stream_step

__all__ = [
    "FINISH_REASONS",
    "SKIP_SIGNATURE",
    "ChoiceState",
    "GeminiStreamFold",
    "Signature",
    "StreamState",
    "Untranslatable",
    "clean_schema",
    "decode_call_id",
    "encode_call_id",
    "endpoint",
    "stream_step",
    "translate_request",
    "translate_response",
    "usage_of",
]
