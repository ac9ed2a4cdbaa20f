"""The fleet: every simulated provider, answering calls at virtual times.

One call goes through the fakes' steps, in their order (:mod:`freellm.sim.fakes.app`):

1. a key in ``Faults.invalid_keys`` gets the provider's invalid-key answer;
2. an outage, or a draw under ``Faults.error_rate``, gets the provider's 503;
3. the *true* caps: a call past one gets the flavor's 429 and is counted nowhere; one within all
   of them is counted at its send time and answered with the caller's usage and, where the
   flavor sends them, rate-limit headers that describe the caps after it.

Beside that, every call is judged against the *configured* caps (the catalog's, which freellm
routes by): :attr:`SimAnswer.violation` names the cap a provider enforcing exactly those caps,
the fakes' way, would have refused it for. That judge keeps counters of its own, fed every call
sent whatever the true caps made of it: a call within the configured caps that reaches step 3
counts there, as it would at such a provider, one past them does not (it would have been
refused), and a call stopped at step 1 or 2 never reached a cap. So when the true caps are the
configured ones, both sets of counters hold the same entries at all times, and a call that
reaches step 3 is a violation exactly when it gets a 429; under a wrong config they part.

Token caps count the prompt and the completion, except Gemini's, which count the prompt only (its
quota is of input tokens), as the fakes count them; the judge counts them the same way. Day caps
are rolling 24 h windows, as the fakes' are, also for a provider whose catalog entry says its day
resets at a local midnight. Configured ``concurrency`` caps are not judged.

Randomness comes only from ``random.Random`` streams seeded by the fleet's seed and the provider's
id, one for latency and one for errors, so a provider's answers do not depend on other providers'
traffic, and the same calls give the same answers.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final

import attrs

from freellm.core.catalog import Catalog, ModelSpec
from freellm.sim.fakes.caps import Dimension, FakeCaps, Standing, Usage, WindowName
from freellm.sim.fleet.meter import CAP_NAMES, Counter, Rules, rules_of, standing, worst
from freellm.sim.fleet.truth import Latency, Truth
from freellm.sim.fleet.wire import Headers, Voice, flavor_for

__all__ = ["Fleet", "FleetStats", "SimAnswer", "SlotStats"]

ACCOUNT: Final = "*"
"""The counter of a key's ``account`` models together, as freellm's ledger names it."""
ALL: Final = None
"""The counter of a key across all its provider's models (``Truth.account``)."""

SlotKey = tuple[str, str, str]  # (provider, key id, model)


@attrs.frozen
class SimAnswer:
    """What a call got: the provider's `status`, `headers` (lower-case names and values) and
    whole JSON `body`, how long it took (`latency_s` from sending to the end of the answer,
    `ttft_s` to its first token; equal for a refusal), and the configured cap it broke
    (`violation`: ``rpm``, ``rpd``, ``tpm`` or ``tpd``; None within all of them)."""

    status: int
    headers: Headers
    body: bytes
    latency_s: float
    ttft_s: float
    violation: str | None

    @property
    def header_map(self) -> dict[str, str]:
        """The headers as :meth:`freellm.core.exchange.Exchange.head` takes them (what
        :attr:`freellm.shell.transport.Answer.headers` gives): names to values."""
        return {name.decode("latin-1"): value.decode("latin-1") for name, value in self.headers}


@attrs.define
class SlotStats:
    """The calls made to one (provider, key, model) and what came of them.

    `errors` are invalid-key answers and 503s; `prompt_tokens` and `completion_tokens` add up
    the calls answered ok.
    """

    calls: int = 0
    answered_ok: int = 0
    rate_limited: int = 0
    errors: int = 0
    violations: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@attrs.define
class FleetStats:
    """The fleet's totals (see :class:`SlotStats`), per slot (`by_slot`, keyed by
    ``(provider, key id, model)``) and how many violations broke each configured cap
    (`by_cap`, keyed by ``rpm``, ``rpd``, ``tpm``, ``tpd``)."""

    calls: int = 0
    answered_ok: int = 0
    rate_limited: int = 0
    errors: int = 0
    violations: int = 0
    by_slot: dict[SlotKey, SlotStats] = attrs.field(factory=dict)
    by_cap: dict[str, int] = attrs.field(factory=dict)


def _fake_caps(model: ModelSpec) -> FakeCaps:
    caps = model.caps
    return FakeCaps(rpm=caps.rpm, rpd=caps.rpd, tpm=caps.tpm, tpd=caps.tpd)


