"""The ``evaluate``, ``validate`` and ``correlate`` commands.

Mounted on the main CLI with one line, ``simfarm.cli_evaluation.register(app)``; ``app``
here is a stand-alone typer app with the same three commands (handy in tests). Heavy
imports (pandas, scikit-learn, matplotlib, the annotation engine) happen inside each
command, so ``simfarm --help`` stays fast.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from simfarm.cli_common import AnnotatorsDirs, console, err_console, fail
from simfarm.errors import SimfarmError

BadRecordOption = Annotated[
    str | None,
    typer.Option(
        help="Bad input records: 'coerce' (repair what can be, skip the rest), 'skip' or "
        "'error'. Every bad record is reported with file, record index and field.",
    ),
]


def _print_issues(issues: list[Any], policy: Any, what: str) -> None:
    from simfarm.record_checks import print_record_issues, raise_if_error

    raise_if_error(issues, policy, what)
    print_record_issues(issues, err_console)


def _num(value: float | int | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


# --- evaluate ----------------------------------------------------------------------------


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
        elif model_outputs:
            if reference_outputs is None or annotator is None:
                raise SimfarmError("--model-outputs needs --reference-outputs and --annotator")
            inputs = from_model_outputs(
                [*model_outputs, *(str(f) for f in extra)],
                reference_outputs,
                annotator,
                policy=policy,
                limit=limit,
                both_orders=both_orders,
                use_cache=not no_cache,
                annotators_dirs=annotators_dir,
                show_progress=not quiet,
            )
        else:
            raise SimfarmError(
                "give --annotations A.json [B.json ...], or --model-outputs with "
                "--reference-outputs and --annotator"
            )
        _print_issues(inputs.issues, policy, "the inputs")
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
            _num(row.length_controlled_winrate),
            _num(row.win_rate),
            _num(row.standard_error),
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


# --- validate ----------------------------------------------------------------------------


def validate(
    annotator: Annotated[
        str | None, typer.Option(help="Persona or pool id to validate (it judges every pair).")
    ] = None,
    set_name: Annotated[
        str,
        typer.Option(
            "--set",
            help="Human-labelled set: pandalm, llmbar, hhh, topical_chat, ... "
            "(a config name in evals/ or a path to one).",
        ),
    ] = "pandalm",
    subset: Annotated[
        list[str] | None, typer.Option(help="Only these subsets (repeatable).")
    ] = None,
    annotations: Annotated[
        list[Path] | None,
        typer.Option(
            "--annotations",
            help="Validate judgements made earlier (simfarm JSONL / alpaca_eval JSON) "
            "instead of running --annotator; matched to the pairs by content.",
        ),
    ] = None,
    ratings: Annotated[
        Path | None,
        typer.Option(help="A rating annotator's scores (item_id, score) for a Likert set."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for report.md and report.json.")] = None,
    limit: Annotated[
        int | None, typer.Option(help="First N pairs per subset (contexts for Likert sets).")
    ] = None,
    single_order: Annotated[
        bool,
        typer.Option("--single-order", help="Judge each pair once (no position-consistency)."),
    ] = False,
    samples: Annotated[
        int, typer.Option(help="Judge each pair this many times (for the variance).")
    ] = 1,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Data root (default: $SIMFARM_DATA_DIR, else ../shared/data)."),
    ] = None,
    evals_dir: Annotated[
        list[Path] | None, typer.Option(help="Extra folder of eval configs.")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the cache.")] = False,
    annotators_dir: AnnotatorsDirs = None,
    on_bad_record: BadRecordOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Agreement of an annotator with human labels, per subset.

    Accuracy (with and without ties), human leave-one-out ceiling, Cohen's kappa, position
    consistency, P(prefer longer), bias/variance, $/1000 and s/1000; Likert correlations.
    """
    from simfarm.evaluation.human_sets import find_human_set, load_human_set
    from simfarm.evaluation.io import load_annotation_file, load_rating_scores
    from simfarm.evaluation.run_validation import (
        align_annotations,
        build_report,
        pairs_of,
        run_annotator,
        write_report,
    )
    from simfarm.record_checks import check_policy

    try:
        if (annotator is None) == (not annotations):
            raise SimfarmError("give exactly one of --annotator and --annotations")
        config = find_human_set(set_name, evals_dir)
        policy = check_policy(on_bad_record) if on_bad_record else None
        human_set = load_human_set(
            config, data_root=data_dir, subsets=subset, limit=limit, policy=policy, warn=False
        )
        _print_issues(human_set.issues, policy or config.on_bad_record, config.name)
        pairs = pairs_of(human_set)
        notes: list[str] = []
        if annotator is not None:
            samples_ = run_annotator(
                pairs,
                annotator,
                both_orders=not single_order,
                samples=samples,
                use_cache=not no_cache,
                annotators_dirs=annotators_dir,
                show_progress=not quiet,
            )
            label = annotator
        else:
            files = [
                load_annotation_file(p, policy or "coerce", warn=False) for p in annotations or []
            ]
            _print_issues(
                [i for f in files for i in f.issues], policy or "coerce", "the annotations"
            )
            samples_, notes = align_annotations(pairs, files)
            label = ", ".join(sorted({a.annotator for s in samples_ for a in s} - {"missing"}))
        rating_scores = None
        if ratings is not None:
            rating_scores, rating_issues = load_rating_scores(ratings, policy or "coerce")
            _print_issues(rating_issues, policy or "coerce", str(ratings))
        report = build_report(
            human_set,
            pairs,
            samples_,
            annotator=label,
            both_orders=not single_order and annotator is not None,
            ratings=rating_scores,
            notes=notes,
        )
        paths = write_report(report, out) if out is not None else {}
    except (SimfarmError, OSError) as error:
        raise fail(error) from None
    _print_validation(report)
    if paths:
        console.print(f"written: {paths['markdown']}, {paths['json']}")


