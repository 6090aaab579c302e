"""Shared fixtures: one stand-in upstream per session; proxies are started per test module."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from hydraguard_dev.procs import Upstream, upstream

# Timing is measured in bench/, never in tests: a busy 2-core CI machine must not fail a
# property test because generating its examples was slow.
settings.register_profile(
    "hydraguard", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("hydraguard")


@pytest.fixture(scope="session")
def stub() -> Upstream:
    with upstream() as u:
        yield u