class _Provider:
    """One provider of the fleet: its wire, truth, random streams and counters."""

    def __init__(
        self, catalog: Catalog, provider: str, keys: Sequence[str], truth: Truth, seed: int
    ) -> None:
        spec = catalog.providers[provider]
        self.spec = spec
        self.keys = frozenset(keys)
        self.truth = truth
        self.voice = Voice(flavor_for(spec, truth.flavor))
        self.latency_rng = random.Random(f"{seed}:{provider}:latency")
        self.error_rng = random.Random(f"{seed}:{provider}:errors")
        self.serial = 0
        self.counters: dict[tuple[str, str | None], Counter] = {}
        self.judge_counters: dict[tuple[str, str], Counter] = {}
        for model in (truth.caps or {}).keys() | truth.model_latency.keys():
            if model not in spec.models:
                raise ValueError(
                    f"the truth of {provider!r} names {model!r}, not one of its models"
                )

    def counter(self, key: str, scope: str | None) -> Counter:
        found = self.counters.get((key, scope))
        if found is None:
            found = self.counters[key, scope] = Counter()
        return found

    def true_scopes(self, model: ModelSpec) -> list[tuple[Rules, str | None]]:
        """The counters a call on `model` touches, in the fakes' order (the model's first), and
        the true caps on each."""
        truth = self.truth
        if truth.caps is not None and model.id in truth.caps:
            scopes = [(rules_of(truth.caps[model.id]), model.id)]
        elif model.account and truth.account is None:
            scopes = [((), model.id), (rules_of(_fake_caps(model)), ACCOUNT)]
        elif model.account:
            scopes = [((), model.id)]  # the true account caps stand for the configured ones
        else:
            scopes = [(rules_of(_fake_caps(model)), model.id)]
        account = rules_of(truth.account) if truth.account is not None else ()
        return [*scopes, (account, ALL)]


class _Slot:
    """Everything one call on a (provider, key, model) needs, looked up once."""

    __slots__ = (
        "judge",
        "judged",
        "key",
        "latency",
        "model",
        "provider",
        "reported",
        "stats",
        "touched",
        "true",
    )

    def __init__(self, provider: _Provider, key: str, model: ModelSpec, stats: SlotStats) -> None:
        self.provider = provider
        self.key = key
        self.model = model.id
        self.stats = stats
        scopes = provider.true_scopes(model)
        counters = [provider.counter(key, scope) for _, scope in scopes]
        self.touched = tuple(counters)
        self.true = tuple(
            (rules, c) for (rules, _), c in zip(scopes, counters, strict=True) if rules
        )
        # The caps the flavor's headers report: the model's own, else the key's, per dimension.
        reported: list[tuple[Dimension, WindowName, Counter, int]] = []
        for dimension, window in provider.voice.reported:
            for rules, scoped in self.true:
                cap = next((c for w, d, c in rules if (d, w) == (dimension, window)), None)
                if cap is not None:
                    reported.append((dimension, window, scoped, cap))
                    break
        self.reported = tuple(reported)
        configured = rules_of(_fake_caps(model))
        self.judged = bool(configured)
        judge_scope = ACCOUNT if model.account else model.id
        judge = provider.judge_counters.get((key, judge_scope))
        if judge is None:
            judge = provider.judge_counters[key, judge_scope] = Counter()
        self.judge = ((configured, judge),)
        truth = provider.truth
        self.latency: Latency = truth.model_latency.get(model.id, truth.latency)

    def standings(self, now: float) -> dict[tuple[Dimension, WindowName], Standing]:
        return {
            (dimension, window): standing(counter, now, dimension, window, cap)
            for dimension, window, counter, cap in self.reported
        }


