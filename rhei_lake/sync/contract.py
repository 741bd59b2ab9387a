"""The one contract a lake's sync keeps, whichever way it captures changes.

Two implementations: :class:`~rhei_lake.sync.trigger_sync.TriggerSync` (HTAP
mode: triggers into a CDC log in a database the lake owns) and
:class:`~rhei_lake.sync.polling_sync.PollingSync` (sidecar mode: polling a
database it only reads). The lake talks to either through this surface alone;
what only trigger capture can do (registering tables, schema changes through
the lake, repairing events) the lake asks of a ``TriggerSync`` by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from rhei_lake.catalog import TableSpec
from rhei_lake.errors import RheiError
from rhei_lake.storage.changelog import Changelog
from rhei_lake.sync.report import SyncReport
from rhei_lake.sync.status import LagProbe

ProgressCallback = Callable[[str, int, int], None]
"""Called as ``progress(table, rows_done, rows_total)`` during long work."""


class Sync(Protocol):
    """Moves captured changes into the lake's changelogs, exactly once."""

    changelogs: dict[str, Changelog]
    """The change feed of every table this sync mirrors."""

    waiting: dict[str, RheiError]
    """Tables whose registration did not finish, with the error that stopped it (its way on)."""

    @property
    def specs(self) -> dict[str, TableSpec]:
        """The source-side spec of every mirrored table."""
        ...

    @property
    def position(self) -> int | None:
        """The capture position every event up to which is committed (``None``: none, or no such position)."""
        ...

    @property
    def horizon(self) -> int | None:
        """Micros: the lake's answer for any instant up to this one is final (``None`` when not known)."""
        ...

    @property
    def lag_probe(self) -> LagProbe | None:
        """``probe(table, synced)``: events captured but not committed, and the oldest one's time."""
        ...

    @property
    def read_only_source(self) -> str | None:
        """The (masked) location of a source the lake only reads, where writes must go directly; ``None``
        when the lake owns its database and writes go through it."""
        ...

    def attach(self, progress: ProgressCallback | None = None) -> None:
        """Open the changelog of every table, finishing what a previous process left half done."""
        ...

    def sync_now(self, progress: ProgressCallback | None = None) -> SyncReport:
        """Commit everything captured so far; returns once it is committed."""
        ...

    def flush(self) -> int:
        """Move every changelog's hot-path tail into its Delta table; returns the rows moved."""
        ...

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until the background upkeep handed off so far (tail flushes, log prunes) is done; False on timeout."""
        ...

    def close(self) -> None:
        """Finish background housekeeping and release the source."""
        ...
