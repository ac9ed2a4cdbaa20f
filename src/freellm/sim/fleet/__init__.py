"""Simulated providers for the core replay: the fakes' answers, without HTTP, in virtual time.

The core replay (:mod:`freellm.sim.replay`) runs freellm's own routing over recorded traffic and
calls a :class:`Fleet` where the server would call a provider. The fleet answers as the fake
providers (:mod:`freellm.sim.fakes`) would: the same status, rate-limit headers and JSON body per
provider flavor, the same rolling-window caps, here the *true* caps of each (provider, key),
which may differ from the configured ones (:class:`Truth`); after the time its latency model
says (:class:`Latency`); with the failures asked for (:class:`Faults`)::

    fleet = Fleet(catalog, {"groq": ["groq-1", "groq-2"]},
                  truth={"groq": Truth(caps={"llama-3.1-8b-instant": FakeCaps(rpm=20)})}, seed=7)
    answer = fleet.call("groq", "groq-1", "llama-3.1-8b-instant",
                        prompt_tokens=900, completion_tokens=120, now=1_780_000_000.0)
    ex.head(answer.status, answer.header_map, now=t); ex.data(answer.body, now=t); ex.end(now=t)

Everything here is pure: no trio, no I/O, no clock, randomness only from the seed. A call costs a
few microseconds: counters are deques with running sums (:mod:`.meter`), and answers are
templates filled in per call (:mod:`.wire`).
"""

from freellm.sim.fleet.fleet import Fleet, FleetStats, SimAnswer, SlotStats
from freellm.sim.fleet.truth import REFUSAL_S, Faults, Latency, Truth

__all__ = [
    "REFUSAL_S",
    "Faults",
    "Fleet",
    "FleetStats",
    "Latency",
    "SimAnswer",
    "SlotStats",
    "Truth",
]
