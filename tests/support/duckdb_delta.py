"""DuckDB with its delta (and httpfs) extensions loaded from their PyPI wheels: nothing is downloaded."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import duckdb


def extension_file(module, name: str) -> str:
    """The ``<name>.duckdb_extension`` file bundled in an extension wheel's package."""
    root = Path(module.__file__).parent
    found = sorted(root.rglob(f"{name}.duckdb_extension"))
    assert found, f"no {name}.duckdb_extension under {root}"
    return str(found[-1])


def connect(storage_options: Mapping[str, str] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that reads Delta tables; with S3 options, also from that (moto) endpoint."""
    import duckdb_extension_delta

    con = duckdb.connect(
        config={
            "allow_unsigned_extensions": "true",
            "autoinstall_known_extensions": "false",
            "autoload_known_extensions": "false",
        }
    )
    if storage_options:
        import duckdb_extension_httpfs

        con.execute(f"LOAD '{extension_file(duckdb_extension_httpfs, 'httpfs')}'")
    con.execute(f"LOAD '{extension_file(duckdb_extension_delta, 'delta')}'")
    if storage_options:
        con.execute(s3_secret_sql(storage_options))
    return con


def s3_secret_sql(options: Mapping[str, str]) -> str:
    """The CREATE SECRET that points DuckDB at the S3 endpoint of ``options`` (path-style, as moto needs)."""
    endpoint = urlparse(options["AWS_ENDPOINT_URL"])
    return (
        "CREATE OR REPLACE SECRET rhei_test_s3 (TYPE s3, "
        f"KEY_ID '{options['AWS_ACCESS_KEY_ID']}', SECRET '{options['AWS_SECRET_ACCESS_KEY']}', "
        f"REGION '{options.get('AWS_REGION', 'us-east-1')}', ENDPOINT '{endpoint.netloc}', "
        f"URL_STYLE 'path', USE_SSL {'true' if endpoint.scheme == 'https' else 'false'})"
    )
