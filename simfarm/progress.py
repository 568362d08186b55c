"""A rich progress bar for annotation runs: count, cost so far, rate and ETA.

Updates are throttled (rich refreshes on its own clock), so a 600 request/s run does not
spend its CPU drawing the bar.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from simfarm.annotation.run import ProgressCallback


@contextmanager
def annotation_progress(
    total: int, label: str, console: Console | None = None
) -> Iterator[ProgressCallback]:
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("${task.fields[cost]:.4f}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        refresh_per_second=4,
        transient=False,
    )
    task = progress.add_task(label, total=total, cost=0.0)

    def update(done: int, _total: int, cost: float) -> None:
        progress.update(task, completed=done, cost=cost)

    with progress:
        yield update