def _print_validation(report: Any) -> None:
    columns = {"overall": report.overall}
    if len(report.groups) > 1:
        columns.update(report.groups)
    elif len(report.subsets) > 1:
        columns.update(report.subsets)
    table = Table(title=f"{report.annotator} on {report.set} (%, except kappa, $ and s)")
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    rows = [
        ("accuracy, ties included", "accuracy_with_ties", 1),
        ("accuracy, ties excluded", "accuracy_without_ties", 1),
        ("human leave-one-out ceiling", "human_loo_ceiling", 1),
        ("Cohen's kappa", "cohen_kappa", 3),
        ("position consistency", "position_consistency", 1),
        ("P(prefer longer)", "p_prefer_longer", 1),
        ("bias", "bias", 1),
        ("variance", "variance", 1),
        ("$ / 1000", "price_per_1000", 3),
        ("s / 1000", "time_per_1000", 3),
        ("pairs", "n_items", 0),
        ("failed", "n_failed", 0),
    ]
    for label, field, digits in rows:
        table.add_row(label, *(_num(getattr(m, field), digits) for m in columns.values()))
    console.print(table)
    if report.systems is not None:
        s = report.systems
        console.print(
            f"systems: Spearman {_num(s.spearman, 3)}, Kendall {_num(s.kendall, 3)} between "
            "human and annotator win rates"
        )
    if report.rating is not None:
        rating = Table(title=f"Likert correlation ({report.rating.scores_from})")
        for column in ("aspect", "Spearman", "Kendall", "within context"):
            rating.add_column(column, justify="left" if column == "aspect" else "right")
        for a in report.rating.aspects:
            within = _num(a.spearman_within_context, 3)
            rating.add_row(a.aspect, _num(a.spearman, 3), _num(a.kendall, 3), within)
        console.print(rating)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)


# --- correlate ---------------------------------------------------------------------------


