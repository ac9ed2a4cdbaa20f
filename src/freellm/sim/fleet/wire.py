"""What a simulated provider sends: the fake flavor's bytes, built once, filled in per call.

Each provider speaks one fake flavor (:data:`freellm.sim.fakes.ALL_FLAVORS`): the OpenAI
dialect's ``groq``, ``cerebras`` and ``openrouter`` for those providers, ``openai`` for every
other OpenAI-dialect provider, and ``gemini`` and ``cohere`` for the native dialects. The fakes'
dialects (:func:`freellm.sim.fakes.app.make_dialect`) are pure where the fleet uses them, so
their builders are reused as they are:

- refusals (a 401 or Gemini's 400 ``API_KEY_INVALID``, a 503) are built once per provider;
- a 429 is built per call by the dialect's ``rate_limited`` (it names the cap, its use and when
  it frees up), with the flavor's rate-limit headers;
- a success is the dialect's own answer to a one-message request, built once per model, in which
  the values that change per call (usage, id, ``created``) are replaced by ``%``-format slots,
  so that a call costs one bytes formatting. Its usage is the caller's, exactly: the fakes count
  usage from the message text and add Gemini's thought tokens; the fleet reports what the trace
  says the request cost, so that freellm's ledger settles what the trace recorded.

Bodies are compact JSON, headers lower-case, as the fakes send them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any, Final

from freellm.core.catalog import Dialect, ProviderSpec
from freellm.sim.fakes.answers import ErrorAnswer
from freellm.sim.fakes.app import make_dialect
from freellm.sim.fakes.caps import Dimension, Standing, Violation, WindowName
from freellm.sim.fakes.cohere import PREAMBLE_TOKENS
from freellm.sim.fakes.exchange import json_headers
from freellm.sim.fakes.flavors import FLAVORS
from freellm.sim.fakes.gemini_request import GeminiRequest
from freellm.sim.fakes.replies import ChatRequest

__all__ = ["Headers", "Voice", "flavor_for"]

Headers = list[tuple[bytes, bytes]]
Standings = Mapping[tuple[Dimension, WindowName], Standing]

_PROMPT: Final = ({"role": "user", "content": "hi"},)
# Values no answer carries otherwise, put where the per-call values go, then made format slots.
_SERIAL: Final = 9_100_000_006
_SLOTS: Final = {
    "9100000001": b"%(p)d",
    "9100000002": b"%(c)d",
    "9100000003": b"%(t)d",
    "9100000004": b"%(created)d",
    "9100000005": b"%(pp)d",
    str(_SERIAL): b"%(serial)06d",
    str(uuid.UUID(int=_SERIAL)): b"00000000-0000-0000-0000-%(serial)012x",
}
_P, _C, _T, _CREATED, _PP = (
    9_100_000_001,
    9_100_000_002,
    9_100_000_003,
    9_100_000_004,
    9_100_000_005,
)
_NATIVE: Final = {Dialect.GEMINI: "gemini", Dialect.COHERE: "cohere"}


def flavor_for(spec: ProviderSpec, chosen: str | None = None) -> str:
    """The fake flavor `spec`'s provider speaks: `chosen`, else the one its dialect and id name.

    Raises ``ValueError`` for a flavor of another dialect than the provider's.
    """
    natural = _NATIVE.get(spec.dialect) or (spec.id if spec.id in FLAVORS else "openai")
    if chosen is None:
        return natural
    dialect = {"gemini": Dialect.GEMINI, "cohere": Dialect.COHERE}.get(chosen, Dialect.OPENAI)
    if dialect is not spec.dialect or (dialect is Dialect.OPENAI and chosen not in FLAVORS):
        raise ValueError(
            f"flavor {chosen!r} does not fit {spec.id!r}, a {spec.dialect.value}-dialect provider"
        )
    return chosen


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _template(body: Mapping[str, Any]) -> bytes:
    """`body` as compact JSON whose sentinels are ``%``-format slots."""
    text = _dumps(body).replace(b"%", b"%%")
    for sentinel, slot in _SLOTS.items():
        text = text.replace(sentinel.encode(), slot)
    if b"91000000" in text:
        raise AssertionError(f"a sentinel was left in a template: {text!r}")
    return text


class Voice:
    """One provider's wire in `flavor`: its answers and refusals, as bytes.

    `input_tokens_only`: the flavor's token caps count the prompt only (Gemini's input-token
    quota); `reported`: the caps its rate-limit headers describe.
    """

    def __init__(self, flavor: str) -> None:
        self.flavor = flavor
        self.dialect = make_dialect(flavor)
        self.reported: tuple[tuple[Dimension, WindowName], ...] = self.dialect.reported
        self.input_tokens_only = flavor == "gemini"
        self.unauthorized = self._refusal(self.dialect.unauthorized(True))
        self.unavailable = self._refusal(self.dialect.server_error(503))
        self._templates: dict[str, bytes] = {}

    @staticmethod
    def _refusal(error: ErrorAnswer) -> tuple[int, tuple[tuple[bytes, bytes], ...], bytes]:
        data = _dumps(error.body)
        return error.status, tuple(json_headers(len(data), error.headers)), data

    def template(self, model: str) -> bytes:
        """The success answer on `model`, with slots ``p``, ``c``, ``t`` (prompt, completion
        and total tokens), ``pp`` (Cohere's input tokens with its preamble), ``serial`` and
        ``created``."""
        found = self._templates.get(model)
        if found is None:
            found = self._templates[model] = _template(self._answer(model))
        return found

    def _answer(self, model: str) -> dict[str, Any]:
        chat = ChatRequest(model=model, messages=_PROMPT)
        if self.flavor == "gemini":
            request: Any = GeminiRequest(chat, (), False, False, False)
            body = dict(self.dialect.answer(request, _SERIAL, _CREATED).body)
            # Gemini's own counts, without the fakes' thought tokens: the caller's usage.
            body["usageMetadata"] = {
                "promptTokenCount": _P,
                "candidatesTokenCount": _C,
                "totalTokenCount": _T,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": _P}],
            }
            return body
        body = dict(self.dialect.answer(chat, _SERIAL, _CREATED).body)
        if self.flavor == "cohere":
            body["usage"] = {
                "billed_units": {"input_tokens": _P, "output_tokens": _C},
                "tokens": {"input_tokens": _PP, "output_tokens": _C},
            }
        else:
            body["usage"] = {"prompt_tokens": _P, "completion_tokens": _C, "total_tokens": _T}
        return body

    def success(
        self, model: str, *, serial: int, created: int, prompt: int, completion: int
    ) -> bytes:
        """The body of a success on `model` carrying this usage."""
        return self.template(model) % {
            b"p": prompt,
            b"c": completion,
            b"t": prompt + completion,
            b"pp": prompt + PREAMBLE_TOKENS,
            b"serial": serial,
            b"created": created,
        }

    def standing_headers(self, standings: Standings) -> Headers:
        return list(self.dialect.standing_headers(standings))

    def rate_limited(
        self, violation: Violation, model: str, standings: Standings, now: float
    ) -> tuple[Headers, bytes]:
        """The headers and body of the flavor's 429 for `violation` (`now`: epoch seconds)."""
        error = self.dialect.rate_limited(violation, model, standings, now)
        data = _dumps(error.body)
        return json_headers(len(data), error.headers), data
