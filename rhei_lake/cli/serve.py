"""``rh serve``: run a lake as a service, with a live dashboard or structured log lines (``--headless``).

SIGTERM or SIGINT (or ``q`` on the dashboard) stops it cleanly: the Flight SQL
server and the compaction scheduler stop, a final sync commits everything
captured, the lake closes, and the exit code is 0. A second signal while
stopping is reported; a third exits at once, leaving uncommitted events in
the source's log for the next start (nothing is lost either way).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Annotated, Optional

import typer

import rhei_lake
from rhei_lake.cli import common, service_logs
from rhei_lake.cli.common import ConfigOption, DbOption, StorageOption
from rhei_lake.errors import ConfigError

HARD_EXIT_SIGNALS = 3


def serve_command(
    db: DbOption = None,
    storage: StorageOption = None,
    config: ConfigOption = None,
    headless: Annotated[
        bool, typer.Option("--headless", help="No dashboard: structured log lines on stdout (Docker, systemd).")
    ] = False,
    sync_interval: Annotated[
        Optional[float],
        typer.Option(
            "--sync-interval", metavar="SECONDS", help="Seconds between sync cycles (default: sync_interval, else 1)."
        ),
    ] = None,
    metrics_port: Annotated[
        Optional[int],
        typer.Option("--metrics-port", metavar="PORT", help="Serve Prometheus metrics on this port (0: any free one)."),
    ] = None,
    flight_port: Annotated[
        Optional[int],
        typer.Option(
            "--flight-port", metavar="PORT", help="Also serve Arrow Flight SQL on this port (0: any free one)."
        ),
    ] = None,
    log_format: Annotated[
        Optional[str], typer.Option("--log-format", help="Headless log lines: json (default) or text.")
    ] = None,
    engine: common.EngineOption = None,
) -> None:
    """Run the lake as a service: background sync, scheduled compaction, metrics, Flight SQL.

    Shows a live dashboard on a terminal (q quits, c compacts now), or with
    --headless logs one line per event to stdout. SIGTERM/SIGINT stop it after
    a final sync, with exit code 0. Settings: the [serve] table of --config.
    """
    from rhei_lake.service.lake_service import LakeService
    from rhei_lake.service.config import DEFAULT_SYNC_INTERVAL, build_service_config

    lake_options, serve_options = common.resolve_settings(
        config=config,
        storage=storage,
        db=db,
        sync_interval=sync_interval,
        metrics_port=metrics_port,
        flight_port=flight_port,
        log_format=log_format,
        engine=engine,
    )
    settings = build_service_config(serve_options)
    interval = lake_options.pop("sync_interval", None)
    has_source = bool(lake_options.get("oltp_path") or lake_options.get("source"))
    if not has_source and "storage" not in lake_options:
        raise ConfigError("nothing to serve: pass --db PATH, --storage URL or a --config FILE")
    if not headless and not (sys.stdout.isatty() and sys.stdin.isatty()):
        common.err_console.print("not a terminal: running headless (log lines on stdout)", highlight=False)
        headless = True

    handler = service_logs.log_to_stream(settings.log_format) if headless else service_logs.log_to_dashboard()
    stop = threading.Event()
    signals = _StopSignals(stop)
    try:
        lake = rhei_lake.open(**lake_options)
        if not has_source and not lake.tables():
            common.warning(
                f"{lake.location.describe()} holds no lake yet (no mirrored tables): check --storage; serving it anyway"
            )
        service = LakeService(
            lake,
            settings,
            sync_interval=(float(interval) if interval else DEFAULT_SYNC_INTERVAL) if has_source else None,
            flight=lake.config.flight_port is not None,
        )
        try:
            service.start()
        except BaseException:
            lake.close(final_sync=False)
            raise
        try:
            if headless:
                while not stop.wait(0.5):
                    pass
            else:
                from rhei_lake.cli.dashboard import run_dashboard

                assert isinstance(handler, service_logs.RecentLog)
                run_dashboard(service, handler, stop, common.console)
                service_logs.detach(handler)
                handler = service_logs.log_to_stream("text", sys.stderr)
        finally:
            service.stop()
    finally:
        signals.restore()
        service_logs.detach(handler)
    if service.flight_abandoned:
        # pyarrow's exit hook would wait for streams to clients that stopped reading (see `rh flight`).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


class _StopSignals:
    """SIGTERM/SIGINT set ``stop``; a third one exits at once."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.count = 0
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum: int, _frame: object) -> None:
        self.count += 1
        self.stop.set()
        if self.count == HARD_EXIT_SIGNALS:
            os.write(2, b"rh serve: exiting without the final sync; uncommitted events stay in the source's log\n")
            os._exit(128 + signum)
        if self.count > 1:
            os.write(2, b"rh serve: already stopping (final sync in progress); signal once more to exit at once\n")

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
