"""The Face of a Responses request: a whole chat answer becomes a ``response`` object, and a
stream of chat chunks the Responses event sequence, as the exchange writes them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from freellm.core import wire
from freellm.core.doors import DoorError, Translated, openai_error
from freellm.core.doors.responses.answer import Item, echo, error_body, text_part, usage_of
from freellm.core.doors.responses.items import input_messages
from freellm.core.sse import Decoder, Event, EventTooLarge, encode

RATE_LIMIT_CODES: Final = frozenset({"rate_limited", "quota_exhausted"})
"""freellm's error codes that the Responses API calls ``rate_limit_exceeded`` in a failed
response; every other failure is its ``server_error``."""


class ResponsesFace:
    """One Responses request's side of the exchange (see :class:`freellm.core.doors.Face`).

    ``id`` is the request's id (``req_...``); the response's id is ``resp_`` and the same
    suffix, and its items' ids are ``msg_``/``fc_``, the suffix and the item's output index, so
    that a response and its stored copy name the same items. ``created`` is the request's time
    (whole epoch seconds); ``request`` the body the client sent, which ``translate`` accepted.
    """

    def __init__(
        self, translated: Translated, *, id: str, created: int, request: Mapping[str, Any]
    ) -> None:
        self._suffix = id.removeprefix("req_")
        self.id = "resp_" + self._suffix
        self._created = created
        self._model = request.get("model") if isinstance(request.get("model"), str) else ""
        self._echo = echo(request)
        messages = list(translated.body.get("messages") or ())
        if isinstance(request.get("instructions"), str) and request["instructions"]:
            messages = messages[1:]
        # The conversation so far, to store with the answer: the instructions are left out, as
        # they are not carried over to the next turn.
        self._turn: tuple[Mapping[str, Any], ...] = tuple(messages)
        self._final: dict[str, Any] | None = None
        self._over = False  # answered, finished or failed: nothing more is written
        # The stream's state.
        self._decoder = Decoder()
        self._sequence = 0
        self._started = False
        self._items: list[Item] = []
        self._message: Item | None = None
        self._calls: dict[object, Item] = {}
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None

    # -- the whole answer --

    def answer(self, status: int, body: bytes) -> bytes:
        """A ``response`` object for a 200 ``chat.completion``; else the error, as it is."""
        self._over = True
        if not 200 <= status < 300:
            return error_body(openai_error(status, body))
        try:
            completion = json.loads(body)
        except ValueError:
            completion = None
        choices = completion.get("choices") if isinstance(completion, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(completion, dict) or not isinstance(message, dict):
            return error_body(
                DoorError(502, "The provider's answer could not be read.", "api_error")
            )
        if isinstance(completion.get("model"), str) and completion["model"]:
            self._model = completion["model"]
        finish = choice.get("finish_reason") if isinstance(choice, dict) else None
        self._finish = finish if isinstance(finish, str) else None
        output = self._whole_output(message)
        self._final = self._response(self._status(), output, usage_of(completion.get("usage")))
        return wire.dumps(self._final)

    def _whole_output(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
        text = content if isinstance(content, str) else ""
        refusal = message.get("refusal") if isinstance(message.get("refusal"), str) else ""
        calls = [
            call
            for call in message.get("tool_calls") or ()
            if isinstance(call, dict) and isinstance(call.get("function"), dict)
        ]
        output: list[dict[str, Any]] = []
        status = "incomplete" if self._finish == "length" else "completed"
        if text or refusal or not calls:
            item = Item("message", self._item_id("msg", 0), 0)
            item.pieces.append(text)
            value = item.value(status)
            if refusal:
                if not text:
                    value["content"] = []
                value["content"].append({"type": "refusal", "refusal": refusal})
            output.append(value)
        for call in calls:
            function = call["function"]
            index = len(output)
            name = function.get("name")
            arguments = function.get("arguments")
            item = Item(
                "function_call",
                self._item_id("fc", index),
                index,
                call_id=self._call_id(call.get("id"), index),
                name=name if isinstance(name, str) else "",
            )
            item.pieces.append(arguments if isinstance(arguments, str) else "")
            output.append(item.value("completed"))
        return output

    # -- the stream --

    def feed(self, data: bytes) -> bytes:
        """The Responses events for stream bytes as the exchange writes them."""
        if self._over:
            return b""
        try:
            events = self._decoder.feed(data)
        except EventTooLarge:
            return self._fail("server_error", "The provider's stream held an event too large.")
        return self._events(events)

    def close(self) -> bytes:
        """What is still owed when the stream ends: a stream cut before its end fails."""
        if self._over:
            return b""
        try:
            out = self._events(self._decoder.close())
        except EventTooLarge:
            out = b""
        if self._over or not self._started:
            return out
        return out + self._fail("server_error", "The stream ended before the response did.")

    def _events(self, events: list[Event]) -> bytes:
        out = bytearray()
        for event in events:
            if self._over:
                break
            out += self._event(event)
        return bytes(out)

    def _event(self, event: Event) -> bytes:
        if event.event == "error":
            error = openai_error(502, event.data.encode())
            return self._fail(error.code or "server_error", error.message)
        if event.done:
            return self._close_items()
        try:
            chunk = json.loads(event.data)
        except ValueError:
            return b""
        if not isinstance(chunk, dict):
            return b""
        out = bytearray()
        if not self._started:
            if isinstance(chunk.get("model"), str) and chunk["model"]:
                self._model = chunk["model"]
            out += self._start()
        usage = usage_of(chunk.get("usage"))
        if usage is not None:
            self._usage = usage
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            return bytes(out)
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            if isinstance(content, str) and content:
                out += self._text(content)
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for position, call in enumerate(calls):
                    if isinstance(call, dict):
                        out += self._call_piece(call, position)
        finish = choice.get("finish_reason")
        if isinstance(finish, str):
            self._finish = finish
        return bytes(out)

    def _start(self) -> bytes:
        self._started = True
        response = self._response("in_progress", [], None)
        return self._emit("response.created", response=response) + self._emit(
            "response.in_progress", response=response
        )

    def _open(self, kind: str, call_id: object = None, name: str = "") -> Item:
        index = len(self._items)
        prefix = "msg" if kind == "message" else "fc"
        item = Item(
            kind,
            self._item_id(prefix, index),
            index,
            call_id=self._call_id(call_id, index) if kind != "message" else "",
            name=name,
        )
        self._items.append(item)
        return item

    def _text(self, text: str) -> bytes:
        out = b""
        item = self._message
        if item is None:
            item = self._message = self._open("message")
            out = self._added(item)
        item.pieces.append(text)
        return out + self._emit(
            "response.output_text.delta",
            item_id=item.id,
            output_index=item.index,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _added(self, item: Item) -> bytes:
        out = self._emit(
            "response.output_item.added", output_index=item.index, item=item.value("in_progress")
        )
        if item.kind == "message":
            out += self._emit(
                "response.content_part.added",
                item_id=item.id,
                output_index=item.index,
                content_index=0,
                part=text_part(""),
            )
        return out

    def _call_piece(self, call: Mapping[str, Any], position: int) -> bytes:
        """One piece of a streamed tool call: the first opens its item (OpenAI sends the call's
        id and name with it), the rest add to its arguments."""
        index = call.get("index")
        key: object = index if isinstance(index, int) else call.get("id") or position
        given = call.get("function")
        function: Mapping[str, Any] = given if isinstance(given, dict) else {}
        name = function.get("name")
        out = b""
        item = self._calls.get(key)
        if item is None:
            item = self._open(
                "function_call", call.get("id"), name if isinstance(name, str) else ""
            )
            self._calls[key] = item
            out = self._added(item)
        elif isinstance(name, str) and name and not item.name:
            item.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.pieces.append(arguments)
            out += self._emit(
                "response.function_call_arguments.delta",
                item_id=item.id,
                output_index=item.index,
                delta=arguments,
            )
        return out

    def _close_items(self) -> bytes:
        """The stream's end: every item's ``.done`` events, then the whole response."""
        out = bytearray()
        if not self._started:
            out += self._start()
        if not self._items:  # an empty answer is an empty message, as in a whole answer
            self._message = self._open("message")
            out += self._added(self._message)
        status = self._status()
        item_status = "incomplete" if status == "incomplete" else "completed"
        for item in self._items:
            value = item.value("completed" if item.kind == "function_call" else item_status)
            if item.kind == "message":
                text = value["content"][0]["text"]
                common = {"item_id": item.id, "output_index": item.index, "content_index": 0}
                out += self._emit("response.output_text.done", **common, text=text, logprobs=[])
                out += self._emit("response.content_part.done", **common, part=text_part(text))
            else:
                out += self._emit(
                    "response.function_call_arguments.done",
                    item_id=item.id,
                    output_index=item.index,
                    arguments=value["arguments"],
                )
            out += self._emit("response.output_item.done", output_index=item.index, item=value)
        output = [
            item.value("completed" if item.kind == "function_call" else item_status)
            for item in self._items
        ]
        self._final = self._response(status, output, self._usage)
        self._over = True
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        out += self._emit(kind, response=self._final)
        return bytes(out)

    def _fail(self, code: str, message: str) -> bytes:
        """A failure mid-stream: ``response.failed`` with what came so far, then ``error``."""
        out = b"" if self._started else self._start()
        self._over = True
        output = [item.value("incomplete") for item in self._items]
        failed_code = "rate_limit_exceeded" if code in RATE_LIMIT_CODES else "server_error"
        error = {"code": failed_code, "message": message}
        response = self._response("failed", output, self._usage, error=error)
        out += self._emit("response.failed", response=response)
        return out + self._emit("error", code=code, message=message, param=None)

    # -- both --

    def finished(self) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """The finished response and the conversation to store with it (the previous
        conversation, this turn's input and the answer, as chat messages); None when the request
        failed or has not finished."""
        if self._final is None:
            return None
        answer = input_messages(self._final["output"])
        if isinstance(answer, DoorError):
            return None  # a tool call with no name: not something a next turn could send
        return self._final, [dict(message) for message in self._turn] + answer

    def _status(self) -> str:
        return "incomplete" if self._finish == "length" else "completed"

    def _response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        *,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "error": error,
            "incomplete_details": incomplete,
            "model": self._model,
            "output": output,
            "usage": usage,
            **self._echo,
        }

    def _emit(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return encode(wire.dumps(event).decode(), event=kind)

    def _item_id(self, prefix: str, index: int) -> str:
        return f"{prefix}_{self._suffix}_{index}"

    def _call_id(self, given: object, index: int) -> str:
        return given if isinstance(given, str) and given else f"call_{self._suffix}_{index}"
