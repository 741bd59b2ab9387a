"""The settings of one table a sidecar polls: :class:`PolledTable`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

EpochUnit = Literal["s", "ms", "us"]


class PolledTable(BaseModel):
    """A table of an external database that the sidecar follows by polling.

    ``PolledTable("orders", primary_key=["id"], updated_at="updated_at", deleted_at="deleted_at")``

    * ``updated_at`` names the column the application bumps on every insert and
      update; rows are read in ``(updated_at, primary key)`` order after the last
      committed cursor, and a version's validity starts at its ``updated_at``.
    * ``deleted_at`` (optional) names a soft-delete column: a row where it is
      non-NULL (and not ``false``) is deleted.
    * ``primary_key`` defaults to the key the source declares.
    * ``epoch_unit`` says how to read an integer or real ``updated_at``
      (seconds, milliseconds or microseconds since the Unix epoch).
    * ``hard_deletes`` turns the periodic scan for vanished rows on or off.
    * ``types`` overrides declared column types (as in ``register_table``).
    * ``source_schema`` is the PostgreSQL schema (default: the first match on the
      server's ``search_path``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The table (or view) name in the source database.")
    updated_at: str = Field(description="Column bumped on every insert and update.")
    primary_key: tuple[str, ...] | None = Field(None, description="Key columns (default: the declared key).")
    deleted_at: str | None = Field(None, description="Soft-delete column: non-NULL means deleted.")
    epoch_unit: EpochUnit = Field("s", description="Unit of integer/real updated_at values.")
    hard_deletes: bool = Field(True, description="Detect rows deleted from the source by a periodic key scan.")
    types: dict[str, str] = Field(default_factory=dict, description="Declared-type overrides by column.")
    source_schema: str | None = Field(None, description="PostgreSQL schema of the table.")

    def __init__(self, name: str | None = None, /, **data: Any) -> None:
        if name is not None:
            if "name" in data:
                raise TypeError("PolledTable: name given twice")
            data["name"] = name
        super().__init__(**data)

    @field_validator("name", "updated_at")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("primary_key")
    @classmethod
    def _key(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            if not value:
                raise ValueError("must name at least one column (or be omitted to use the declared key)")
            if len(set(value)) != len(value):
                raise ValueError("names a column twice")
        return value

    @model_validator(mode="after")
    def _columns_differ(self) -> PolledTable:
        if self.deleted_at is not None and self.deleted_at == self.updated_at:
            raise ValueError("deleted_at and updated_at must be different columns")
        return self
