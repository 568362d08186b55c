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
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from simfarm.annotation.run import ProgressCallback


def progress_bars(
    console: Console, *, with_cost: bool = False, transient: bool = False
) -> Progress:
    """Every command's bars look alike: description, bar, done/total, (cost so far),
    elapsed, ETA; redrawn 4 times a second at most."""
    columns: list[ProgressColumn] = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
    ]
    if with_cost:
        columns.append(TextColumn("${task.fields[cost]:.4f}"))
    columns += [TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    return Progress(*columns, console=console, refresh_per_second=4, transient=transient)


def _progress(console: Console | None) -> Progress:
    return progress_bars(console or Console(stderr=True), with_cost=True)


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
