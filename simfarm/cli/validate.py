"""``simfarm validate``: agreement of an annotator with human labels, per subset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from simfarm.cli.common import (
    AnnotatorsDirs,
    BadRecordOption,
    console,
    exit_if_failed,
    fail,
    interrupted,
    judged_summary,
    num,
    print_issues,
)
from simfarm.cli.overrides import BaseUrlOverride, ModelOverride, annotate_with_overrides
from simfarm.errors import SimfarmError


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
    model: ModelOverride = None,
    base_url: BaseUrlOverride = None,
    on_bad_record: BadRecordOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Agreement of an annotator with human labels, per subset.

    Accuracy (with and without ties), human leave-one-out ceiling, Cohen's kappa, position
    consistency, P(prefer longer), bias/variance, $/1000 and s/1000; Likert correlations.
    """
    from simfarm.cli.progress import runs_progress
    from simfarm.cli.validate_ratings import is_rating_annotator, validate_rating_annotator
    from simfarm.evaluation.human_sets import find_human_set, load_human_set
    from simfarm.evaluation.io import load_annotation_file, load_rating_scores
    from simfarm.evaluation.run_validation import (
        align_annotations,
        build_report,
        pairs_of,
        run_annotator,
        write_report,
    )
    from simfarm.provenance import current_provenance, model_checksums, persona_digests
    from simfarm.record_checks import check_policy

    try:
        if (annotator is None) == (not annotations):
            raise SimfarmError("give exactly one of --annotator and --annotations")
        config = find_human_set(set_name, evals_dir)
        policy = check_policy(on_bad_record) if on_bad_record else None
        human_set = load_human_set(
            config, data_root=data_dir, subsets=subset, limit=limit, policy=policy, warn=False
        )
        print_issues(human_set.issues, policy or config.on_bad_record, config.name)
        if annotator is not None and is_rating_annotator(annotator, annotators_dir):
            # A rating annotator scores each response alone: there is no order to swap and its
            # runs take one sample, so these flags would be silently ignored (and a report
            # would claim a setting it never used).
            ignored = [
                flag
                for flag, given in (("--samples", samples != 1), ("--single-order", single_order))
                if given
            ]
            if ignored:
                raise SimfarmError(
                    f"{' and '.join(ignored)} apply to pairwise annotators; {annotator!r} is a "
                    "rating annotator (one score per response, one sample): leave them out"
                )
            with runs_progress(annotator, annotators_dir, quiet=quiet) as progress:
                report, rated = validate_rating_annotator(
                    human_set,
                    annotator,
                    annotators_dirs=annotators_dir,
                    model=model,
                    base_url=base_url,
                    use_cache=not no_cache,
                    progress=progress,
                )
            report.provenance = current_provenance(persona_digests([annotator], annotators_dir))
            paths = write_report(report, out) if out is not None else {}
            _print_rating(report)
            for note in report.notes:
                console.print(f"note: {note}", highlight=False)
            if paths:
                console.print(f"written: {paths['markdown']}, {paths['json']}")
            exit_if_failed([r.failure for r in rated if r.failure], len(rated), "ratings")
            return
        pairs = pairs_of(human_set)
        notes: list[str] = []
        failures: list[Any] = []
        if annotator is not None:
            with runs_progress(annotator, annotators_dir, quiet=quiet) as progress:
                samples_ = run_annotator(
                    pairs,
                    annotator,
                    both_orders=not single_order,
                    samples=samples,
                    use_cache=not no_cache,
                    annotators_dirs=annotators_dir,
                    progress=progress,
                    annotate=annotate_with_overrides(model, base_url),
                )
            label = annotator
            failures = [a.failure for sample in samples_ for a in sample if a.failure]
        else:
            files = [
                load_annotation_file(p, policy or "coerce", warn=False) for p in annotations or []
            ]
            print_issues(
                [i for f in files for i in f.issues], policy or "coerce", "the annotations"
            )
            samples_, notes = align_annotations(pairs, files)
            label = ", ".join(sorted({a.annotator for s in samples_ for a in s} - {"missing"}))
        rating_scores = None
        if ratings is not None:
            rating_scores, rating_issues = load_rating_scores(ratings, policy or "coerce")
            print_issues(rating_issues, policy or "coerce", str(ratings))
        report = build_report(
            human_set,
            pairs,
            samples_,
            annotator=label,
            both_orders=not single_order and annotator is not None,
            ratings=rating_scores,
            notes=notes,
        )
        judges = [annotator] if annotator else sorted(set(label.split(", ")))
        report.provenance = current_provenance(
            persona_digests(judges, annotators_dir),
            models=model_checksums(judges, annotators_dir),
        )
        paths = write_report(report, out) if out is not None else {}
    except KeyboardInterrupt:
        raise interrupted() from None
    except (SimfarmError, OSError) as error:
        raise fail(error) from None
    _print_validation(report)
    if annotator is not None:
        console.print(judged_summary([a for sample in samples_ for a in sample]))
    if paths:
        console.print(f"written: {paths['markdown']}, {paths['json']}")
    exit_if_failed(failures, sum(len(sample) for sample in samples_), "judgements")


def _print_rating(report: Any) -> None:
    if report.rating is not None:
        rating = Table(title=f"Likert correlation ({report.rating.scores_from})")
        for column in ("aspect", "n", "Spearman", "Kendall", "within context"):
            rating.add_column(column, justify="left" if column == "aspect" else "right")
        for a in report.rating.aspects:
            within = num(a.spearman_within_context, 3)
            rating.add_row(a.aspect, str(a.n), num(a.spearman, 3), num(a.kendall, 3), within)
        console.print(rating)


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
        table.add_row(label, *(num(getattr(m, field), digits) for m in columns.values()))
    console.print(table)
    if report.systems is not None:
        s = report.systems
        console.print(
            f"systems: Spearman {num(s.spearman, 3)}, Kendall {num(s.kendall, 3)} between "
            "human and annotator win rates"
        )
    _print_rating(report)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
