"""``simfarm validate`` without the command line: judge a human-labelled set with an
annotator (or read judgements made earlier) and build the :class:`ValidationReport`.

The annotator is called through ``simfarm.annotation.annotate_pairs`` (imported when first
needed, so the evaluation layer does not load the annotation engine unless it runs it). The
call is a parameter, so tests and other engines can pass their own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from simfarm.errors import ConfigError
from simfarm.evaluation.human_sets import (
    HumanPairwiseItem,
    HumanSet,
    LikertSetConfig,
    rating_pairs,
)
from simfarm.evaluation.io import AnnotationFile
from simfarm.evaluation.reports import validation_markdown
from simfarm.evaluation.validation import (
    RatingReport,
    ValidationReport,
    agreement_metrics,
    breakdown,
    rating_correlations,
    round_robin_scores,
    system_ranking,
)
from simfarm.types import Failure, PairwiseAnnotation, PairwiseItem, canonical_json

if TYPE_CHECKING:
    from simfarm.annotation.run import ProgressCallback

AnnotateFn = Callable[..., list[PairwiseAnnotation]]
"""``annotate_pairs(items, persona, *, both_orders=..., use_cache=..., ...)``."""


def _engine() -> AnnotateFn:
    try:
        from simfarm.annotation import annotate_pairs
    except ImportError as error:  # pragma: no cover - depends on the installed engine
        raise ConfigError(f"the annotation engine is not available: {error}") from error
    return annotate_pairs


def pairs_of(human_set: HumanSet) -> list[HumanPairwiseItem]:
    """The pairs to judge: the set's own, or all pairs within a context for Likert sets."""
    if isinstance(human_set.config, LikertSetConfig):
        return rating_pairs(human_set.config, human_set.ratings)
    return human_set.pairs


def run_annotator(
    pairs: Sequence[HumanPairwiseItem],
    annotator: str,
    *,
    both_orders: bool = True,
    samples: int = 1,
    use_cache: bool = True,
    annotators_dirs: list[Path] | None = None,
    progress: ProgressCallback | None = None,
    annotate: AnnotateFn | None = None,
) -> list[list[PairwiseAnnotation]]:
    """``samples`` judgements of every pair. Each sample is its own request with its own
    sample index, so each is cached on its own: a rerun re-pays nothing, and a sampled judge
    gives k different answers instead of replaying its first (a deterministic annotator
    repeats itself, which is a variance of zero)."""
    if samples < 1:
        raise ConfigError("--samples must be at least 1")
    call = annotate or _engine()
    items: list[PairwiseItem] = [p.item for p in pairs]
    flat = call(
        items,
        annotator,
        annotators_dirs=annotators_dirs,
        use_cache=use_cache,
        both_orders=both_orders,
        progress=progress,
        samples=samples,
    )
    # item-major (item i's samples at i*k ... i*k+k-1) -> one list per sample
    return [flat[k::samples] for k in range(samples)]


def _content(item: PairwiseItem | PairwiseAnnotation) -> tuple[str, str, str, str]:
    """What a judgement is matched on; a multi-turn item's context is its whole conversation,
    so pairs that end alike but differ in an earlier turn are told apart."""
    context = item.instruction
    if item.conversation is not None:
        context = canonical_json([context, [turn.model_dump() for turn in item.conversation]])
    return (context, item.input, item.output_1, item.output_2)


