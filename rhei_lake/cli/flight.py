"""``rh flight``: serve a lake over Arrow Flight SQL until interrupted."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

import rhei_lake
from rhei_lake.cli import common
from rhei_lake.cli.common import ConfigOption, StorageOption
from rhei_lake.errors import ConfigError

DEFAULT_PORT = 50051


def flight_command(
    storage: StorageOption = None,
    config: ConfigOption = None,
    host: Annotated[
        Optional[str], typer.Option("--host", help="Address to bind (default 127.0.0.1: this machine only).")
    ] = None,
    port: Annotated[
        Optional[int],
        typer.Option(
            "--port", "-p", help=f"Port to listen on (default: flight_port, else {DEFAULT_PORT}; 0: any free port)."
        ),
    ] = None,
    token: Annotated[
        Optional[str],
        typer.Option(
            "--token",
            envvar="RHEI_FLIGHT_TOKEN",
            show_envvar=True,
            help="Bearer token every client must present (prefer the environment variable: flags show in ps).",
        ),
    ] = None,
    tls_cert: Annotated[Optional[str], typer.Option("--tls-cert", help="PEM certificate file: serve over TLS.")] = None,
    tls_key: Annotated[Optional[str], typer.Option("--tls-key", help="PEM private key file of --tls-cert.")] = None,
    compression: Annotated[
        Optional[str], typer.Option("--compression", help="Record batch compression: zstd (default), lz4 or none.")
    ] = None,
    engine: common.EngineOption = None,
) -> None:
    """Serve the lake's tables over Arrow Flight SQL (read-only) until Ctrl-C.

    Clients (ADBC, JDBC, DBeaver) see each table t as t, t_history and t_changes;
    a leading comment /* as_of=2026-05-01T12:00:00Z */ queries the past.
    """
    from rhei_lake.flight import serve_flight

    options = common.resolve_options(
        config=config,
        storage=storage,
        flight_host=host,
        flight_port=port,
        flight_token=token,
        flight_tls_cert=tls_cert,
        flight_tls_key=tls_key,
        flight_compression=compression,
        engine=engine,
    )
    if "storage" not in options:
        raise ConfigError("rh flight needs a lake: pass --storage URL (or set storage in --config)")
    if options.get("flight_port") is None:
        options["flight_port"] = DEFAULT_PORT
    # a served lake is read-only; syncing is `rh sync` / `rh serve`
    with rhei_lake.open(**common.lake_only(options), read_only=True) as lake:
        server = serve_flight(lake)
        try:
            auth = "bearer token" if server.auth else "none"
            common.console.print(
                f"serving {lake.location.describe()} over Flight SQL at {server.location} "
                f"(read-only, auth: {auth}, TLS: {'on' if server.tls else 'off'}); Ctrl-C stops",
                soft_wrap=True,
                highlight=False,
            )
            sys.stdout.flush()
            stopped = server.serve_forever()
        except BaseException:
            server.shutdown()
            raise
    if not stopped:
        common.console.print("stopped; streams to clients that stopped reading were abandoned")
        sys.stdout.flush()
        sys.stderr.flush()
        # pyarrow's exit hook would wait for those streams until their clients read or go away.
        os._exit(0)
    common.console.print("stopped")
