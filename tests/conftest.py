"""Fixtures every test directory may use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
