"""Parse a storage URL into a :class:`StorageLocation`; resolve object-store options.

Three kinds of URL, and the durability dial is only the URL:

* ``memory://`` (private to one lake) or ``memory://NAME`` (shared in-process by name)
* a local path, ``./lake`` or ``/data/lake``, or ``file:///data/lake``
* ``s3://bucket/prefix`` (S3 or any S3-compatible store such as MinIO)
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlparse

from rhei_lake._shared.options import mask_options
from rhei_lake.errors import ConfigError

Scheme = Literal["memory", "file", "s3"]
SCHEMES: tuple[Scheme, ...] = ("memory", "file", "s3")

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
# Characters delta-rs (deltalake 1.6.6) cannot take in a table's location, local or on S3: '[',
# ']', '^', '|' and a backslash make its writer panic ("Invalid object store url:
# InvalidDomainCharacter"); on local paths it also reads a backslash as a separator.
_UNWRITABLE = "[]^|" + ("\\" if os.sep == "/" else "")


# delta-rs also decodes a percent escape in a location ('%41' is 'A'), so it would look for
# its tables somewhere else than where the lake keeps the rest.
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def _check_characters(url: str, text: str) -> None:
    found = sorted({ch for ch in text if ch in _UNWRITABLE or ord(ch) < 32 or ord(ch) == 127})
    found += sorted(set(_PERCENT_ESCAPE.findall(text)))
    if found:
        shown = " ".join(repr(ch) for ch in found)
        raise ConfigError(
            f"storage: {url!r} contains {shown}, which the Delta Lake writer (delta-rs) cannot take in a "
            "table's location; choose a location without it"
        )


@dataclass(frozen=True)
class StorageLocation:
    """Where a lake lives. ``root`` is a local absolute path, ``bucket/prefix`` or a memory name."""

    scheme: Scheme
    url: str
    root: str
    options: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def bucket(self) -> str:
        return self.root.split("/", 1)[0]

    @property
    def prefix(self) -> str:
        parts = self.root.split("/", 1)
        return parts[1] if len(parts) > 1 else ""

    def table_uri(self, *parts: str) -> str:
        """The URI deltalake understands for a path below the lake root."""
        rel = "/".join(p.strip("/") for p in parts if p)
        if self.scheme == "file":
            return os.path.join(self.root, *[p for p in parts if p])
        if self.scheme == "s3":
            return f"s3://{self.root.rstrip('/')}/{rel}"
        return f"memory://{self.root}/{rel}"

    def describe(self) -> str:
        """The URL with secrets masked, safe for logs."""
        opts = mask_options(self.options)
        return f"{self.url} {opts}" if opts else self.url

    def with_options(self, options: Mapping[str, str]) -> StorageLocation:
        return StorageLocation(self.scheme, self.url, self.root, dict(options))


def parse_storage_url(url: str, options: Mapping[str, str] | None = None) -> StorageLocation:
    """Parse ``url``; raise :class:`ConfigError` with the reason when it is not usable."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("storage: must be a non-empty URL or path (memory://, ./lake, s3://bucket/prefix)")
    url = url.strip()
    opts = dict(options or {})
    if url.startswith("memory:"):
        if not url.startswith("memory://"):
            raise ConfigError(f"storage: {url!r} is not a memory URL; write memory:// or memory://NAME")
        name = url[len("memory://") :].strip("/")
        if "/" in name:
            raise ConfigError(f"storage: memory lake names cannot contain '/': {url!r}")
        private = not name
        root = name or f"private-{uuid.uuid4().hex}"
        return StorageLocation("memory", "memory://" if private else f"memory://{name}", root, opts)
    if _WINDOWS_DRIVE.match(url) or "://" not in url:
        if url.startswith("s3:") or url.startswith("file:"):
            raise ConfigError(f"storage: {url!r} is malformed; write s3://bucket/prefix or file:///abs/path")
        path = os.path.abspath(os.path.expanduser(url))
        _check_characters(url, path)
        return StorageLocation("file", path, path, opts)
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"storage: file URLs must be file:///absolute/path, got {url!r}")
        path = unquote(parsed.path)
        if not path:
            raise ConfigError(f"storage: {url!r} has no path")
        path = os.path.abspath(path)
        _check_characters(url, path)
        return StorageLocation("file", path, path, opts)
    if scheme in ("s3", "s3a"):
        bucket = parsed.netloc
        if not bucket:
            raise ConfigError(f"storage: {url!r} names no bucket; write s3://bucket/prefix")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise ConfigError(f"storage: {bucket!r} is not a valid S3 bucket name")
        if parsed.query or parsed.fragment:
            raise ConfigError(f"storage: {url!r} must not carry a query or fragment; pass options separately")
        prefix = parsed.path.strip("/")
        if any(part in (".", "..") for part in prefix.split("/")):
            raise ConfigError(f"storage: {url!r} has '.' or '..' in its prefix")
        _check_characters(url, prefix)
        _check_characters(url, unquote(prefix))
        root = f"{bucket}/{prefix}" if prefix else bucket
        return StorageLocation("s3", f"s3://{root}", root, opts)
    known = ", ".join(f"{s}://" for s in SCHEMES)
    raise ConfigError(
        f"storage: unknown URL scheme {scheme + '://'!r} in {url!r}; rhei_lake knows {known} and local paths"
    )


_ENV_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ALLOW_HTTP",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
)


def resolve_s3_options(explicit: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """Merge the usual ``AWS_*`` environment variables under explicit options.

    Called at the edge (``open()``, the CLI); storage code only ever sees the result.
    Keys are normalised to upper case, ``AWS_ENDPOINT`` becomes ``AWS_ENDPOINT_URL``,
    and an ``http://`` endpoint turns on ``AWS_ALLOW_HTTP``.
    """
    merged: dict[str, str] = {k: environ[k] for k in _ENV_KEYS if environ.get(k)}
    for key, value in explicit.items():
        merged[key.upper()] = str(value)
    if "AWS_ENDPOINT" in merged and "AWS_ENDPOINT_URL" not in merged:
        merged["AWS_ENDPOINT_URL"] = merged.pop("AWS_ENDPOINT")
    if "AWS_ENDPOINT_URL_S3" in merged and "AWS_ENDPOINT_URL" not in merged:
        merged["AWS_ENDPOINT_URL"] = merged["AWS_ENDPOINT_URL_S3"]
    if "AWS_REGION" not in merged:
        merged["AWS_REGION"] = merged.get("AWS_DEFAULT_REGION", "us-east-1")
    endpoint = merged.get("AWS_ENDPOINT_URL", "")
    if endpoint.startswith("http://"):
        merged.setdefault("AWS_ALLOW_HTTP", "true")
    return merged
