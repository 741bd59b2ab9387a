"""The live dashboard of ``rh serve`` (rich Live): tables, lag, throughput, compaction, recent log.

Keys: ``q`` stops the service (as SIGTERM does), ``c`` compacts now.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from rhei_lake.cli.service_logs import RecentLog
from rhei_lake.cli.status import ago, number
from rhei_lake.service.lake_service import LakeService, ServiceSnapshot

REFRESH_SECONDS = 0.5
_LEVEL_STYLES = {"WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold red"}
_STATE_STYLES = {"running": "green", "backing_off": "yellow", "failed": "bold red", "stopped": "dim"}


def render(snapshot: ServiceSnapshot, service: LakeService, log: RecentLog, height: int) -> Group:
    """The whole screen for one snapshot."""
    tables = _tables(snapshot)
    shown = len(snapshot.status.tables) if snapshot.status else 1
    log_rows = max(3, height - 12 - max(1, shown))
    return Group(_header(snapshot, service), tables, _log_panel(log, log_rows), _footer(snapshot))


def _header(snapshot: ServiceSnapshot, service: LakeService) -> Panel:
    status = snapshot.status
    uptime = int((datetime.now(UTC) - snapshot.started_at).total_seconds())
    first = Text.assemble(
        ("rh serve", "bold"),
        f"  {service.lake.location.url}  ({service.mode})",
        f"  up {uptime // 3600:d}:{uptime // 60 % 60:02d}:{uptime % 60:02d}",
    )
    if status is None or snapshot.sync_interval is None:
        sync = Text("sync: none (no source)", style="dim")
    else:
        loop = status.loop
        sync = Text.assemble(
            "sync: ",
            (loop.state, _STATE_STYLES.get(loop.state, "")),
            f" every {snapshot.sync_interval:g}s, {loop.cycles} cycles",
            f", {loop.consecutive_failures} failing in a row" if loop.consecutive_failures else "",
            f", retry in {loop.next_attempt_in:.1f}s" if loop.next_attempt_in is not None else "",
            f"  lag {number(status.lag_events)} events / {number(status.lag_seconds, 1)} s"
            if status.lag_events is not None
            else "",
        )
    c = snapshot.compaction
    if c.schedule is None and not c.runs and not c.failures and not c.running:
        compaction = Text("compaction: not scheduled (press c to run now)", style="dim")
    else:
        parts = [f"compaction: {c.schedule or 'on demand'}"]
        if c.running:
            parts.append("running now")
        elif c.next_at is not None:
            parts.append(f"next in {_until(c.next_at)}")
        parts.append(f"{c.runs} runs" + (f", {c.failures} failed" if c.failures else ""))
        if c.last_at is not None:
            parts.append(f"last {ago(c.last_at)}: " + (str(c.last_error) if c.last_error else c.last_summary or ""))
        compaction = Text(", ".join(parts), style="red" if c.last_error else "")
    endpoints = Text(
        f"metrics: {snapshot.metrics_url or 'off'}   flight sql: {snapshot.flight_url or 'off'}", style="dim"
    )
    lines = [first, sync, compaction, endpoints]
    if snapshot.status_error is not None:
        lines.append(Text(f"status unavailable: {snapshot.status_error}", style="red"))
    return Panel(Group(*lines), padding=(0, 1))


COLUMNS = ("table", "seq", "lag", "lag s", "ev/s", "committed", "ms", "synced", "unfolded", "tail", "files")
"""Per table: synced watermark, lag in events and seconds, events/s, last commit (age, duration in ms),
events synced by this process, events not folded into history yet, hot-path tail segments, changelog files."""


def _tables(snapshot: ServiceSnapshot) -> Group:
    table = Table(expand=True, header_style="bold", show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for heading in COLUMNS:
        table.add_column(
            heading,
            justify="left" if heading == "table" else "right",
            no_wrap=True,
            overflow="ellipsis",
            min_width=len(heading),
        )
    status = snapshot.status
    if status is None or not status.tables:
        table.add_row(Text("no mirrored tables yet", style="dim"), *[""] * (len(COLUMNS) - 1))
        return Group(table)
    errors = []
    for name, t in status.tables.items():
        lagging = (t.lag_events or 0) > 0
        table.add_row(
            Text(name, style="red" if t.last_error else ""),
            number(t.synced_seq),
            Text(number(t.lag_events), style="yellow" if lagging else ""),
            number(t.lag_seconds, 1),
            number(snapshot.rates.get(name, 0.0), 1),
            ago(t.last_commit_at),
            number(t.last_commit_seconds * 1000, 1) if t.last_commit_seconds is not None else "-",
            number(t.events_synced),
            number(t.unfolded_events),
            number(t.tail_segments),
            number(t.changelog_files),
        )
        if t.last_error:
            errors.append(Text(f"{name}: {t.last_error}", style="red", overflow="ellipsis", no_wrap=True))
    return Group(table, *errors)


def _log_panel(log: RecentLog, rows: int) -> Panel:
    lines = []
    for line in log.recent(rows):
        text = Text.assemble(
            (line.at.strftime("%H:%M:%S "), "dim"),
            (f"{line.level:<7} ", _LEVEL_STYLES.get(line.level, "dim")),
            line.message,
        )
        text.no_wrap, text.overflow = True, "ellipsis"
        lines.append(text)
    return Panel(
        Group(*lines) if lines else Text("(nothing yet)", style="dim"),
        title="recent log",
        title_align="left",
        padding=(0, 1),
    )


def _footer(snapshot: ServiceSnapshot) -> Text:
    if snapshot.stopping:
        return Text("stopping: final sync...", style="bold yellow")
    return Text("q quit (final sync, then exit)   c compact now", style="dim")


def _until(when: datetime) -> str:
    seconds = max(0, int((when - datetime.now(UTC)).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return when.strftime("%Y-%m-%d %H:%M UTC")


class KeyReader:
    """Reads single key presses from a terminal's stdin in a daemon thread (cbreak mode, restored on exit)."""

    def __init__(self, on_key: Callable[[str], None]) -> None:
        self.on_key = on_key
        self._saved: Any = None
        self._stop = threading.Event()

    def __enter__(self) -> KeyReader:
        if not sys.stdin.isatty():
            return self
        import termios
        import tty

        fd = sys.stdin.fileno()
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        threading.Thread(target=self._read, args=(fd,), name="rhei-serve-keys", daemon=True).start()
        return self

    def _read(self, fd: int) -> None:
        import select

        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                data = os.read(fd, 32)
                if not data:
                    return
                for key in data.decode(errors="ignore"):
                    self.on_key(key)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._saved is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._saved)


def run_dashboard(service: LakeService, log: RecentLog, stop: threading.Event, console: Console) -> None:
    """Show the dashboard until ``stop`` is set (by a key, a signal or the caller)."""

    def key(pressed: str) -> None:
        if pressed in ("q", "Q"):
            stop.set()
        elif pressed in ("c", "C"):
            service.compact_now()

    def screen() -> Group:
        return render(service.snapshot(), service, log, console.size.height)

    with KeyReader(key), Live(screen(), console=console, screen=True, auto_refresh=False) as live:
        while not stop.wait(REFRESH_SECONDS):
            live.update(screen(), refresh=True)
