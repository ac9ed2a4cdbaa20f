import os

from hypothesis import HealthCheck, settings

# "ci" is what .ci/run selects: the same number of examples, with room for a slower, shared
# machine, derandomized so that a landing is judged on a fixed set of examples. Random search
# runs on every developer's machine ("dev"), where a new counterexample is a bug to fix.
settings.register_profile(
    "ci", deadline=2000, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=1000)
# A longer random search, by hand: HYPOTHESIS_PROFILE=soak pytest tests/core
settings.register_profile(
    "soak", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
