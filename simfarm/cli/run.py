"""``simfarm run <experiment.yaml> --out DIR``: a whole method comparison, resumable.

Draws one progress bar per stage that reports progress, prints the leaderboard beside the
evaluation judge's measured human agreement, the stage timings and where the report is. Run
the same command again after a crash (or Ctrl-C): finished stages are skipped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import TaskID
from rich.table import Table

from simfarm.cli.common import console, err_console, fail
from simfarm.cli.progress import progress_bars
from simfarm.errors import SimfarmError

if TYPE_CHECKING:
    from simfarm.experiment import ExperimentConfig, ExperimentResult, StageRecord


class RichStageProgress:
    """The CLI's :class:`~simfarm.experiment.ExperimentProgress`: a bar per running stage,
    a line per finished or reused one."""

    def __init__(self, sink: Console) -> None:
        self.sink = sink
        self.progress = progress_bars(sink, transient=True)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichStageProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def stage_started(self, name: str) -> None:
        self.tasks[name] = self.progress.add_task(name, total=None)

    def stage_progress(self, name: str, description: str, done: int, total: int) -> None:
        task = self.tasks.get(name)
        if task is None:
            return
        self.progress.update(
            task, description=f"{name}: {description}", completed=done, total=total or None
        )

    def stage_finished(self, record: StageRecord) -> None:
        task = self.tasks.pop(record.name, None)
        if task is not None:
            self.progress.remove_task(task)
        if record.skipped:
            self.progress.console.print(f"[dim]  {record.name}: done earlier, reused[/]")
        else:
            self.progress.console.print(
                f"[green]  {record.name}[/]: {record.wall_time_s:.1f}s", highlight=False
            )


def run_loaded(
    config: ExperimentConfig, config_path: Path, out: Path, *, quiet: bool, title: str
) -> ExperimentResult:
    """Run a validated experiment with progress bars, then print the board and timings.
    Shared by ``simfarm run`` and ``simfarm quickstart``."""
    from simfarm.cli.train import _quiet_libraries
    from simfarm.experiment import run_experiment

    _quiet_libraries()  # our bars replace the libraries' own
    started = time.perf_counter()
    sink = Console(stderr=True, quiet=quiet)
    with RichStageProgress(sink) as progress:
        result = run_experiment(config, out, progress=progress, config_source=config_path)
    print_result(result, title, time.perf_counter() - started)
    return result


def print_result(result: ExperimentResult, title: str, wall_s: float) -> None:
    import json

    board = json.loads((result.out_dir / "evaluation" / "leaderboard.json").read_text())
    table = Table(title=f"{title}: win rate vs `{board['reference']}`")
    for column in ("method", "win rate %", "SE", "LC win rate %", "LC SE", "n"):
        table.add_column(column, justify="left" if column == "method" else "right")

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    for row in board["rows"]:
        table.add_row(
            row["generator_2"],
            num(row["win_rate"]),
            num(row["standard_error"]),
            num(row["length_controlled_winrate"]),
            num(row["lc_standard_error"]),
            str(row["n_total"]),
        )
    console.print(table)
    for note in board.get("judge_agreement") or ["the judge has no measured human agreement"]:
        console.print(f"[bold yellow]judge quality:[/] {note}", highlight=False)
    _print_judge_checks(board)
    timings = Table(title="stage timings", show_header=True)
    for column in ("stage", "seconds", "this run", "judge requests", "tokens", "$"):
        timings.add_column(column, justify="left" if column in ("stage", "this run") else "right")
    for record in result.stages:
        timings.add_row(
            record.name,
            f"{record.wall_time_s:.1f}",
            "reused" if record.skipped else "ran",
            str(record.cost.requests),
            str(record.cost.tokens),
            f"{record.cost.cost_usd:.4f}",
        )
    console.print(timings)
    console.print(
        f"wall time {wall_s:.1f}s; report: {result.report_path}\n"
        f"leaderboard: {result.leaderboard_path} (+ .md, .json); manifest: {result.manifest_path}",
        highlight=False,
        soft_wrap=True,
    )


def _print_judge_checks(board: dict[str, Any]) -> None:
    """Position consistency, degenerate-judge warnings and LC notes, as `evaluate` shows."""
    from simfarm.evaluation.leaderboard import Leaderboard, judge_lines

    checked = Leaderboard.model_validate(
        {"reference": board["reference"], "rows": [], "judge_checks": board.get("judge_checks", [])}
    )
    for line in judge_lines(checked):
        console.print(f"[bold yellow]judge check:[/] {line}", highlight=False)
    for note in board.get("notes") or []:
        console.print(f"[dim]note:[/] {note}", highlight=False)


def run(
    experiment: Annotated[Path, typer.Argument(help="The experiment YAML file.")],
    out: Annotated[Path, typer.Option(help="Run folder (rerun with the same one to resume).")],
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Run a method comparison under simulated feedback: train, generate, judge, report."""
    from simfarm.experiment import load_experiment_config

    try:
        config = load_experiment_config(experiment)
        run_loaded(config, experiment, out, quiet=quiet, title=f"simfarm run {experiment.name}")
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted[/]: finished stages and paid-for answers are kept; "
            "run the same command again to resume."
        )
        raise typer.Exit(code=130) from None
    except SimfarmError as error:
        raise fail(error) from None