def correlate(
    leaderboard: Annotated[
        Path, typer.Argument(help="A leaderboard CSV (first column: model names).")
    ],
    human: Annotated[
        Path | None,
        typer.Option(
            help="CSV of human-derived scores, first column the system names (default: "
            "<data root>/alpaca_eval/arena_benchmarks.csv)."
        ),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="Leaderboard column (default: length_controlled_winrate or win_rate)."),
    ] = None,
    human_column: Annotated[
        str | None,
        typer.Option(help="Human score column (default: the first containing 'Arena Elo')."),
    ] = None,
    n_bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
    confidence: Annotated[float, typer.Option(help="Confidence level of the interval.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data root for the default --human file.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for correlation.json/.md and a scatter plot.")
    ] = None,
) -> None:
    """Rank correlation of a leaderboard with a human ranking (e.g. Chatbot Arena Elo).

    Spearman and Kendall with bootstrap confidence intervals, and a scatter plot.
    """
    import pandas as pd

    from simfarm.evaluation.correlation import load_scores, rank_correlation
    from simfarm.evaluation.human_sets import resolve_data_root
    from simfarm.evaluation.plots import plot_scatter
    from simfarm.evaluation.reports import correlation_markdown

    try:
        human_path = human or resolve_data_root(data_dir) / "alpaca_eval" / "arena_benchmarks.csv"
        if metric is None and leaderboard.is_file():
            columns = list(pd.read_csv(leaderboard, nrows=0).columns)
            metric = (
                "length_controlled_winrate"
                if "length_controlled_winrate" in columns
                else ("win_rate")
            )
        sim_column, simulated = load_scores(leaderboard, metric, "win_rate")
        human_col, human_scores = load_scores(human_path, human_column, "Arena Elo")
        result = rank_correlation(
            simulated,
            human_scores,
            simulated_label=f"{leaderboard.name}:{sim_column}",
            human_label=f"{human_path.name}:{' '.join(human_col.split())}",
            n_bootstrap=n_bootstrap,
            confidence=confidence,
            seed=seed,
        )
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "correlation.json").write_text(
                result.model_dump_json(indent=2) + "\n", encoding="utf-8"
            )
            (out / "correlation.md").write_text(correlation_markdown(result), encoding="utf-8")
            plot_scatter(
                result.systems,
                result.simulated,
                result.human,
                out / "correlation.png",
                x_label=result.simulated_label,
                y_label=result.human_label,
                title=f"Spearman {result.spearman:.3f}, Kendall {result.kendall:.3f} "
                f"({len(result.systems)} systems)",
            )
    except (SimfarmError, OSError) as error:
        raise fail(error) from None
    pct = round(confidence * 100)
    table = Table(title=f"{result.simulated_label} vs {result.human_label}")
    for column in ("statistic", "value", f"{pct}% CI"):
        table.add_column(column, justify="left" if column == "statistic" else "right")
    table.add_row(
        "Spearman",
        f"{result.spearman:.3f}",
        f"[{result.spearman_ci[0]:.3f}, {result.spearman_ci[1]:.3f}]",
    )
    table.add_row(
        "Kendall",
        f"{result.kendall:.3f}",
        f"[{result.kendall_ci[0]:.3f}, {result.kendall_ci[1]:.3f}]",
    )
    table.add_row("systems", str(len(result.systems)), "")
    console.print(table)
    if result.unmatched_simulated:
        missing = result.unmatched_simulated
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        console.print(f"no human score for: {', '.join(missing[:10])}{more}", highlight=False)


def register(target: typer.Typer) -> None:
    """Add ``evaluate``, ``validate`` and ``correlate`` to ``target`` (the main CLI)."""
    target.command("evaluate")(evaluate)
    target.command("validate")(validate)
    target.command("correlate")(correlate)


app = typer.Typer(
    name="simfarm-evaluation",
    help="Evaluate models by win rate, validate annotators against humans, check rankings.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
register(app)
