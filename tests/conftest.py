"""Fixtures every test directory may use."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from benchmarks.harness.postgres import PostgresServer, server_bin


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the test session (skipped when Debian's is not installed)."""
    if server_bin() is None:
        pytest.skip("Debian postgresql not installed (make system-deps)")
    server = PostgresServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh, empty database on the session's PostgreSQL."""
    return postgres.create_database()


#: ``make fuzz``: every hypothesis test runs this many times its usual examples (0: the usual).
FUZZ_SCALE = int(os.environ.get("SHOPCAST_FUZZ_SCALE", "0") or 0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``SHOPCAST_FUZZ_SCALE``: keep only the hypothesis (fuzz and property) tests and
    multiply their examples; ``make test`` keeps each test's own, short, settings."""
    if FUZZ_SCALE <= 0:
        return
    kept, dropped, scaled = [], [], set()
    for item in items:
        test = getattr(getattr(item, "obj", None), "__func__", getattr(item, "obj", None))
        if not getattr(test, "is_hypothesis_test", False):
            dropped.append(item)
            continue
        kept.append(item)
        if id(test) in scaled:  # parametrized: one function, many items
            continue
        scaled.add(id(test))
        # Read by hypothesis when the test runs; @settings cannot be applied a second time.
        own: settings = test._hypothesis_internal_use_settings  # type: ignore[union-attr]
        test._hypothesis_internal_use_settings = settings(  # type: ignore[union-attr]
            own,
            max_examples=own.max_examples * FUZZ_SCALE,
            deadline=None,
            suppress_health_check=[*own.suppress_health_check, HealthCheck.too_slow],
        )
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept
