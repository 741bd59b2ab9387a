"""Configuration: one pydantic model, resolved once at the edge and passed inward."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from rhei_lake._shared.options import is_secret_key as is_secret_key
from rhei_lake._shared.options import mask_options as mask_options
from rhei_lake.capture.polled_table import PolledTable
from rhei_lake.errors import ConfigError
from rhei_lake.relation_names import name_clashes

DEFAULT_STORAGE = "memory://"
DEFAULT_BATCH_SIZE = 50_000
DEFAULT_TAIL_FLUSH_SEGMENTS = 64
DEFAULT_TAIL_FLUSH_ROWS = 200_000
DEFAULT_TAIL_FLUSH_INTERVAL = 30.0
DEFAULT_PRUNE_INTERVAL = 1.0
DEFAULT_COLUMNAR_MIN_ROWS = 100_000
DEFAULT_HARD_DELETE_INTERVAL = 300.0
DEFAULT_SYNC_MAX_BACKOFF = 30.0
DEFAULT_LEASE_TTL = 30.0
DEFAULT_VACUUM_RETENTION = timedelta(days=7)
DEFAULT_CHANGELOG_RETENTION = timedelta(days=7)
DEFAULT_TARGET_FILE_SIZE = 128 * 1024 * 1024
DEFAULT_REMOTE_REFRESH_INTERVAL = 0.5
DEFAULT_FLIGHT_HOST = "127.0.0.1"


class LakeConfig(BaseModel):
    """Everything :func:`rhei_lake.open` needs, validated.

    Unknown fields are errors, so a misspelt option never silently does nothing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    storage: str = Field(
        DEFAULT_STORAGE,
        description="Where the lake lives: memory://, a local path or file:// URL, or s3://bucket/prefix.",
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="Object-store options such as AWS_ENDPOINT_URL or AWS_ACCESS_KEY_ID (override AWS_* env).",
        repr=False,
    )
    oltp_path: str | None = Field(
        None, description="The SQLite database rhei_lake owns in HTAP mode (created if missing)."
    )
    sync_mode: Literal["temporal", "mirror"] = Field(
        "temporal", description="temporal keeps SCD2 history; mirror keeps current rows only."
    )
    batch_size: int = Field(
        DEFAULT_BATCH_SIZE, gt=0, le=10_000_000, description="Change events read from the source per batch."
    )
    tail_flush_segments: int = Field(
        DEFAULT_TAIL_FLUSH_SEGMENTS,
        gt=0,
        description="Hot-path segments a table accumulates before they are folded into its Delta changelog.",
    )
    tail_flush_rows: int = Field(
        DEFAULT_TAIL_FLUSH_ROWS, gt=0, description="Rows in a table's hot-path tail that trigger a flush."
    )
    tail_flush_interval: float = Field(
        DEFAULT_TAIL_FLUSH_INTERVAL,
        gt=0,
        le=3600,
        description="Seconds a synced event may wait in a table's hot-path tail before the next sync cycle "
        "flushes it into the Delta changelog, where engines that read the Delta tables directly see it "
        "(rhei_lake's own queries see the tail at once).",
    )
    columnar_min_rows: int = Field(
        DEFAULT_COLUMNAR_MIN_ROWS,
        ge=0,
        description="Tables with at least this many rows are read by the ADBC reader process when first "
        "captured (a trigger-mode snapshot, a sidecar's first sync of a SQLite table): several times faster; "
        "0 always reads through sqlite3.",
    )
    auto_register: bool = Field(
        False,
        description="Mirror every table created through execute()/execute_batch() as soon as its CREATE "
        "commits (a table that cannot be mirrored, e.g. one without a primary key, is left out with a "
        "warning). `rh` turns it on unless this option is set.",
    )
    read_only: bool = Field(
        False,
        description="Open the lake for reading only: nothing is snapshot, synced, pruned or written, "
        "neither to the lake nor to oltp_path, and no writer lease is taken (queries and status of a "
        "lake another process syncs; with oltp_path, point reads and lag come from that database).",
    )
    engine: Literal["datafusion", "duckdb"] = Field(
        "datafusion",
        description="The engine that runs queries on the lake: datafusion, or duckdb (DuckDB's SQL; needs "
        "pip install 'rhei-lake[duckdb]'). Both read the same views and give the same rows and Arrow types.",
    )
    prune_interval: float = Field(
        DEFAULT_PRUNE_INTERVAL,
        ge=0,
        description="Seconds between deletions of committed events from the SQLite CDC log (0: every sync).",
    )

    source: str | None = Field(
        None,
        description="Sidecar mode: the external database to follow, sqlite:///path or postgresql://user@host/db.",
        repr=False,
    )
    tables: list[PolledTable] = Field(
        default_factory=list, description="Sidecar mode: the tables to poll (see rhei_lake.PolledTable)."
    )
    hard_delete_interval: float = Field(
        DEFAULT_HARD_DELETE_INTERVAL,
        ge=0,
        description="Sidecar mode: seconds between scans for rows deleted from the source (0: every sync).",
    )
    sync_interval: float | None = Field(
        None,
        gt=0,
        description="Seconds between background sync cycles; set to start the sync loop at open() (needs a source).",
    )
    sync_max_backoff: float = Field(
        DEFAULT_SYNC_MAX_BACKOFF,
        gt=0,
        description="Longest wait, in seconds, between retries of a failing background sync.",
    )
    final_sync: bool = Field(
        True, description="Whether close() runs a last sync when the background sync loop is running."
    )
    lease_ttl: float = Field(
        DEFAULT_LEASE_TTL,
        gt=0,
        le=3600,
        description="Seconds a syncing lake's writer lease lasts unless renewed (every third of it); "
        "another process may take an expired lease over.",
    )
    conditional_writes: Literal["verify", "single_writer"] = Field(
        "verify",
        description="S3: 'verify' proves at open() (one request) that the store refuses a create of an object "
        "that exists, which safe concurrent writers and exactly-once retries rely on, and refuses a store that "
        "does not (StorageAccessError); 'single_writer' skips the proof, for a store without conditional writes "
        "that exactly one process ever writes to.",
    )
    lease_wait: float = Field(
        0.0,
        ge=0,
        description="Seconds open() waits for another process's writer lease before raising LeaseHeldError "
        "(0: refuse at once).",
    )

    vacuum_retention: timedelta = Field(
        DEFAULT_VACUUM_RETENTION,
        description=(
            "How long compaction keeps Delta files no longer referenced (readers of older snapshots and "
            "time travel by version need them): 7d, 12h, 30m, seconds, or 0 to delete them at once."
        ),
    )
    changelog_retention: timedelta | None = Field(
        DEFAULT_CHANGELOG_RETENTION,
        description=(
            "How long folded change events stay in <table>/changes (the t_changes feed); "
            "'forever' (or None) keeps them."
        ),
    )
    target_file_size: int = Field(
        DEFAULT_TARGET_FILE_SIZE, ge=1024, description="Bytes per data file that compaction bin-packs towards."
    )
    refresh_interval: float | None = Field(
        None,
        ge=0,
        le=3600,
        description="Read-only lakes: a query sees every sync another process finished at least this many seconds "
        "before it started; each table a query reads is looked at again at most this often "
        f"(0: before every query; refresh() looks at once). Default: 0 on local paths (a look is a few stats), "
        f"{DEFAULT_REMOTE_REFRESH_INTERVAL:g} on S3 (a look is one request for the lake when nothing changed, "
        "two or three per table read when something did).",
    )

    @field_validator("vacuum_retention", "changelog_retention", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        from rhei_lake.timeutil import parse_duration

        if value is None or (isinstance(value, str) and value.strip().lower() == "forever"):
            return None  # only changelog_retention accepts it; pydantic refuses None elsewhere
        return parse_duration(value, what=None)

    flight_host: str = Field(
        DEFAULT_FLIGHT_HOST,
        min_length=1,
        description="Address the Flight SQL server binds (127.0.0.1: this machine only; 0.0.0.0: every interface).",
    )
    flight_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the Flight SQL server; `rh serve` starts it when set (0: any free port).",
    )
    flight_token: SecretStr | None = Field(
        None, description="Bearer token every Flight SQL call must present (none: no authentication)."
    )
    flight_tls_cert: str | None = Field(
        None, min_length=1, description="PEM certificate file: the Flight SQL server speaks TLS (with flight_tls_key)."
    )
    flight_tls_key: str | None = Field(None, min_length=1, description="PEM private key file of flight_tls_cert.")
    flight_compression: Literal["zstd", "lz4", "none"] = Field(
        "zstd", description="IPC body compression of the record batches the Flight SQL server streams."
    )

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        from rhei_lake.storage.location import parse_storage_url

        parse_storage_url(value)  # raises ConfigError naming the problem
        return value

    @field_validator("oltp_path")
    @classmethod
    def _oltp_path(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("source")
    @classmethod
    def _source_url(cls, value: str | None) -> str | None:
        if value is not None:
            from rhei_lake.capture.source_url import parse_source_url

            try:
                parse_source_url(value)
            except ConfigError as exc:  # its message names the field already; pydantic adds it again
                raise ValueError(str(exc).removeprefix("source: ")) from None
        return value

    @model_validator(mode="after")
    def _one_mode(self) -> LakeConfig:
        if self.source is not None and self.oltp_path is not None:
            raise ValueError("source and oltp_path exclude each other: a lake follows one database")
        if self.tables and self.source is None:
            raise ValueError("tables are polled from a source: set source= (sqlite:///path or postgresql://...)")
        if self.source is not None and not self.tables:
            raise ValueError("sidecar mode needs tables=[PolledTable(...)] naming the tables to follow")
        names = [t.name.lower() for t in self.tables]
        if len(set(names)) != len(names):
            raise ValueError("tables: a table is listed twice")
        clashes = name_clashes(t.name for t in self.tables)
        if clashes:
            raise ValueError(f"tables: {clashes[0].describe()} (query names ignore case); follow only one of them")
        if self.read_only and self.sync_interval is not None:
            raise ValueError(
                "sync_interval starts a sync loop, which a read_only lake never runs: set one or the other"
            )
        return self

    @field_validator("flight_token")
    @classmethod
    def _flight_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> LakeConfig:
        if (self.flight_tls_cert is None) != (self.flight_tls_key is None):
            raise ValueError("flight_tls_cert and flight_tls_key go together: set both or neither")
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        yield from super().__repr_args__()
        yield "storage_options", mask_options(self.storage_options)
        if self.source is not None:
            from rhei_lake.capture.source_url import mask_url

            yield "source", mask_url(self.source)


def build_config(config: LakeConfig | Mapping[str, Any] | None = None, **overrides: Any) -> LakeConfig:
    """Validate ``config`` merged with keyword ``overrides`` into a :class:`LakeConfig`.

    Raises :class:`~rhei_lake.errors.ConfigError` naming every invalid field.
    """
    if isinstance(config, LakeConfig):
        base: dict[str, Any] = config.model_dump()
    elif config is None:
        base = {}
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        raise ConfigError(f"config must be a LakeConfig or a mapping, not {type(config).__name__}")
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return LakeConfig(**base)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    except ConfigError:
        raise


def format_validation_error(exc: ValidationError, *, known: Iterable[str] | None = None) -> str:
    """One readable part per invalid field, all of them at once; secrets never echoed.

    An unknown option is named with the closest known one (``known``: the
    accepted names, by default :class:`LakeConfig`'s fields).
    """
    names = list(known) if known is not None else list(LakeConfig.model_fields)
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        msg = msg.removeprefix(f"{field}: ")  # a validator's own message may name its field already
        if err["type"] == "extra_forbidden":
            msg = "unknown option" + did_you_mean(str(err["loc"][-1]), names)
        parts.append(f"{field}: {msg}")
    return "invalid configuration: " + "; ".join(parts)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean X?)`` naming the known option closest to ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
