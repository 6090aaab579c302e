"""Shared fixtures: one stand-in upstream per session; proxies are started per test module."""

from __future__ import annotations

import pytest

from .proxyproc import Upstream, upstream


@pytest.fixture(scope="session")
def stub() -> Upstream:
    with upstream() as u:
        yield u
