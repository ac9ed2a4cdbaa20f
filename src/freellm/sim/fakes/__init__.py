"""Fake LLM providers on loopback: the independent truth the proxy is tested against.

Used by the tests, ``freellm demo`` and the simulator. Each fake speaks one provider's wire
format, enforces its own caps with that provider's 429s, and acts out injected faults. The
flavors (:data:`ALL_FLAVORS`):

- OpenAI dialect (:data:`FLAVORS`): ``openai`` (base URL ``{origin}/v1``), ``groq``
  (``/openai/v1``), ``cerebras`` (``/v1``), ``openrouter`` (``/api/v1``); see :mod:`.openai`;
- ``gemini``: Google AI Studio's native API, base URL ``{origin}/v1beta``; see :mod:`.gemini`;
- ``cohere``: Cohere's native v2 API, base URL ``{origin}``; see :mod:`.cohere`.

::

    async with open_fake_provider("groq", keys=["sk-1"], models={"m": FakeCaps(rpm=30)}) as fake:
        fake.faults.next(1, FaultKind.STATUS, status=503)  # the next chat request gets a 503
        ...  # point a client at fake.base_url (".../openai/v1"), then check fake.served,
        ...  # fake.rate_limited, fake.cancelled, fake.requests, fake.usage(key_id("sk-1"), "m")

Connecting can go wrong too, before any fake is reached: :func:`open_silent_port` is an address
whose connects never complete (a connect timeout), :func:`open_closed_port` one that refuses them
(see :mod:`.unreachable`).

Faults name endpoints the OpenAI way whatever the dialect (``/chat/completions`` is Gemini's
``:generateContent`` and Cohere's ``/v2/chat`` too; see :mod:`.dialect`). Every fake embeds too,
on :data:`EMBEDDINGS_PATH` (OpenAI's ``/embeddings``, Gemini's ``:batchEmbedContents`` and
``:embedContent``, Cohere's ``/v2/embed``; see :mod:`.embeddings` and :mod:`.embedding_wires`).
The fakes share no code with ``freellm.core``: they count usage their own plain way (see
:mod:`.caps`).
"""

from freellm.sim.fakes.app import ALL_FLAVORS, FakeProvider, RecordedRequest, key_id
from freellm.sim.fakes.caps import DAY, MINUTE, FakeCaps, Usage
from freellm.sim.fakes.embeddings import EMBEDDINGS_PATH
from freellm.sim.fakes.faults import CHAT_PATH, Fault, FaultKind, FaultPlan
from freellm.sim.fakes.flavors import FLAVORS
from freellm.sim.fakes.server import open_fake_provider
from freellm.sim.fakes.unreachable import open_closed_port, open_silent_port

__all__ = [
    "ALL_FLAVORS",
    "CHAT_PATH",
    "DAY",
    "EMBEDDINGS_PATH",
    "FLAVORS",
    "MINUTE",
    "FakeCaps",
    "FakeProvider",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "RecordedRequest",
    "Usage",
    "key_id",
    "open_closed_port",
    "open_fake_provider",
    "open_silent_port",
]
