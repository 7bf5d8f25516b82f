"""Fixtures every test directory may use."""

#: ``postgres`` / ``postgres_url``: a real PostgreSQL started by the tests.
pytest_plugins = ["tests.pg_server"]
