"""Turn ratings into pairwise preferences, explicitly and reproducibly.

Ratings of several outputs to the same instruction become :class:`PairwiseAnnotation`
records, the format the reward-model and DPO recipes read. How is a choice, not a default
hidden in a recipe: which pairs (``best-vs-random`` as in UltraFeedback's binarised set,
``best-vs-worst``, ``all-pairs``), which number (the overall score, the mean of the aspects,
or one aspect), what counts as a tie (a score difference below ``margin``) and whether ties
are kept (preference 1.5) or dropped. Random choices are seeded per instruction
(sha256, never Python's salted ``hash()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from simfarm.annotation.feedback_records import RatingRecord
from simfarm.annotation.judge import seeded_rng
from simfarm.errors import ConfigError
from simfarm.types import PairwiseAnnotation

__all__ = ["PairingOptions", "PairingReport", "pairs_from_ratings"]

Strategy = Literal["best-vs-random", "best-vs-worst", "all-pairs"]


class PairingOptions(BaseModel):
    """How ratings become pairs."""

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = "best-vs-random"
    """``best-vs-random``: the best output against a seeded random other (UltraFeedback
    binarised); ``best-vs-worst``; ``all-pairs``: every two outputs of an instruction."""
    score: str = "overall"
    """``overall`` (the record's ``score``: the expected overall where logprobs gave one),
    ``mean`` (mean of the aspect scores, expected ones where present), or an aspect name."""
    margin: float = Field(default=0.0, ge=0.0)
    """Pairs whose scores differ by less than this are ties (0: only equal scores)."""
    ties: Literal["drop", "keep"] = "drop"
    """Ties are dropped, or kept with preference 1.5."""
    seed: int = 0
    """Salt of the ``best-vs-random`` draw."""


class PairingReport(BaseModel):
    """What the conversion did, for the user to see what was dropped."""

    model_config = ConfigDict(extra="forbid")

    n_ratings: int
    n_failed: int
    """Ratings without a score (failed), left out."""
    n_groups: int
    """Instructions with at least two rated outputs."""
    n_pairs: int
    n_ties_kept: int
    n_ties_dropped: int


def _value(record: RatingRecord, score: str) -> float | None:
    expected = record.expected_scores or {}
    if score == "overall":
        return record.score
    if score == "mean":
        if not record.scores:
            return None
        values = [expected.get(k, v) for k, v in record.scores.items()]
        return sum(values) / len(values)
    if score not in record.scores:
        raise ConfigError(
            f"score {score!r}: not an aspect of the ratings by {record.annotator!r} "
            f"(aspects: {', '.join(sorted(record.scores))}; or `overall`, `mean`)"
        )
    return expected.get(score, record.scores[score])


def pairs_from_ratings(
    records: Sequence[RatingRecord], options: PairingOptions | None = None
) -> tuple[list[PairwiseAnnotation], PairingReport]:
    """Preference pairs from ratings (grouped by instruction and input, in file order)."""
    options = options or PairingOptions()
    groups: dict[tuple[str, str], list[tuple[RatingRecord, float]]] = {}
    failed = 0
    for record in records:
        value = None if record.failure is not None else _value(record, options.score)
        if value is None:
            failed += 1
            continue
        groups.setdefault((record.instruction, record.input), []).append((record, value))
    pairs: list[PairwiseAnnotation] = []
    kept = dropped = n_groups = 0
    for key, rated in groups.items():
        if len(rated) < 2:
            continue
        n_groups += 1
        for first, second in _choose(rated, options, key):
            (r1, v1), (r2, v2) = sorted((first, second), key=lambda rv: rated.index(rv))
            tie = abs(v1 - v2) < options.margin or v1 == v2
            if tie and options.ties == "drop":
                dropped += 1
                continue
            kept += tie
            pairs.append(_pair(r1, r2, 1.5 if tie else (1.0 if v1 > v2 else 2.0)))
    report = PairingReport(
        n_ratings=len(records),
        n_failed=failed,
        n_groups=n_groups,
        n_pairs=len(pairs),
        n_ties_kept=kept,
        n_ties_dropped=dropped,
    )
    return pairs, report


Rated = tuple[RatingRecord, float]


def _choose(
    rated: list[Rated], options: PairingOptions, key: tuple[str, str]
) -> list[tuple[Rated, Rated]]:
    if options.strategy == "all-pairs":
        return list(combinations(rated, 2))
    best = max(rated, key=lambda rv: rv[1])  # the first of equal bests, in file order
    others = [rv for rv in rated if rv is not best]
    if options.strategy == "best-vs-worst":
        return [(best, min(others, key=lambda rv: rv[1]))]
    rng = seeded_rng("pairs-from-ratings", options.seed, *key)
    return [(best, rng.choice(others))]


def _pair(first: RatingRecord, second: RatingRecord, preference: float) -> PairwiseAnnotation:
    ids = f"{first.item_id}|{second.item_id}" if first.item_id and second.item_id else None
    return PairwiseAnnotation(
        instruction=first.instruction,
        input=first.input,
        output_1=first.output,
        generator_1=first.generator,
        output_2=second.output,
        generator_2=second.generator,
        item_id=ids,
        preference=preference,
        annotator=first.annotator,
        pool=first.pool,
    )
