"""``simfarm validate`` for a rating annotator on a Likert set: rate every response, then
correlate each aspect with the human means (see :mod:`simfarm.evaluation.rating_validation`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from simfarm.errors import SimfarmError

if TYPE_CHECKING:
    from simfarm.annotation.feedback_records import RatingRecord
    from simfarm.evaluation.human_sets import HumanSet
    from simfarm.evaluation.validation import ValidationReport


def is_rating_annotator(annotator: str, annotators_dirs: list[Path] | None) -> bool:
    """Whether the persona (or every member of the pool) is of kind ``rating``."""
    from simfarm.annotation.feedback_specs import RatingPersona
    from simfarm.annotation.loader import LoadedPool, load_annotator

    loaded = load_annotator(annotator, annotators_dirs)
    if isinstance(loaded, LoadedPool):
        return all(isinstance(p.spec, RatingPersona) for p, _ in loaded.members)
    return isinstance(loaded.spec, RatingPersona)


def validate_rating_annotator(
    human_set: HumanSet,
    annotator: str,
    *,
    annotators_dirs: list[Path] | None,
    model: str | None,
    base_url: str | None,
    use_cache: bool,
    progress: Any,
) -> tuple[ValidationReport, list[RatingRecord]]:
    """Rate the set's responses with ``annotator``; the report carries the per-aspect
    correlations (its pairwise sections are empty)."""
    from simfarm.annotation import BackendOverrides, annotate, load_annotator
    from simfarm.evaluation.human_sets import LikertSetConfig
    from simfarm.evaluation.rating_validation import rating_items, rating_report
    from simfarm.evaluation.run_validation import build_report

    config = human_set.config
    if not isinstance(config, LikertSetConfig):
        raise SimfarmError(
            f"{annotator} is a rating annotator: validate it on a Likert set (e.g. "
            f"--set topical_chat), not on {config.name} (pairwise labels)"
        )
    overrides = BackendOverrides(model=model, options={"base_url": base_url} if base_url else {})
    items: list[Any] = list(rating_items(config, human_set.ratings))
    result = annotate(
        items,
        load_annotator(annotator, annotators_dirs),
        use_cache=use_cache,
        backend_overrides=overrides,
        progress=progress,
    )
    records = cast("list[RatingRecord]", result.annotations)
    report = build_report(human_set, [], [], annotator=annotator, both_orders=False)
    report.rating = rating_report(human_set.ratings, records, config.aspects)
    n_failed = sum(r.failure is not None for r in records)
    report.notes = [
        f"{len(records)} responses rated, {n_failed} failed (left out of the correlations)"
    ]
    return report, records
