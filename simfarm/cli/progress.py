"""Rich progress bars for annotation runs: count, cost so far, rate and ETA.

The library only reports progress through a plain callback
(:data:`simfarm.annotation.run.ProgressCallback`, ``(done, total, cost)``); drawing it is the
CLI's job. Updates are throttled (rich refreshes on its own clock), so a 600 request/s run
does not spend its CPU drawing the bar.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from simfarm.annotation.run import ProgressCallback


def _progress(console: Console | None) -> Progress:
    return Progress(
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


@contextmanager
def annotation_progress(
    total: int, label: str, console: Console | None = None
) -> Iterator[ProgressCallback]:
    """One bar for one run of ``total`` items; yields the callback to hand to the run."""
    progress = _progress(console)
    task = progress.add_task(label, total=total, cost=0.0)

    def update(done: int, _total: int, cost: float) -> None:
        progress.update(task, completed=done, cost=cost)

    with progress:
        yield update


@contextmanager
def runs_progress(
    annotator: str, annotators_dirs: list[Path] | None, *, quiet: bool = False
) -> Iterator[ProgressCallback | None]:
    """Bars for a sequence of runs of ``annotator`` fed through one callback (one run per
    model or per sample); ``None`` when ``quiet``.

    A run is recognised by its count starting again: a report of ``done`` no larger than
    the previous one opens a new bar (runs announce themselves with ``done=0``). The bar is
    labelled with the annotator's id, read when the first run starts (so input errors found
    before it are reported first, as without a bar).
    """
    if quiet:
        yield None
        return
    from simfarm.annotation import load_annotator

    progress = _progress(None)
    current: list[TaskID] = []
    last_done = [0]
    label: list[str] = []

    def update(done: int, total: int, cost: float) -> None:
        if not current or done <= last_done[0]:
            if not label:
                label.append(load_annotator(annotator, annotators_dirs).spec.id)
            current[:] = [progress.add_task(label[0], total=total, cost=0.0)]
        last_done[0] = done
        progress.update(current[0], completed=done, total=total, cost=cost)

    with progress:
        yield update
