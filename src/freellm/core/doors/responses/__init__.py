"""OpenAI's Responses API (``POST /v1/responses``) as a door onto chat completions.

Theory of operation
-------------------
Two pure translations, each a function of its input alone (no clock, no randomness):

- :func:`translate` (:mod:`.request`) turns a Responses request into a chat completion request,
  or the :class:`~freellm.core.doors.DoorError` saying why it cannot be one; it never raises.
  ``instructions`` becomes a system message first, then come the messages of the conversation a
  ``previous_response_id`` names (the web layer looks them up and passes them as ``previous``),
  then this turn's ``input`` items (:mod:`.items`): ``message`` items become chat messages,
  ``function_call`` items the assistant's ``tool_calls`` (joined onto the assistant message just
  before them, as a chat answer holds them), ``function_call_output`` items ``tool`` messages;
  ``reasoning`` items are dropped (no free tier reads them back). Output items read as input
  items the same way, which is what lets a conversation continue by id and what the round trip
  of the tests rests on. ``max_output_tokens``, ``text.format``, ``reasoning.effort`` and
  ``prompt_cache_key`` become ``max_tokens``, ``response_format``, ``reasoning_effort`` and
  ``session_id``; a chat request's 400 names the field as the door's client named it.
- :class:`ResponsesFace` (:mod:`.face`) turns what the exchange writes back into the Responses
  API's shapes (:mod:`.answer`): a ``chat.completion`` becomes a ``response`` object, an error
  body the same error in OpenAI's shape (:func:`error_body`), which the Responses API shares.
  :meth:`ResponsesFace.finished` gives the finished response and the conversation to store with
  it (:func:`wants_store` says whether to; :func:`not_found` is the 404 for an id not stored).

Streams
-------
A stream of ``chat.completion.chunk`` events becomes the Responses event sequence
(``response.created``, ``response.in_progress``, an ``output_item.added`` and its deltas per
output item, their ``.done`` events, and ``response.completed``, or ``response.incomplete`` when
the answer ran out of tokens), each with its ``sequence_number`` and an ``event:`` line. Items are
opened as their first delta arrives (text opens the message, a tool call its ``function_call``)
and closed together when the stream ends, in the order they were opened. A failure mid-stream is
``response.failed`` (the output so far, status ``incomplete``) followed by an ``error`` event; so
is a stream cut short once it has begun.

Refused
-------
What is refused, with a 400 naming the field: tools other than function tools (``tools[2].type``),
a ``tool_choice`` naming a built-in tool, ``background: true``, ``conversation``, ``prompt``
templates, ``include`` values that ask for output freellm cannot give (logprobs, built-in tool
results), ``top_logprobs``, file inputs (``input_file``, ``file_id``), and input items of built-in
tools. Fields that only tune the service (``service_tier``, ``safety_identifier``,
``prompt_cache_retention``, ``text.verbosity``) are accepted and ignored.
"""

from __future__ import annotations

from freellm.core.doors.responses.answer import error_body, not_found
from freellm.core.doors.responses.face import RATE_LIMIT_CODES, ResponsesFace
from freellm.core.doors.responses.items import DETAILS, ROLES
from freellm.core.doors.responses.request import (
    EFFORTS,
    HARMLESS_INCLUDES,
    SUMMARIES,
    TOOL_CHOICES,
    translate,
    wants_store,
)

__all__ = [
    "DETAILS",
    "EFFORTS",
    "HARMLESS_INCLUDES",
    "RATE_LIMIT_CODES",
    "ROLES",
    "SUMMARIES",
    "TOOL_CHOICES",
    "ResponsesFace",
    "error_body",
    "not_found",
    "translate",
    "wants_store",
]