class Fleet:
    """Simulated providers for the replay: the catalog's providers, with `keys` (provider id to
    key ids) and, per provider id, the `truth` of what it enforces (default: as configured).

    Pure: no I/O, no clock (time is the ``now`` of each call), randomness only from `seed`.
    Raises ``ValueError`` for a provider, or a model in a truth, the catalog does not know.
    """

    def __init__(
        self,
        catalog: Catalog,
        keys: Mapping[str, Sequence[str]],
        *,
        truth: Mapping[str, Truth] = MappingProxyType({}),
        seed: int = 0,
    ) -> None:
        for provider in (*keys, *truth):
            if provider not in catalog.providers:
                raise ValueError(f"{provider!r} is not a provider of the catalog")
        self.catalog = catalog
        self.seed = seed
        self.stats = FleetStats()
        self._providers = {
            provider: _Provider(
                catalog, provider, keys.get(provider, ()), truth.get(provider, Truth()), seed
            )
            for provider in catalog.providers
        }
        self._slots: dict[SlotKey, _Slot] = {}
        self._now = float("-inf")

    def _slot(self, provider: str, key: str, model: str) -> _Slot:
        entry = self._providers.get(provider)
        if entry is None:
            raise ValueError(f"{provider!r} is not a provider of the catalog")
        if key not in entry.keys:
            raise ValueError(f"{key!r} is not a key of {provider!r}")
        spec = entry.spec.models.get(model)
        if spec is None:
            raise ValueError(f"{model!r} is not a model of {provider!r}")
        stats = self.stats.by_slot.setdefault((provider, key, model), SlotStats())
        slot = self._slots[provider, key, model] = _Slot(entry, key, spec, stats)
        return slot

    def call(
        self,
        provider: str,
        key_id: str,
        model: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        now: float,
    ) -> SimAnswer:
        """Send one chat call at `now` (epoch seconds, virtual) and get the provider's answer.

        Raises ``ValueError`` for a provider, key or model the fleet does not have, negative
        token counts, or a `now` earlier than an earlier call's: the counters need calls in
        time order.
        """
        if now < self._now:
            raise ValueError(f"calls must come in time order: {now} after {self._now}")
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError("token counts cannot be negative")
        self._now = now
        slot = self._slots.get((provider, key_id, model)) or self._slot(provider, key_id, model)
        entry = slot.provider
        voice = entry.voice
        tokens = prompt_tokens if voice.input_tokens_only else prompt_tokens + completion_tokens
        stats, totals = slot.stats, self.stats
        stats.calls += 1
        totals.calls += 1

        violation = None
        if slot.judged:
            broken = worst(slot.judge, now, tokens)
            if broken is not None:
                violation = CAP_NAMES[broken.dimension, broken.window]
                stats.violations += 1
                totals.violations += 1
                totals.by_cap[violation] = totals.by_cap.get(violation, 0) + 1

        faults = entry.truth.faults
        refusal = None
        if faults.invalid_keys and key_id in faults.invalid_keys:
            refusal = voice.unauthorized
        elif (faults.outages and faults.down(now)) or (
            faults.error_rate and entry.error_rng.random() < faults.error_rate
        ):
            refusal = voice.unavailable
        latency = slot.latency
        if refusal is not None:
            stats.errors += 1
            totals.errors += 1
            status, fixed, data = refusal
            delay = latency.refusal_s
            return SimAnswer(status, list(fixed), data, delay, delay, violation)

        if violation is None and slot.judged:
            slot.judge[0][1].add(now, tokens)
        entry.serial += 1
        refused = worst(slot.true, now, tokens) if slot.true else None
        if refused is not None:
            stats.rate_limited += 1
            totals.rate_limited += 1
            if entry.truth.refused_count:  # the request counts; its tokens do not
                for counter in slot.touched:
                    counter.add(now, 0)
                if violation is not None and slot.judged:
                    slot.judge[0][1].add(now, 0)
            standings = slot.standings(now) if slot.reported else {}
            headers, body = voice.rate_limited(refused, model, standings, now)
            delay = latency.refusal_s
            return SimAnswer(429, headers, body, delay, delay, violation)

        for counter in slot.touched:
            counter.add(now, tokens)
        stats.answered_ok += 1
        totals.answered_ok += 1
        stats.prompt_tokens += prompt_tokens
        stats.completion_tokens += completion_tokens
        body = voice.success(
            model,
            serial=entry.serial,
            created=int(now),
            prompt=prompt_tokens,
            completion=completion_tokens,
        )
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if slot.reported:
            headers += voice.standing_headers(slot.standings(now))
        jitter = latency.jitter
        ttft = latency.ttft_s
        generation = completion_tokens / latency.tokens_per_s
        if jitter:
            draw = entry.latency_rng.random
            ttft *= 1.0 - jitter + 2.0 * jitter * draw()
            generation *= 1.0 - jitter + 2.0 * jitter * draw()
        return SimAnswer(200, headers, body, ttft + generation, ttft, violation)

    def usage(self, provider: str, key_id: str, model: str | None = None, *, now: float) -> Usage:
        """What `key_id` has used of its true caps at `now`: on `model`, or across all the
        provider's models (None), as :meth:`freellm.sim.fakes.FakeProvider.usage` reports it.
        Raises ``ValueError`` for an unknown provider."""
        entry = self._providers.get(provider)
        if entry is None:
            raise ValueError(f"{provider!r} is not a provider of the catalog")
        return entry.counter(key_id, model).usage(now)
