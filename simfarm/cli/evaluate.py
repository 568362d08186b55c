"""``simfarm evaluate``: win rates and LC win rates against a reference, as a leaderboard.

Heavy imports (pandas, scikit-learn, matplotlib, the annotation engine) happen inside the
command, so ``simfarm --help`` stays fast.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from simfarm.cli.common import (
    AnnotatorsDirs,
    BadRecordOption,
    console,
    err_console,
    exit_if_failed,
    fail,
    interrupted,
    judged_summary,
    num,
    print_issues,
)
from simfarm.cli.executor_options import (
    ExecutorOption,
    RayActorsOption,
    RayAddressOption,
    RayInFlightOption,
    RayNumCpusOption,
    RayNumGpusOption,
    RayOptions,
    RequestsPerMinuteOption,
    TokensPerMinuteOption,
    executor_factory_for,
)
from simfarm.cli.overrides import BaseUrlOverride, ModelOverride, annotate_with_overrides
from simfarm.errors import SimfarmError

if TYPE_CHECKING:
    from simfarm.evaluation.difficulty import InstructionDifficulty


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
        str,
        typer.Option(
            help="How to estimate instruction difficulty offline: notebook_joint (alpaca_eval's "
            "joint fit, L1 with C chosen by cross-validation), notebook_joint_l2 (the same at a "
            "fixed L2 C=1), joint_glm or logit_mean."
        ),
    ] = "notebook_joint",
    published_difficulty: Annotated[
        bool,
        typer.Option(
            "--published-difficulty",
            help="Use alpaca_eval's published difficulty and gamed-baseline annotations from "
            "the Hugging Face hub (cached): alpaca_eval's LC exactly, for AlpacaEval "
            "instructions judged against gpt4_1106_preview.",
        ),
    ] = False,
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
    model: ModelOverride = None,
    base_url: BaseUrlOverride = None,
    on_bad_record: BadRecordOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar, no table.")] = False,
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
    ray_actors: RayActorsOption = None,
    ray_in_flight: RayInFlightOption = None,
    ray_num_cpus: RayNumCpusOption = None,
    ray_num_gpus: RayNumGpusOption = None,
    requests_per_minute: RequestsPerMinuteOption = None,
    tokens_per_minute: TokensPerMinuteOption = None,
) -> None:
    """Win rates and LC win rates against a reference, as an alpaca_eval leaderboard.

    From annotation files (--annotations A.json B.json ...), or by judging model outputs
    against reference outputs with an annotator.
    """
    from simfarm.annotation import annotate_pairs
    from simfarm.cli.progress import runs_progress
    from simfarm.evaluation.difficulty import DIFFICULTY_METHODS
    from simfarm.evaluation.run_evaluation import (
        failed_annotations,
        from_annotation_files,
        from_model_outputs,
        write_evaluation,
    )
    from simfarm.provenance import current_provenance, model_checksums, persona_digests
    from simfarm.record_checks import check_policy

    try:
        executor_options = RayOptions(
            executor,
            address=ray_address,
            actors=ray_actors,
            in_flight=ray_in_flight,
            num_cpus=ray_num_cpus,
            num_gpus=ray_num_gpus,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
        )
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
            with (
                executor_factory_for(executor_options) as (factory, _),
                runs_progress(annotator, annotators_dir, quiet=quiet) as progress,
            ):
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
                    annotate=annotate_with_overrides(model, base_url, executor_factory=factory)
                    or functools.partial(annotate_pairs, executor_factory=factory),
                )
        else:
            raise SimfarmError(
                "give --annotations A.json [B.json ...], or --model-outputs with "
                "--reference-outputs and --annotator"
            )
        print_issues(inputs.issues, policy, "the inputs")
        for note in inputs.notes:
            err_console.print(f"[yellow]note:[/] {note}", highlight=False)
        # Judged here and failed: a rerun resumes them (annotation files are what they are).
        failed = failed_annotations(inputs) if model_outputs else []
        n_judged = sum(len(a) for a in inputs.annotations.values())
        if failed and len(failed) == n_judged:  # nothing judged: no leaderboard to write
            exit_if_failed([a.failure for a in failed], n_judged)
        judges = {a.annotator for anns in inputs.annotations.values() for a in anns}
        leaderboard, paths = write_evaluation(
            inputs,
            out,
            length_controlled=not no_lc,
            difficulty=_chosen_difficulty(difficulty, published_difficulty),
            difficulty_method=difficulty_method,  # type: ignore[arg-type]
            save_annotations=bool(model_outputs),
            provenance=current_provenance(
                persona_digests(judges, annotators_dir),
                models=model_checksums(judges, annotators_dir),
            ),
        )
    except KeyboardInterrupt:
        raise interrupted() from None
    except (SimfarmError, OSError) as error:
        raise fail(error) from None
    if not quiet:
        _print_leaderboard(leaderboard, paths, out)
        if model_outputs:
            judged = [a for anns in inputs.annotations.values() for a in anns]
            console.print(judged_summary(judged), highlight=False)
    exit_if_failed([a.failure for a in failed], n_judged)


def _print_leaderboard(leaderboard: Any, paths: dict[str, Path], out: Path) -> None:
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
    from simfarm.evaluation.leaderboard import judge_lines

    for line in judge_lines(leaderboard):
        style = "bold red" if line.startswith("WARNING") else "yellow"
        console.print(f"[{style}]judge check:[/] {line}", highlight=False)
    for note in leaderboard.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
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


def _chosen_difficulty(stored: Path | None, published: bool) -> InstructionDifficulty | None:
    """A stored difficulty file, alpaca_eval's published one, or None (estimate offline)."""
    from simfarm.evaluation.difficulty import load_difficulty
    from simfarm.evaluation.published_glm import published_difficulty

    if stored and published:
        raise SimfarmError("give --difficulty or --published-difficulty, not both")
    if published:
        return published_difficulty()
    return load_difficulty(stored) if stored else None
