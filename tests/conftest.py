import os

from hypothesis import HealthCheck, settings

# "ci" is what .ci/run selects: the same examples, with room for a slower, shared machine.
settings.register_profile("ci", deadline=2000, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
