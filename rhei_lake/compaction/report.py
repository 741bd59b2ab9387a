"""What a compaction did, per table and in total."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TableCompactionReport:
    """One table's part of a compaction.

    ``files`` maps each of the table's Delta tables (``changes``, ``history`` or
    ``current``) to its number of data files before and after. In a dry run the
    counts say what would be folded, expired and vacuumed, and nothing changed.
    """

    table: str
    mode: str
    events_flushed: int = 0
    events_folded: int = 0
    versions_written: int = 0
    versions_closed: int = 0
    changes_expired: int = 0
    folded_watermark: int = 0
    files: dict[str, tuple[int, int]] = field(default_factory=dict)
    files_vacuumed: int = 0
    bytes_removed: int = 0
    duration_seconds: float = 0.0

    @property
    def files_before(self) -> int:
        return sum(before for before, _after in self.files.values())

    @property
    def files_after(self) -> int:
        return sum(after for _before, after in self.files.values())

    def __str__(self) -> str:
        return (
            f"{self.table}: folded {self.events_folded} events ({self.versions_written} versions written, "
            f"{self.versions_closed} closed), expired {self.changes_expired} change rows, "
            f"files {self.files_before} -> {self.files_after}, vacuumed {self.files_vacuumed} files "
            f"({size_text(self.bytes_removed)}) in {self.duration_seconds:.2f} s"
        )


@dataclass(frozen=True)
class CompactionReport:
    """Returned by ``Lake.compact()``: one :class:`TableCompactionReport` per table."""

    tables: dict[str, TableCompactionReport] = field(default_factory=dict)
    duration_seconds: float = 0.0
    dry_run: bool = False

    @property
    def events_folded(self) -> int:
        return sum(t.events_folded for t in self.tables.values())

    @property
    def bytes_removed(self) -> int:
        return sum(t.bytes_removed for t in self.tables.values())

    def __str__(self) -> str:
        head = "dry run: would compact" if self.dry_run else "compacted"
        lines = [f"{head} {len(self.tables)} table(s) in {self.duration_seconds:.2f} s"]
        lines.extend(f"  {t}" for t in self.tables.values())
        return "\n".join(lines)


def size_text(count: int) -> str:
    """``count`` bytes for people: ``512 B``, ``6.0 KiB``, ``1.2 GiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"
