"""Settings every test suite of the workspace shares."""

import os

from hypothesis import HealthCheck, settings

# Hypothesis' per-example deadline is a timing assertion: on a loaded 2-core machine a
# slow example fails a correct test. Both profiles drop it; CI also derandomises, so a
# run is reproducible from its commit alone, and prints the blob to replay a failure.
settings.register_profile(
    "dev",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    parent=settings.get_profile("dev"),
    derandomize=True,
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
