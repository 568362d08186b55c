"""``simfarm train RECIPE.yaml --out DIR [--set key=value ...]``: run a training recipe.

The config is validated before anything heavy is imported, so a typo fails at once with the
file and the key. Each stage that lasts more than a second gets a progress bar; the run ends
with a summary (wall time, tokens/s, final metrics, where the checkpoint is). Interrupted
runs resume from their last checkpoint when the same command is run again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import TaskID
from rich.table import Table

from simfarm.cli.common import console, err_console, fail, num
from simfarm.cli.progress import progress_bars
from simfarm.errors import SimfarmError

if TYPE_CHECKING:
    from simfarm.training.run import ProgressCallback, RecipeResult

_SHOW_AFTER_S = 1.0
"""A stage gets a visible bar only once it has lasted this long."""


@contextmanager
def stage_progress() -> Iterator[ProgressCallback]:
    """Bars for a run's stages, fed by the library's ``(stage, done, total)`` callback."""
    progress = progress_bars(err_console)
    tasks: dict[str, tuple[TaskID, float]] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = (progress.add_task(stage, total=total, visible=False), time.monotonic())
        task, started = tasks[stage]
        visible = time.monotonic() - started > _SHOW_AFTER_S
        progress.update(task, completed=done, total=total, visible=visible or None)

    with progress:
        yield update


def _quiet_libraries() -> None:
    """Our bars replace the libraries' own (and their per-step log prints)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        import datasets
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ModuleNotFoundError:
        pass
    logging.getLogger("peft").setLevel(logging.ERROR)


def _summary(result: RecipeResult, method: str) -> Table:
    table = Table(title=f"simfarm train: {method}", show_header=False)
    # Long metric names (per-source figures) wrap rather than end in "…", so they stay legible.
    table.add_column(overflow="fold")
    table.add_column()
    table.add_row("wall time", f"{result.wall_time_s:.1f} s")
    table.add_row("tokens/s", num(result.tokens_per_s, 1))
    table.add_row("resumed", "yes" if result.resumed else "no")
    if result.judge_usage is not None:
        usage = result.judge_usage
        table.add_row(
            "judge",
            f"{usage.requests} requests, {usage.cache_hits} cache hits, "
            f"${usage.cost_usd:.4f} this run, ${usage.cost_usd_total:.4f} in all "
            f"({usage.annotations} verdicts)",
        )
    for key, value in sorted(result.final_metrics.items()):
        table.add_row(escape(key), num(value, 4))
    table.add_row("checkpoint", escape(str(result.checkpoint)))
    table.add_row("metrics", escape(str(result.out_dir / "metrics.jsonl")))
    return table


def train(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file (e.g. recipes/sft.yaml).")],
    out: Annotated[Path, typer.Option(help="Run folder; the same folder again resumes the run.")],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a config field, e.g. --set training.max_steps=5 (value parsed as YAML).",
        ),
    ] = None,
) -> None:
    """Run a training recipe (SFT, reward model, DPO, best-of-n, expert iteration, PPO,
    distilled judge)."""
    from simfarm.training.config import load_recipe_config
    from simfarm.training.manifest import config_digest, read_manifest
    from simfarm.training.run import read_result, run_recipe

    try:
        config = load_recipe_config(recipe, set_ or [])
        previous = read_manifest(out)
        if previous is not None and previous.get("config_digest") != config_digest(config):
            raise SimfarmError(
                f"{out}: holds a run of a different config (manifest.json); use a new --out "
                "folder, or the same config and overrides to resume"
            )
    except SimfarmError as error:
        raise fail(error) from None
    already = read_result(out)
    if already is None:
        _quiet_libraries()
    try:
        with stage_progress() as progress:
            result = run_recipe(config, out, progress=progress)
    except SimfarmError as error:
        raise fail(error) from None
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted[/]: run the same command again to resume from the last checkpoint"
        )
        raise typer.Exit(code=130) from None
    if already is not None:
        err_console.print(f"{escape(str(out))} holds a finished run; nothing to do")
    console.print(_summary(result, config.method))
