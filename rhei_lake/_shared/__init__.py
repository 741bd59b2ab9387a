"""The vocabulary every layer shares: identifier quoting, option masking, Arrow type normalisation, SQLite access.

These modules sit just above :mod:`rhei_lake.errors` in the import order (see
``docs/architecture.md``): they import nothing else of rhei_lake, so capture,
storage and every layer above may use them without importing one another.
"""
