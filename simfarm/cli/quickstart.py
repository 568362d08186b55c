"""``simfarm quickstart``: the main job, offline, on a bundled small experiment.

Runs the AlpacaFarm loop of ``recipes/experiments/quickstart.yaml`` (``simfarm run`` on it):
the embedded Gemma 3 270M with LoRA is fine-tuned (SFT), its sample pairs are judged by a
simulated annotator with label noise, then best-of-n, DPO and PPO learn from that feedback,
and every method is judged against the SFT baseline on held-out instructions. The judge is
the offline persona with the best measured human agreement (today ``longest``), printed
beside the board. No GPU and no network; a few minutes on two CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from simfarm.cli.common import console, err_console, fail
from simfarm.errors import SimfarmError
from simfarm.paths import bundled_data_dir


def quickstart_experiment() -> Path:
    """The bundled quickstart experiment file."""
    return bundled_data_dir("recipes") / "experiments" / "quickstart.yaml"


def quickstart(
    out: Annotated[
        Path, typer.Option(help="Run folder (run again with the same folder to resume).")
    ] = Path("simfarm-quickstart"),
    persona: Annotated[
        str | None,
        typer.Option(
            help="The judge for feedback and evaluation (any persona or pool; default: the "
            "offline persona with the best measured human agreement)."
        ),
    ] = None,
    outputs: Annotated[
        Path | None,
        typer.Option(
            help="Reference outputs (alpaca_eval JSON covering the eval instructions) to judge "
            "every method against; default: the SFT baseline's."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Run the main job offline: SFT, best-of-n, DPO and PPO on simulated feedback, compared.

    The bundled experiment recipes/experiments/quickstart.yaml, with the offline judge of
    best measured human agreement; a few minutes on two CPU cores.
    """
    from simfarm.cli.run import run_loaded
    from simfarm.experiment import best_offline_judge, load_experiment_config

    started = time.perf_counter()
    source = quickstart_experiment()
    try:
        config = load_experiment_config(source)
        if persona is None:
            choice = best_offline_judge()
            judge = choice.persona
            console.print(f"[bold]judge:[/] {choice.note()}", highlight=False)
        else:
            from simfarm.annotation import load_annotator

            judge = load_annotator(persona).spec.id if not persona.endswith(".yaml") else persona
            console.print(f"[bold]judge:[/] `{judge}` (chosen with --persona)", highlight=False)
        config.feedback.annotator = judge
        config.evaluation.annotator = judge
        if outputs is not None:
            if not outputs.is_file():
                raise SimfarmError(f"--outputs: file not found: {outputs}")
            config.evaluation.reference.outputs = outputs.resolve()
            config.evaluation.reference.method = None
        run_loaded(config, source, out, quiet=quiet, title="simfarm quickstart")
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted[/]: finished stages and paid-for answers are kept; "
            "run the same command again to resume."
        )
        raise typer.Exit(code=130) from None
    except SimfarmError as error:
        raise fail(error) from None
    console.print(f"quickstart finished in {time.perf_counter() - started:.0f}s", highlight=False)
