"""Fake LLM providers on loopback: the independent truth the proxy is tested against.

Used by the tests, ``freellm demo`` and the simulator. Each fake speaks the OpenAI dialect with
one provider's quirks (``openai``, ``groq``, ``cerebras``, ``openrouter``), enforces its own caps
with that provider's 429s, and acts out injected faults::

    async with open_fake_provider("groq", keys=["sk-1"], models={"m": FakeCaps(rpm=30)}) as fake:
        fake.faults.next(1, FaultKind.STATUS, status=503)  # the next chat request gets a 503
        ...  # point a client at fake.base_url (".../openai/v1"), then check fake.served,
        ...  # fake.rate_limited, fake.cancelled, fake.requests, fake.usage(key_id("sk-1"), "m")

The fakes share no code with ``freellm.core``: they count usage their own plain way (see
:mod:`freellm.sim.fakes.caps`).
"""

from freellm.sim.fakes.app import FakeProvider, RecordedRequest, key_id
from freellm.sim.fakes.caps import DAY, MINUTE, FakeCaps, Usage
from freellm.sim.fakes.faults import Fault, FaultKind, FaultPlan
from freellm.sim.fakes.flavors import FLAVORS
from freellm.sim.fakes.server import open_fake_provider

__all__ = [
    "DAY",
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
    "open_fake_provider",
]
