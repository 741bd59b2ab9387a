"""PostgreSQL connections for the sidecar: read-only, UTC, errors translated in one place.

Every transaction is ``READ ONLY`` (the session default, and psycopg's
``read_only`` flag issues ``BEGIN READ ONLY``), so the engine cannot write to
the source even by mistake. Error messages never contain the password.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from rhei_lake.capture.source_url import SourceLocation
from rhei_lake.errors import (
    ConfigError,
    ReadOnlySourceError,
    SchemaError,
    SourceError,
    SourceUnavailableError,
)

if TYPE_CHECKING:
    import psycopg

DEFAULT_CONNECT_TIMEOUT = 10
APPLICATION_NAME = "rhei_lake sidecar"

_UNAVAILABLE_MARKERS = (
    "connection refused",
    "could not connect",
    "could not translate host name",
    "timeout expired",
    "timed out",
    "server closed the connection",
    "connection is closed",
    "connection is lost",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "no route to host",
    "network is unreachable",
    "consuming input failed",
    "connection reset",
    "ssl syscall error",
    "too many connections",
)


def _psycopg():
    try:
        import psycopg
    except ImportError:  # pragma: no cover - depends on the installation
        raise ConfigError("source: PostgreSQL sources need psycopg 3: pip install 'rhei-lake[postgres]'") from None
    return psycopg


def _secret(location: SourceLocation) -> str | None:
    parts = urlsplit(location.url)
    return unquote(parts.password) if parts.password else None


def _clean(text: str, location: SourceLocation) -> str:
    secret = _secret(location)
    text = " ".join(text.strip().split())
    if secret:
        text = text.replace(secret, "***")
    return text


def translate_postgres_error(exc: BaseException, location: SourceLocation, *, where: str = "") -> SourceError:
    """Map a psycopg error to a rhei_lake SourceError naming what is wrong (password masked)."""
    psycopg = _psycopg()
    text = _clean(str(exc) or type(exc).__name__, location)
    low = text.lower()
    prefix = f"{location.masked}{': ' + where if where else ''}"
    errors = psycopg.errors
    if isinstance(exc, (errors.UndefinedTable, errors.InvalidSchemaName)):
        return SchemaError(f"{prefix}: {text}")
    if isinstance(exc, errors.UndefinedColumn):
        return SchemaError(f"{prefix}: {text}")
    if isinstance(exc, errors.ReadOnlySqlTransaction):
        return ReadOnlySourceError(f"{prefix}: the sidecar only reads this database ({text})")
    if isinstance(exc, errors.InsufficientPrivilege):
        return SourceError(f"{prefix}: permission denied, grant SELECT to the sidecar's role ({text})")
    if "password authentication failed" in low or "authentication failed" in low or "no password supplied" in low:
        return SourceError(f"{prefix}: wrong credentials ({text})")
    if isinstance(exc, errors.InvalidCatalogName) or ("database" in low and "does not exist" in low):
        return SourceError(f"{prefix}: the database does not exist ({text})")
    if isinstance(exc, (errors.AdminShutdown, errors.CannotConnectNow)) or any(m in low for m in _UNAVAILABLE_MARKERS):
        return SourceUnavailableError(f"{prefix}: PostgreSQL is unreachable right now ({text})")
    if isinstance(exc, psycopg.OperationalError):
        return SourceUnavailableError(f"{prefix}: {text}")
    return SourceError(f"{prefix}: {text}")


# SQLSTATEs after which the same read may succeed later: a lost or refused connection (class 08), the
# server shutting down or starting (57P0x), a statement or lock timeout (57014, 55P03), too few
# resources (class 53), a serialization failure or deadlock (40001, 40P01).
_TRANSIENT_SQLSTATES = ("08", "57P", "57014", "55P03", "53", "40001", "40P01")
# The same, as libpq words them in an error the driver's stream reports without its SQLSTATE.
_TRANSIENT_MARKERS = (*_UNAVAILABLE_MARKERS, "due to lock timeout", "due to statement timeout", "deadlock detected")


def translate_adbc_error(exc: BaseException, location: SourceLocation, *, where: str = "") -> SourceError:
    """Map an error of ADBC's PostgreSQL driver (or of its Arrow stream: an OSError is a lost
    connection) to a rhei_lake SourceError, password masked, by its SQLSTATE where the driver gives one."""
    text = _clean(str(exc) or type(exc).__name__, location)
    prefix = f"{location.masked}{': ' + where if where else ''}"
    sqlstate = str(getattr(exc, "sqlstate", None) or "")
    if sqlstate == "42501":
        return SourceError(f"{prefix}: permission denied, grant SELECT to the sidecar's role ({text})")
    if (
        isinstance(exc, OSError)
        or sqlstate.startswith(_TRANSIENT_SQLSTATES)
        or any(m in text.lower() for m in _TRANSIENT_MARKERS)
    ):
        return SourceUnavailableError(f"{prefix}: {text}")
    return SourceError(f"{prefix}: {text}")


def connect(location: SourceLocation) -> psycopg.Connection:
    """A read-only, UTC connection to the source (not in autocommit: every read is a transaction)."""
    psycopg = _psycopg()
    kwargs: dict[str, object] = {"application_name": APPLICATION_NAME}
    if "connect_timeout" not in location.url:
        kwargs["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
    try:
        conn = psycopg.connect(location.url, autocommit=True, **kwargs)
    except psycopg.Error as exc:
        raise translate_postgres_error(exc, location, where="connect") from exc
    except Exception as exc:  # e.g. a malformed conninfo: never echo it
        raise SourceError(f"{location.masked}: cannot connect ({_clean(str(exc), location)})") from None
    try:
        conn.execute("SET default_transaction_read_only = on")
        conn.execute("SET TIME ZONE 'UTC'")
        conn.autocommit = False
        conn.read_only = True
    except psycopg.Error as exc:
        conn.close()
        raise translate_postgres_error(exc, location, where="connect") from exc
    return conn
