"""Starting and stopping a lake's Flight SQL server: :func:`serve_flight` and its handle."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Literal

import pyarrow.flight as flight
from pydantic import SecretStr

import rhei_lake
from rhei_lake.errors import ConfigError
from rhei_lake.flight.auth import BearerTokenMiddlewareFactory
from rhei_lake.flight.endpoint import LakeFlightSqlServer

log = logging.getLogger("rhei_lake.server")

Compression = Literal["zstd", "lz4", "none"]
PemSource = bytes | str | os.PathLike


DEFAULT_SHUTDOWN_GRACE = 5.0


class FlightService:
    """A running Flight SQL server; :meth:`shutdown` stops it (also on leaving a ``with`` block)."""

    def __init__(self, server: LakeFlightSqlServer, *, host: str, tls: bool, auth: bool) -> None:
        self._server = server
        self.host = host
        self.port: int = server.port
        self.tls = tls
        self.auth = auth
        self._lock = threading.Lock()
        self._stopper: threading.Thread | None = None
        self._stopped = threading.Event()  # gRPC has stopped: every call has returned
        self._released = threading.Event()  # shutdown was asked for and waited on

    @property
    def location(self) -> str:
        """The URI clients connect to, e.g. ``grpc://127.0.0.1:50051`` (``grpc+tls://`` with TLS)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return _uri(host, self.port, self.tls)

    def stats(self) -> dict[str, int]:
        """Streams being sent, tickets not yet redeemed, prepared statements open."""
        return self._server.stats()

    def serve_forever(self) -> bool:
        """Block until :meth:`shutdown` has run: called from another thread, or, when this is
        the main thread, on SIGINT (Ctrl-C) or SIGTERM. Returns whether the server stopped
        (False: streams to clients that stopped reading are still open)."""
        if threading.current_thread() is not threading.main_thread():
            self._released.wait()
            return self._stopped.is_set()

        def stop(signum, frame) -> None:
            threading.Thread(target=self.shutdown, name="flight-signal", daemon=True).start()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not self._released.wait(0.2):  # short waits let the handlers run
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self._stopped.is_set()

    def shutdown(self, grace: float | None = DEFAULT_SHUTDOWN_GRACE) -> bool:
        """Stop: refuse new calls, end open streams at their next batch, wait for calls in flight.

        A client that stops reading (without going away) holds its stream, and gRPC's
        shutdown with it, until it reads again or disconnects. After ``grace`` seconds
        (None: no limit) this stops waiting and returns False, leaving such streams to end
        on their own; note that pyarrow waits for them again at interpreter exit (`rh flight`
        exits with ``os._exit`` then). Returns True once every call has returned.
        """
        with self._lock:
            if self._stopper is None:
                self._server.begin_shutdown()
                self._stopper = threading.Thread(target=self._stop, name="flight-shutdown", daemon=True)
                self._stopper.start()
        self._stopper.join(grace)
        with self._lock:
            if not self._stopped.is_set() and not self._released.is_set():
                log.warning(
                    "Flight SQL: stopped waiting for %d stream(s) to clients that do not read",
                    self._server.stats()["active_streams"],
                )
            self._released.set()
        return self._stopped.is_set()

    def _stop(self) -> None:
        self._server.shutdown()
        self._stopped.set()

    def __enter__(self) -> FlightService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped.is_set() else "stopping" if self._stopper else "serving"
        return f"<FlightService {self.location} {state} auth={'token' if self.auth else 'none'}>"


def serve_flight(
    lake: rhei_lake.Lake,
    host: str | None = None,
    port: int | None = None,
    *,
    token: str | SecretStr | None = None,
    tls_cert: PemSource | None = None,
    tls_key: PemSource | None = None,
    compression: Compression | None = None,
) -> FlightService:
    """Serve ``lake``'s views over Arrow Flight SQL, read-only, from background threads.

    Arguments left ``None`` come from the lake's configuration (``flight_host``,
    ``flight_port``, ``flight_token``, ``flight_tls_cert``/``flight_tls_key``,
    ``flight_compression``); the host defaults to 127.0.0.1 and port 0 picks a
    free port (see ``.port``). With a token, every call must carry
    ``Authorization: Bearer <token>``. ``tls_cert``/``tls_key`` are PEM bytes or
    paths of PEM files. Returns once the server accepts connections; invalid
    settings, unreadable certificates or a busy port raise
    :class:`~rhei_lake.errors.ConfigError`.
    """
    cfg = lake.config
    host = cfg.flight_host if host is None else host
    port = (cfg.flight_port or 0) if port is None else port
    if token is None and cfg.flight_token is not None:
        token = cfg.flight_token
    if isinstance(token, SecretStr):
        token = token.get_secret_value()
    if tls_cert is None and tls_key is None:
        tls_cert, tls_key = cfg.flight_tls_cert, cfg.flight_tls_key
    compression = compression or cfg.flight_compression

    if not isinstance(host, str) or not host.strip():
        raise ConfigError("flight_host: must be a host name or address")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"flight_port: must be an integer from 0 to 65535, not {port!r}")
    if compression not in ("zstd", "lz4", "none"):
        raise ConfigError(f"flight_compression: must be zstd, lz4 or none, not {compression!r}")
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise ConfigError("flight_token: must be a non-empty string")
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("flight_tls_cert and flight_tls_key go together: set both or neither")

    certificates = None
    if tls_cert is not None and tls_key is not None:
        certificates = [
            flight.CertKeyPair(_read_pem(tls_cert, "flight_tls_cert"), _read_pem(tls_key, "flight_tls_key"))
        ]
    tls = certificates is not None
    middleware = {"auth": BearerTokenMiddlewareFactory(token)} if token else None
    try:
        server = LakeFlightSqlServer(
            lake,
            _uri(host, port, tls),
            compression=None if compression == "none" else compression,
            tls_certificates=certificates,
            middleware=middleware,
        )
    except Exception as exc:
        raise ConfigError(f"cannot serve Flight SQL on {host}:{port}: {_first_line(exc)}") from exc
    service = FlightService(server, host=host, tls=tls, auth=bool(token))
    log.info(
        "Flight SQL serving %s on %s (auth: %s, TLS: %s, compression: %s)",
        lake.location.url,
        service.location,
        "bearer token" if token else "none",
        "on" if tls else "off",
        compression,
    )
    return service


def _uri(host: str, port: int, tls: bool) -> str:
    bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{'grpc+tls' if tls else 'grpc'}://{bracketed}:{port}"


def _read_pem(source: PemSource, what: str) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {os.fspath(source)!r}: {exc.strerror or exc}") from exc
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{what}: not a PEM file (no '-----BEGIN' line)")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
