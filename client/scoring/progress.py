"""The progress bar of a scoring run: rich on a terminal, nothing anywhere else."""

from __future__ import annotations

import os
import sys


def _maybe_terminal(stream) -> bool:
    """False when rich would certainly not draw on `stream`: not a TTY, and none of the
    variables that make rich treat a pipe as a terminal is set."""
    if any(name in os.environ for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "FORCE_TERMINAL")):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


class ProgressBar:
    """A rich progress bar on stderr, or nothing when stderr is not a terminal (logs, CI, pipes)."""

    def __init__(self, total: int) -> None:
        self._progress = None
        if total == 0 or not _maybe_terminal(sys.stderr):
            return  # without importing rich, which costs a noticeable part of a short run
        from rich.console import Console

        console = Console(stderr=True)
        if not console.is_terminal:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._failed = 0
        self._progress = Progress(
            TextColumn("scoring"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("scoring", total=total, failed=0)
        self._progress.start()

    def advance(self, count: int, failed: int = 0) -> None:
        """`count` more files done, `failed` of them without a prediction."""
        if self._progress is None:
            return
        self._failed += failed
        self._progress.update(self._task, advance=count, failed=self._failed)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
