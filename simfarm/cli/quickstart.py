"""``simfarm quickstart``: the main job, offline, on the embedded default model.

Judges two small systems (``concise`` and ``detailed``) against a ``reference`` on the
bundled twelve-instruction set (``evals/quickstart/outputs.json``) with the embedded Gemma
judge, then writes and prints the leaderboard beside the judge's measured human agreement and
the ``longest`` baseline's leaderboard. The point is the pipeline (persona -> backend ->
cache -> evaluator), not the verdicts: the embedded judge is near chance, and says so.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from simfarm.cli.common import console, err_console, fail
from simfarm.errors import SimfarmError
from simfarm.paths import bundled_data_dir


def quickstart(
    out: Annotated[Path, typer.Option(help="Folder for annotations and leaderboards.")] = Path(
        "simfarm-quickstart"
    ),
    persona: Annotated[
        str, typer.Option(help="The judge (any persona; default: the embedded model).")
    ] = "embedded_gemma",
    outputs: Annotated[
        Path | None,
        typer.Option(help="Outputs of several generators incl. 'reference' (alpaca_eval JSON)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Run the main job offline: simulated pairwise feedback and a leaderboard."""
    from simfarm.annotation import annotate, load_annotator
    from simfarm.cli.progress import annotation_progress
    from simfarm.datafiles import load_model_outputs, pair_outputs, write_records
    from simfarm.evaluation.leaderboard import build_leaderboard, write_leaderboard
    from simfarm.evaluation.plots import plot_leaderboard

    source = outputs or bundled_data_dir("evals") / "quickstart" / "outputs.json"
    try:
        by_generator = defaultdict(list)
        for record in load_model_outputs(source, "error").outputs:
            by_generator[record.generator].append(record)
        if "reference" not in by_generator or len(by_generator) < 2:
            raise SimfarmError(f"{source}: needs a 'reference' generator and at least one other")
        reference = by_generator.pop("reference")
        items = []
        for records in by_generator.values():
            items += pair_outputs(records, reference)[0]
        boards = {}
        for judge in (persona, "longest"):
            loaded = load_annotator(judge)
            sink = Console(quiet=True) if quiet else err_console
            with annotation_progress(len(items), loaded.spec.id, sink) as progress:
                result = annotate(items, loaded, progress=progress)
            write_records(out / judge / "annotations.jsonl", result.annotations)
            by_model = defaultdict(list)
            for annotation in result.annotations:
                by_model[annotation.generator_2].append(annotation)
            board, _ = build_leaderboard(by_model, length_controlled=False)
            write_leaderboard(board, out / judge)
            plot_leaderboard(board, out / judge / "leaderboard.png")
            boards[judge] = (board, result)
    except SimfarmError as error:
        raise fail(error) from None
    _print(boards, persona, out)


def _print(boards: dict, persona: str, out: Path) -> None:
    judged, baseline = boards[persona], boards["longest"]
    table = Table(title=f"simfarm quickstart: win rate vs `{judged[0].reference}`")
    table.add_column("model")
    table.add_column(f"{persona} win rate", justify="right")
    table.add_column("SE", justify="right")
    table.add_column("longest win rate", justify="right")
    baseline_rows = {row.generator_2: row for row in baseline[0].rows}
    for row in judged[0].rows:
        base = baseline_rows[row.generator_2]
        table.add_row(
            row.generator_2,
            f"{row.win_rate:.1f}",
            f"{row.standard_error:.1f}",
            f"{base.win_rate:.1f}",
        )
    console.print(table)
    ours = judged[1].annotations
    theirs = baseline[1].annotations
    decided = [
        (a.preference, b.preference)
        for a, b in zip(ours, theirs, strict=True)
        if a.preference is not None and b.preference is not None
    ]
    same = sum((a > 1.5) == (b > 1.5) and (a == 1.5) == (b == 1.5) for a, b in decided)
    summary = judged[1].summary
    console.print(
        f"{persona}: {summary.n_annotated}/{summary.n_items} pairs judged, "
        f"{summary.requests_sent} model requests, {summary.cache_hits} from cache, "
        f"{summary.elapsed_s:.1f}s; agrees with `longest` on {same}/{len(decided)} pairs."
    )
    for note in judged[0].judge_agreement or ["no measured human agreement for this judge"]:
        console.print(f"[bold yellow]judge quality:[/] {note}", highlight=False)
    console.print(f"written under {out}/ (annotations, leaderboard.csv/.json/.md/.png per judge)")
