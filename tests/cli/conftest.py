"""The CLI tests serve the same shop lake as the server tests."""

from tests.flight.conftest import shop_lake  # noqa: F401  (a fixture)
