"""Where a sidecar reads from: ``sqlite://<path>`` or ``postgresql://user:password@host:port/db``.

The URL is parsed once at the edge. Its password never appears in a repr, log
line or error message: everything shown uses :attr:`SourceLocation.masked`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from rhei_lake.errors import ConfigError

SourceKind = Literal["sqlite", "postgresql"]
_SCHEMES: dict[str, SourceKind] = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}
_SECRET_PARAMS = ("password", "sslpassword")


def mask_url(url: str) -> str:
    """``url`` with any password (in the user part or the query string) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" not in netloc and not any(k.lower() in _SECRET_PARAMS for k, _ in parse_qsl(parts.query)):
        return url
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True)
class SourceLocation:
    """A parsed source URL: its kind, the SQLite path or the PostgreSQL conninfo URL."""

    kind: SourceKind
    url: str = field(repr=False)
    path: str | None = None

    @property
    def masked(self) -> str:
        return mask_url(self.url)

    def __str__(self) -> str:
        return self.masked


def parse_source_url(url: str) -> SourceLocation:
    """Parse a source URL; ConfigError (with the password masked) if it is not one.

    ``sqlite://`` is followed by the file path as is: ``sqlite:///srv/app.db`` is
    the absolute path ``/srv/app.db`` (so is SQLAlchemy's ``sqlite:////srv/app.db``),
    ``sqlite://app.db`` is relative to the
    working directory.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("source: must be a non-empty URL such as sqlite:///path/app.db or postgresql://user@host/db")
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    kind = _SCHEMES.get(scheme.lower()) if sep else None
    if kind is None:
        raise ConfigError(
            f"source: {mask_url(text)!r} is not a sqlite:// or postgresql:// URL "
            "(e.g. sqlite:///srv/app.db or postgresql://app@db.internal:5432/shop)"
        )
    if kind == "sqlite":
        path = rest.split("?", 1)[0]
        if not path or path in (":memory:",) or path.startswith("file::memory:"):
            raise ConfigError("source: a sqlite:// URL needs a database file path (sqlite:///srv/app.db)")
        if path.startswith("//"):  # SQLAlchemy's spelling of an absolute path: sqlite:////srv/app.db
            path = "/" + path.lstrip("/")
        return SourceLocation("sqlite", text, os.path.expanduser(path))
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise ConfigError(f"source: {mask_url(text)!r} is not a valid PostgreSQL URL ({exc})") from None
    if not parts.path.strip("/"):
        raise ConfigError(f"source: {mask_url(text)!r} names no database (postgresql://user@host:5432/DBNAME)")
    return SourceLocation("postgresql", text)
