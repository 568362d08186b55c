"""``simfarm evaluate`` without the command line: from annotation files, or from model
outputs judged against reference outputs by an annotator, to a written leaderboard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from simfarm.datafiles import check_pairing, load_model_outputs, pair_outputs, write_records
from simfarm.errors import ConfigError
from simfarm.evaluation.difficulty import DifficultyMethod, InstructionDifficulty
from simfarm.evaluation.io import (
    AnnotationFile,
    group_by_model,
    load_annotation_file,
)
from simfarm.evaluation.leaderboard import Leaderboard, build_leaderboard, write_leaderboard
from simfarm.evaluation.plots import plot_leaderboard
from simfarm.provenance import Provenance
from simfarm.record_checks import BadRecordPolicy, RecordIssue
from simfarm.types import PairwiseAnnotation, PairwiseItem

if TYPE_CHECKING:
    from simfarm.annotation.run import ProgressCallback

AnnotateFn = Callable[..., list[PairwiseAnnotation]]


@dataclass
class EvaluationInputs:
    """Annotations per model, and what went wrong reading them."""

    annotations: dict[str, list[PairwiseAnnotation]]
    issues: list[RecordIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    judge_agreement: list[str] = field(default_factory=list)
    """The judges' measured human agreement (one line each), written with the leaderboard;
    set by whoever knows which persona judged (see
    :func:`simfarm.annotation.loader.measured_agreement_note`)."""


def from_annotation_files(
    paths: Sequence[Path], policy: BadRecordPolicy = "coerce"
) -> EvaluationInputs:
    """Annotations of alpaca_eval ``annotations.json`` / simfarm JSONL files, by model."""
    files: list[AnnotationFile] = [load_annotation_file(p, policy, warn=False) for p in paths]
    notes: list[str] = []
    seen: dict[str, str] = {}
    for loaded in files:
        for model in {a.generator_2 for a in loaded.annotations}:
            if model in seen:
                notes.append(
                    f"model {model!r} appears in {seen[model]} and {loaded.path}; "
                    "their annotations are pooled"
                )
            seen[model] = loaded.path
    return EvaluationInputs(
        annotations=group_by_model(files),
        issues=[i for f in files for i in f.issues],
        notes=notes,
    )


def from_model_outputs(
    model_sources: Sequence[str],
    reference_source: str,
    annotator: str,
    *,
    policy: BadRecordPolicy = "coerce",
    limit: int | None = None,
    both_orders: bool = False,
    use_cache: bool = True,
    annotators_dirs: list[Path] | None = None,
    progress: ProgressCallback | None = None,
    annotate: AnnotateFn | None = None,
) -> EvaluationInputs:
    """Judge each model's outputs against the reference's (paired by instruction); the
    inputs carry the judge's measured human agreement (from the persona file found on
    ``annotators_dirs``, as the one that judges)."""
    if annotate is None:
        from simfarm.annotation import annotate_pairs

        annotate = annotate_pairs
    from simfarm.annotation.loader import load_annotator, measured_agreement_note

    note = measured_agreement_note(load_annotator(annotator, annotators_dirs))
    reference = load_model_outputs(reference_source, policy, warn=False)
    inputs = EvaluationInputs(
        annotations={}, issues=list(reference.issues), judge_agreement=[note] if note else []
    )
    # Pair every model first: an empty pairing is refused before any request is paid for.
    planned: list[list[PairwiseItem]] = []
    for source in model_sources:
        outputs = load_model_outputs(source, policy, warn=False)
        inputs.issues += outputs.issues
        items, unpaired = pair_outputs(outputs.outputs, reference.outputs)
        check_pairing(items, source, len(outputs.outputs), reference_source, len(reference.outputs))
        if unpaired:
            inputs.notes.append(
                f"{source}: {len(unpaired)} instruction(s) have no reference output and are "
                f"not judged (first: {unpaired[0][:80]!r})"
            )
        planned.append(items[:limit] if limit is not None else items)
    for items in planned:
        annotations = annotate(
            items,
            annotator,
            annotators_dirs=annotators_dirs,
            use_cache=use_cache,
            both_orders=both_orders,
            progress=progress,
        )
        for annotation in annotations:
            inputs.annotations.setdefault(annotation.generator_2, []).append(annotation)
    return inputs


def check_judged(inputs: EvaluationInputs) -> None:
    """Refuse a leaderboard without a single judged pair for some model (n = 0): every
    annotation failed, or the files held none."""
    if not inputs.annotations:
        raise ConfigError("no annotations to evaluate: the inputs hold no pairs")
    empty = [
        model
        for model, annotations in inputs.annotations.items()
        if not any(a.failure is None and a.preference is not None for a in annotations)
    ]
    if empty:
        raise ConfigError(
            f"no judged pair for {', '.join(repr(m) for m in sorted(empty))}: every annotation "
            "failed or has no preference, so a win rate would be n = 0; see the failures "
            "in the annotations"
        )


def failed_annotations(inputs: EvaluationInputs) -> list[PairwiseAnnotation]:
    """The annotations that failed (no preference), over every model."""
    return [a for anns in inputs.annotations.values() for a in anns if a.failure is not None]


def write_evaluation(
    inputs: EvaluationInputs,
    out_dir: Path,
    *,
    length_controlled: bool = True,
    difficulty: InstructionDifficulty | None = None,
    difficulty_method: DifficultyMethod = "notebook_joint",
    save_annotations: bool = False,
    provenance: Provenance | None = None,
) -> tuple[Leaderboard, dict[str, Path]]:
    """Build the leaderboard and write it (CSV, JSON, markdown, PNG, difficulty, weights);
    with ``save_annotations`` also each model's annotations as JSONL under ``annotations/``.
    A model without a single judged pair is refused (:func:`check_judged`)."""
    check_judged(inputs)
    leaderboard, used_difficulty = build_leaderboard(
        inputs.annotations,
        length_controlled=length_controlled,
        difficulty=difficulty,
        difficulty_method=difficulty_method,
        judge_agreement=inputs.judge_agreement,
    )
    leaderboard.provenance = provenance
    out_dir = Path(out_dir)
    paths = write_leaderboard(leaderboard, out_dir, used_difficulty)
    paths["plot"] = plot_leaderboard(leaderboard, out_dir / "leaderboard.png")
    if save_annotations:
        for model, annotations in inputs.annotations.items():
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
            target = out_dir / "annotations" / f"{safe}.jsonl"
            write_records(target, annotations)
            paths[f"annotations:{model}"] = target
    return leaderboard, paths
