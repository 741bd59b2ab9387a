"""The reader matrix: deltalake, DuckDB ``delta_scan``, Polars ``scan_delta`` and Daft ``read_deltalake``.

Each reads a whole Delta table given only its URI and the store's options, and
returns it as Arrow with types made comparable: large strings and binaries as
plain ones, timestamps as UTC microseconds (int64). Daft runs in its own
environment (:mod:`tests.support.daft_env`), so it reads many tables per call.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from tests.support import daft_env, duckdb_delta

READERS = ("deltalake", "duckdb", "polars", "daft")


def comparable(table: pa.Table) -> pa.Table:
    """``table`` with reader-specific type choices removed (values untouched)."""
    columns, fields = [], []
    for field, column in zip(table.schema, table.columns, strict=True):
        t = field.type
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            column, t = column.cast(pa.string()), pa.string()
        elif pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
            column, t = column.cast(pa.binary()), pa.binary()
        elif pa.types.is_timestamp(t):
            column = column.cast(pa.timestamp("us", tz=t.tz)).cast(pa.int64())
            t = pa.int64()
        columns.append(column)
        fields.append(pa.field(field.name, t))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def read_deltalake(uri: str, options: Mapping[str, str] | None) -> pa.Table:
    from deltalake import DeltaTable

    return DeltaTable(uri, storage_options=dict(options) if options else None).to_pyarrow_table()


def read_duckdb(uri: str, options: Mapping[str, str] | None) -> pa.Table:
    con = duckdb_delta.connect(options or None)
    try:
        return con.execute(f"SELECT * FROM delta_scan('{uri}')").to_arrow_table()
    finally:
        con.close()


def read_polars(uri: str, options: Mapping[str, str] | None) -> pa.Table:
    import polars as pl

    return pl.scan_delta(uri, storage_options=dict(options) if options else None).collect().to_arrow()


IN_PROCESS: dict[str, Callable[[str, Mapping[str, str] | None], pa.Table]] = {
    "deltalake": read_deltalake,
    "duckdb": read_duckdb,
    "polars": read_polars,
}


def read_with_daft(
    reads: Mapping[str, tuple[str, str | None]],
    options: Mapping[str, str] | None,
    *,
    runner: str = "native",
    info: dict | None = None,
) -> dict[str, pa.Table]:
    """Daft reads ``{name: (uri, as_of)}`` in one child process; ``as_of`` filters a history table there.

    ``info`` receives the reader's summary (runner, Daft version, Ray nodes).
    """
    with tempfile.TemporaryDirectory(prefix="rhei-daft-") as out:
        request = {
            "runner": runner,
            "storage_options": dict(options or {}),
            "reads": [{"name": name, "uri": uri, "as_of": as_of} for name, (uri, as_of) in reads.items()],
        }
        reply = daft_env.run_reader(request, Path(out))
        if info is not None:
            info.update(reply)
        return {name: ipc.open_file(str(Path(out) / f"{name}.arrow")).read_all() for name in reads}


def read_all(uris: Mapping[str, str], options: Mapping[str, str] | None) -> dict[str, dict[str, pa.Table]]:
    """``{reader: {name: table}}``: every reader's view of every named table, comparable."""
    out: dict[str, dict[str, pa.Table]] = {}
    for reader, read in IN_PROCESS.items():
        out[reader] = {name: comparable(read(uri, options)) for name, uri in uris.items()}
    daft = read_with_daft({name: (uri, None) for name, uri in uris.items()}, options)
    out["daft"] = {name: comparable(table) for name, table in daft.items()}
    return out
