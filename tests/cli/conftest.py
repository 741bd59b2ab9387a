"""The CLI tests serve the same shop lake as the server tests."""

from tests.server.conftest import shop_lake  # noqa: F401  (a fixture)