def align_annotations(
    pairs: Sequence[HumanPairwiseItem], files: Sequence[AnnotationFile]
) -> tuple[list[list[PairwiseAnnotation]], list[str]]:
    """Samples aligned with ``pairs`` from annotation files made earlier.

    Annotations are matched by content (instruction, input and both outputs), in either order
    (a swapped one has its preference mirrored). A pair judged k times contributes to k
    samples; a pair with fewer judgements than the most-judged one gets failed placeholders.
    Returns the samples and notes on what did not match.
    """
    found: dict[tuple[str, str, str, str], list[PairwiseAnnotation]] = defaultdict(list)
    for loaded in files:
        for a in loaded.annotations:
            found[_content(a)].append(a)
    per_pair: list[list[PairwiseAnnotation]] = []
    used: set[tuple[str, str, str, str]] = set()
    for pair in pairs:
        key = _content(pair.item)
        mirrored = (key[0], key[1], key[3], key[2])
        matches = list(found.get(key, []))
        used.add(key)
        for a in found.get(mirrored, []):
            used.add(mirrored)
            p = a.preference
            matches.append(
                a.model_copy(
                    update={
                        "output_1": a.output_2,
                        "output_2": a.output_1,
                        "generator_1": a.generator_2,
                        "generator_2": a.generator_1,
                        "preference": None if p is None else (1.5 if p == 0 else 3.0 - p),
                    }
                )
            )
        per_pair.append(matches)
    n_samples = max((len(m) for m in per_pair), default=0)
    if n_samples == 0:
        raise ConfigError("no annotation in the given files matches a pair of this set")
    notes = []
    missing = sum(not m for m in per_pair)
    if missing:
        notes.append(f"{missing} pair(s) have no annotation in the files (counted as failed)")
    unused = sum(len(v) for k, v in found.items() if k not in used)
    if unused:
        notes.append(f"{unused} annotation(s) in the files match no pair of this set (ignored)")
    samples: list[list[PairwiseAnnotation]] = []
    for k in range(n_samples):
        sample = []
        for pair, matches in zip(pairs, per_pair, strict=True):
            if k < len(matches):
                sample.append(matches[k])
            else:
                sample.append(
                    PairwiseAnnotation(
                        **pair.item.model_dump(),
                        annotator="missing",
                        failure=Failure(kind="input", message="no annotation for this pair"),
                    )
                )
        samples.append(sample)
    return samples, notes


def build_report(
    human_set: HumanSet,
    pairs: Sequence[HumanPairwiseItem],
    samples: Sequence[Sequence[PairwiseAnnotation]],
    *,
    annotator: str,
    both_orders: bool,
    ratings: dict[str, float] | None = None,
    notes: Sequence[str] = (),
) -> ValidationReport:
    """The report: overall, per group and per subset; systems and Likert correlations
    where the set supports them. ``ratings`` (item id -> score) are a rating annotator's."""
    config = human_set.config
    rating: RatingReport | None = None
    all_notes = list(notes)
    if isinstance(config, LikertSetConfig):
        all_notes.append(
            f"pairwise verdicts are checked against the human `{config.pairwise_aspect}` "
            "scores of the two responses (higher wins; equal is a tie)"
        )
        if ratings is not None:
            rating = rating_correlations(
                human_set.ratings, ratings, config.aspects, "annotator ratings"
            )
        elif samples:
            rating = rating_correlations(
                human_set.ratings,
                round_robin_scores(pairs, samples),
                config.aspects,
                "per-response win rate against the other responses to the same context",
            )
    if (
        both_orders
        and samples
        and all(a.position_consistent is None for sample in samples for a in sample)
    ):
        all_notes.append(
            "position consistency: n/a (no pair was judged by a model in both orders; rule "
            "personas and identical outputs are decided without showing an order)"
        )
    if len(samples) < 2:
        all_notes.append("variance: n/a (needs at least 2 samples per pair; use --samples)")
    return ValidationReport(
        set=config.name,
        description=config.description,
        sources=human_set.sources,
        annotator=annotator,
        both_orders=both_orders,
        n_samples=len(samples),
        overall=agreement_metrics(pairs, samples),
        subsets=breakdown(pairs, samples, "subset"),
        groups=breakdown(pairs, samples, "group"),
        systems=system_ranking(pairs, samples),
        rating=rating,
        issues=human_set.issues,
        notes=all_notes,
    )


def write_report(report: ValidationReport, out_dir: Path) -> dict[str, Path]:
    """``report.json`` (the full record, NaN as null) and ``report.md``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md"}
    if report.provenance is None:
        from simfarm.provenance import current_provenance

        report.provenance = current_provenance()
    paths["json"].write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(validation_markdown(report), encoding="utf-8")
    return paths
