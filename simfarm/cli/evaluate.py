"""``simfarm evaluate``: win rates and LC win rates against a reference, as a leaderboard.

Heavy imports (pandas, scikit-learn, matplotlib, the annotation engine) happen inside the
command, so ``simfarm --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from simfarm.cli.common import (
    AnnotatorsDirs,
    BadRecordOption,
    console,
    err_console,
    fail,
    num,
    print_issues,
)
from simfarm.errors import SimfarmError


def evaluate(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            help="More files for whichever of --annotations / --model-outputs is given "
            "(so `--annotations A.json B.json` reads both).",
            show_default=False,
        ),
    ] = None,
    annotations: Annotated[
        list[Path] | None,
        typer.Option(
            "--annotations",
            help="alpaca_eval annotations.json or simfarm annotation JSONL (one per model).",
        ),
    ] = None,
    model_outputs: Annotated[
        list[str] | None,
        typer.Option(
            "--model-outputs",
            help="Model outputs to judge: alpaca_eval JSON, JSONL, Parquet, a `datasets` "
            "folder, or hf:<repo>[:<config>][@<split>].",
        ),
    ] = None,
    reference_outputs: Annotated[
        str | None, typer.Option(help="Reference outputs (same formats), paired by instruction.")
    ] = None,
    annotator: Annotated[
        str | None, typer.Option(help="Persona or pool id judging model vs reference outputs.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for leaderboard.csv/.json/.md/.png.")] = Path(
        "simfarm-leaderboard"
    ),
    difficulty: Annotated[
        Path | None,
        typer.Option(
            help="Reuse a stored instruction_difficulty.csv instead of estimating it from "
            "these annotations."
        ),
    ] = None,
    difficulty_method: Annotated[
        str, typer.Option(help="How to estimate instruction difficulty: joint_glm or logit_mean.")
    ] = "joint_glm",
    no_lc: Annotated[
        bool, typer.Option("--no-lc", help="Skip the length-controlled win rate.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option(help="Judge only the first N pairs per model.")
    ] = None,
    both_orders: Annotated[
        bool, typer.Option("--both-orders", help="Judge each pair in both orders.")
    ] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the cache.")] = False,
    annotators_dir: AnnotatorsDirs = None,
    on_bad_record: BadRecordOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar, no table.")] = False,
) -> None:
    """Win rates and LC win rates against a reference, as an alpaca_eval leaderboard.

    From annotation files (--annotations A.json B.json ...), or by judging model outputs
    against reference outputs with an annotator.
    """
    from simfarm.cli.progress import runs_progress
    from simfarm.evaluation.difficulty import DIFFICULTY_METHODS, load_difficulty
    from simfarm.evaluation.run_evaluation import (
        from_annotation_files,
        from_model_outputs,
        write_evaluation,
    )
    from simfarm.record_checks import check_policy

    try:
        policy = check_policy(on_bad_record or "coerce")
        if difficulty_method not in DIFFICULTY_METHODS:
            raise SimfarmError(f"--difficulty-method must be one of {DIFFICULTY_METHODS}")
        extra = list(files or [])
        if annotations and model_outputs:
            raise SimfarmError("give --annotations or --model-outputs, not both")
        if annotations:
            inputs = from_annotation_files([*annotations, *extra], policy)
            inputs.judge_agreement = _named_judges_agreement(inputs.annotations, annotators_dir)
        elif model_outputs:
            if reference_outputs is None or annotator is None:
                raise SimfarmError("--model-outputs needs --reference-outputs and --annotator")
            with runs_progress(annotator, annotators_dir, quiet=quiet) as progress:
                inputs = from_model_outputs(
                    [*model_outputs, *(str(f) for f in extra)],
                    reference_outputs,
                    annotator,
                    policy=policy,
                    limit=limit,
                    both_orders=both_orders,
                    use_cache=not no_cache,
                    annotators_dirs=annotators_dir,
                    progress=progress,
                )
        else:
            raise SimfarmError(
                "give --annotations A.json [B.json ...], or --model-outputs with "
                "--reference-outputs and --annotator"
            )
        print_issues(inputs.issues, policy, "the inputs")
        for note in inputs.notes:
            err_console.print(f"[yellow]note:[/] {note}", highlight=False)
        leaderboard, paths = write_evaluation(
            inputs,
            out,
            length_controlled=not no_lc,
            difficulty=load_difficulty(difficulty) if difficulty else None,
            difficulty_method=difficulty_method,  # type: ignore[arg-type]
            save_annotations=bool(model_outputs),
        )
    except (SimfarmError, OSError) as error:
        raise fail(error) from None
    if quiet:
        return
    table = Table(title=f"Leaderboard (reference: {leaderboard.reference})")
    for column in (
        "model",
        "LC win rate",
        "win rate",
        "SE",
        "wins",
        "losses",
        "draws",
        "n",
        "avg length",
    ):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in leaderboard.rows:
        table.add_row(
            row.generator_2,
            num(row.length_controlled_winrate),
            num(row.win_rate),
            num(row.standard_error),
            str(row.n_wins),
            str(row.n_wins_base),
            str(row.n_draws),
            str(row.n_total),
            str(row.avg_length),
        )
    console.print(table)
    for note in leaderboard.judge_agreement:
        console.print(f"[bold yellow]judge quality:[/] {note}", highlight=False)
    console.print(f"written: {', '.join(str(p) for p in paths.values() if p.parent == out)}")


def _named_judges_agreement(
    annotations: dict[str, list[Any]], annotators_dirs: list[Path] | None
) -> list[str]:
    """Measured human agreement of the judges that annotation files name, for those that are
    personas on this search path (``--annotators-dir`` first); others have none to show."""
    from simfarm.annotation.loader import load_annotator, measured_agreement_note

    notes = []
    for judge in sorted({a.annotator for anns in annotations.values() for a in anns}):
        try:
            note = measured_agreement_note(load_annotator(judge, annotators_dirs))
        except SimfarmError:
            continue
        if note:
            notes.append(note)
    return notes
