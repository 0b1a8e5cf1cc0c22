"""Ingest progress: bars with rate and ETA on a terminal (``rich``), a plain line every few
seconds otherwise (logs, CI), nothing with ``--json``.

It counts chunks as they are embedded (or found in the embedding cache) and written, not
documents per batch: a single 50 MB file moves the bar as its chunks are embedded.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from rag_pgstore.cli import output
from rag_pgstore.pipeline import IngestReport

PLAIN_EVERY = 5.0  # seconds between two plain progress lines


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "", style="progress.data.speed")


def _bar_columns(label: str) -> tuple[ProgressColumn, ...]:
    """A bar with done/total, rate, elapsed time and ETA, after ``label``."""
    return (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )


class IngestProgress:
    """``with IngestProgress(files, mode) as show: pipeline.ingest(..., progress=show)``."""

    def __init__(self, files: int, *, quiet: bool) -> None:
        self.files = files
        self.quiet = quiet
        self.terminal = not quiet and sys.stderr.isatty()
        self.report = IngestReport()
        self._bars: Progress | None = None
        self._tasks: tuple[TaskID, TaskID] | None = None
        self._last_line = time.monotonic()  # the first plain line after PLAIN_EVERY

    def __enter__(self) -> IngestProgress:
        if self.terminal:
            self._bars = Progress(
                *_bar_columns("{task.description:>8}"),
                console=output.console("stderr"),
                transient=True,
            )
            self._bars.start()
            self._tasks = (
                self._bars.add_task("files", total=self.files),
                self._bars.add_task("chunks", total=None),
            )
        return self

    def __call__(self, report: IngestReport) -> None:
        self.report = report
        # Chunks with their vector: embedded, from the cache, or written (a text repeated in a
        # batch is embedded once, so only the write count reaches the total).
        ready = max(report.embedded + report.from_cache, report.chunks_written)
        if self._bars is not None and self._tasks is not None:
            files, chunks = self._tasks
            self._bars.update(files, completed=report.documents)
            self._bars.update(
                chunks, completed=ready, total=max(report.chunks_to_write, ready) or None
            )
        elif not self.quiet and time.monotonic() - self._last_line >= PLAIN_EVERY:
            self._last_line = time.monotonic()
            output.note(
                f"ingest: {report.documents}/{self.files} files, {ready}/"
                f"{report.chunks_to_write} chunks embedded, {report.chunks_written} written"
            )

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bars is not None:
            self._bars.stop()


T = TypeVar("T")
RowsSeen = Callable[[int], None]


def counting(
    what: str, work: Callable[[RowsSeen | None], T], *, quiet: bool, total: int | None = None
) -> T:
    """Run ``work(progress)``, where ``progress(rows)`` reports rows done so far: on a
    terminal a bar with rate and ETA when the ``total`` is known (a live count with its rate
    when not), a plain line every few seconds otherwise (logs, CI), nothing when ``quiet``
    (``--json``)."""
    if quiet:
        return work(None)
    if not sys.stderr.isatty():
        last = [time.monotonic()]
        started = time.monotonic()

        def plain(rows: int) -> None:
            if time.monotonic() - last[0] >= PLAIN_EVERY:
                last[0] = time.monotonic()
                output.note(f"{what}: {_plain_line(rows, total, last[0] - started)}")

        return work(plain)
    if total is None:
        columns: tuple[str | ProgressColumn, ...] = (
            SpinnerColumn(),
            TextColumn(f"{what} {{task.completed:,.0f}} rows"),
            RateColumn(),
            TimeElapsedColumn(),
        )
    else:
        columns = _bar_columns(what)
    bars = Progress(*columns, console=output.console("stderr"), transient=True)
    with bars:
        task = bars.add_task(what, total=total)
        return work(lambda rows: bars.update(task, completed=rows))


def _plain_line(rows: int, total: int | None, elapsed: float) -> str:
    """``1,200/5,000 rows, 240 rows/s, eta 16 s`` (no total: ``1,200 rows, 240 rows/s``)."""
    rate = rows / elapsed if elapsed > 0 else 0.0
    if total is None:
        return f"{rows:,} rows, {rate:,.0f} rows/s"
    eta = f", eta {max(total - rows, 0) / rate:,.0f} s" if rate > 0 else ""
    return f"{rows:,}/{total:,} rows, {rate:,.0f} rows/s{eta}"
