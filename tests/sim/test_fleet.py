"""The fleet's counters decide, count and report exactly as the fakes' usage logs do."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from freellm.sim.fakes.caps import DAY, FakeCaps, UsageLog, worst_violation
from freellm.sim.fleet.meter import ORDER, Counter, rules_of, standing, worst

EPOCH = 1_780_000_000.0


# --- the counters agree with the fakes' -----------------------------------------------------------

KEYS = ("k1", "k2")
MODELS = ("m1", "m2")
# Steps that land exactly on the windows' edges as well as inside them.
STEPS = st.sampled_from([0.0, 0.25, 1.0, 7.5, 30.0, 59.75, 60.0, 61.0, 3_600.0, 86_399.75, DAY])
CAPS = st.builds(
    FakeCaps,
    rpm=st.none() | st.integers(0, 4),
    rpd=st.none() | st.integers(0, 9),
    tpm=st.none() | st.integers(0, 60),
    tpd=st.none() | st.integers(0, 200),
)
CALLS = st.lists(
    st.tuples(STEPS, st.sampled_from(KEYS), st.sampled_from(MODELS), st.integers(0, 25)),
    max_size=60,
)


@given(model_caps=st.tuples(CAPS, CAPS), account=CAPS, calls=CALLS)
def test_the_counters_decide_count_and_report_as_the_fakes_usage_logs(
    model_caps: tuple[FakeCaps, FakeCaps], account: FakeCaps, calls: list[Any]
) -> None:
    caps = dict(zip(MODELS, model_caps, strict=True))
    logs = {(k, m): UsageLog() for k in KEYS for m in (*MODELS, None)}
    counters = {(k, m): Counter() for k in KEYS for m in (*MODELS, None)}
    now = EPOCH
    for step, key, model, tokens in calls:
        now += step
        fake = [(caps[model], logs[key, model]), (account, logs[key, None])]
        ours = [
            (rules_of(caps[model]), counters[key, model]),
            (rules_of(account), counters[key, None]),
        ]
        expected = worst_violation(fake, now, tokens)
        assert worst(ours, now, tokens) == expected
        if expected is None:
            for _, log in fake:
                log.add(now, tokens)
            for _, counter in ours:
                counter.add(now, tokens)
        for scope, log in logs.items():
            counter = counters[scope]
            assert counter.usage(now) == log.usage(now)
            for dimension, window in ORDER:
                assert standing(counter, now, dimension, window, 7) == log.standing(
                    now, dimension, window, 7
                )
