"""Blobs on S3 (or MinIO) through obstore; ``put_if_absent`` is a conditional PUT (If-None-Match)."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from rhei_lake.errors import CommitConflictError, is_missing_object, is_refused_create, raise_storage
from rhei_lake.storage.blobs import BlobInfo

if TYPE_CHECKING:
    from obstore.store import ClientConfig, S3Config

# How obstore should treat a flaky store: a few quick retries, then an error the
# sync loop backs off on, instead of object_store's default of three minutes.
DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_TIMEOUT = timedelta(seconds=20)


def obstore_s3_config(options: Mapping[str, str]) -> tuple[S3Config, ClientConfig]:
    """Split rhei_lake's AWS_* options into obstore's S3 config and client options."""
    config: S3Config = {}
    client: ClientConfig = {"timeout": "30s", "connect_timeout": "5s"}
    for key, value in options.items():
        match key.upper():
            case "AWS_ACCESS_KEY_ID":
                config["access_key_id"] = value
            case "AWS_SECRET_ACCESS_KEY":
                config["secret_access_key"] = value
            case "AWS_SESSION_TOKEN":
                config["session_token"] = value
            case "AWS_REGION":
                config["region"] = value
            case "AWS_ENDPOINT_URL":
                config["endpoint"] = value
            case "AWS_VIRTUAL_HOSTED_STYLE_REQUEST":
                # obstore's stub says bool; object_store parses the option's text ("true", "1", "yes", ...)
                # itself and refuses what is neither, as it does for the environment variable.
                config["virtual_hosted_style_request"] = value  # type: ignore[typeddict-item]
            case "AWS_ALLOW_HTTP":
                client["allow_http"] = str(value).lower() in ("1", "true", "yes")
    return config, client


class S3Blobs:
    """A :class:`~rhei_lake.storage.blobs.BlobStore` on an S3 bucket and prefix."""

    def __init__(self, bucket: str, prefix: str, options: Mapping[str, str]) -> None:
        from obstore.store import S3Store

        config, client = obstore_s3_config(options)
        self.where = f"s3://{bucket}/{prefix}".rstrip("/")
        try:
            self._store = S3Store(
                bucket,
                prefix=prefix or None,
                config=config,
                client_options=client,
                retry_config={"max_retries": DEFAULT_MAX_RETRIES, "retry_timeout": DEFAULT_RETRY_TIMEOUT},
            )
        except Exception as exc:  # obstore raises on unknown or malformed options
            raise_storage(exc, where=self.where)

    def put_if_absent(self, key: str, data: bytes) -> None:
        import obstore

        try:
            obstore.put(self._store, key, data, mode="create")
        except Exception as exc:
            if not is_refused_create(exc):
                raise_storage(exc, where=f"{self.where}/{key}")
            # obstore retries a PUT whose reply was lost; the retry's If-None-Match then
            # fails on the object the first attempt stored. Our own bytes are a success.
            if self.get(key) != bytes(data):
                raise CommitConflictError(f"{self.where}/{key} already exists: another writer committed first") from exc

    def create(self, key: str, data: bytes) -> bool:
        """One conditional PUT (``If-None-Match: *``): True if it stored ``key``, False if the store refused it."""
        import obstore

        try:
            obstore.put(self._store, key, data, mode="create")
            return True
        except Exception as exc:
            if is_refused_create(exc):
                return False
            raise_storage(exc, where=f"{self.where}/{key}")

    def put(self, key: str, data: bytes) -> None:
        import obstore

        try:
            # One PUT (up to 5 GB): obstore's default buffered upload panics in a runtime thread
            # when the connection fails ("Already shut down"), after which this process's requests
            # to the store hung until their timeout (30 s) in a test of an S3 outage.
            obstore.put(self._store, key, data, use_multipart=False)
        except Exception as exc:
            raise_storage(exc, where=f"{self.where}/{key}")

    def get(self, key: str) -> bytes | None:
        import obstore

        try:
            return bytes(obstore.get(self._store, key).bytes())
        except Exception as exc:
            if is_missing_object(exc):
                return None
            raise_storage(exc, where=f"{self.where}/{key}")

    def exists(self, key: str) -> bool:
        import obstore

        try:
            obstore.head(self._store, key)
            return True
        except Exception as exc:
            if is_missing_object(exc):
                return False
            raise_storage(exc, where=f"{self.where}/{key}")

    def list(self, prefix: str) -> list[BlobInfo]:
        import obstore

        try:
            out: list[BlobInfo] = []
            for chunk in obstore.list(self._store, prefix or None):
                out.extend(BlobInfo(obj["path"], obj["size"]) for obj in chunk)
            return sorted(out, key=lambda b: b.key)
        except Exception as exc:
            raise_storage(exc, where=f"{self.where}/{prefix}")

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        import obstore

        try:
            result = obstore.list_with_delimiter(self._store, prefix.rstrip("/") + "/" if prefix else None)
        except Exception as exc:
            raise_storage(exc, where=f"{self.where}/{prefix}")
        base = prefix.rstrip("/") + "/" if prefix else ""
        return sorted(p[len(base) :].rstrip("/") for p in result["common_prefixes"])

    def delete(self, keys: Iterable[str]) -> None:
        import obstore

        batch = list(keys)
        if not batch:
            return
        try:
            obstore.delete(self._store, batch)
        except Exception as exc:
            if is_missing_object(exc):
                return
            raise_storage(exc, where=self.where)
