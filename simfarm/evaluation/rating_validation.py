"""Validate a rating annotator on a human Likert set (``simfarm validate --set topical_chat
--annotator <rating persona>``): it rates every response, and each of the set's aspects is
correlated (Spearman, Kendall; pooled and within context) with the annotator's score for the
same aspect - or, for an aspect the persona does not rate, with its overall score."""

from __future__ import annotations

from collections.abc import Sequence

from simfarm.annotation.feedback_records import RatingRecord, SingleItem
from simfarm.evaluation.human_sets import HumanRatingItem, LikertSetConfig
from simfarm.evaluation.validation import AspectCorrelation, RatingReport, rating_correlations

__all__ = ["rating_items", "rating_report"]


def rating_items(config: LikertSetConfig, ratings: Sequence[HumanRatingItem]) -> list[SingleItem]:
    """One item per human-rated response, with the set's task text as the instruction."""
    return [
        SingleItem(
            instruction=config.instruction_template.format(
                history=r.history.strip(), context=r.context.strip()
            ),
            output=r.response,
            generator=r.system,
            item_id=r.item_id,
        )
        for r in ratings
    ]


def _aspect_scores(records: Sequence[RatingRecord], aspect: str) -> dict[str, float]:
    """item id -> the annotator's score for ``aspect`` (the expected score where logprobs gave
    one); ``overall`` is the record's ``score``."""
    scores: dict[str, float] = {}
    for record in records:
        if record.failure is not None or record.item_id is None:
            continue
        expected = record.expected_scores or {}
        if aspect == "overall" or aspect not in record.scores:
            value = record.score
        else:
            value = expected.get(aspect, record.scores[aspect])
        if value is not None:
            scores[record.item_id] = value
    return scores


def rating_report(
    ratings: Sequence[HumanRatingItem], records: Sequence[RatingRecord], aspects: Sequence[str]
) -> RatingReport:
    """Per-aspect correlations of the annotator's ratings with the human means."""
    rated = {name for r in records for name in r.scores} | {"overall"}
    out: list[AspectCorrelation] = []
    for aspect in aspects:
        report = rating_correlations(ratings, _aspect_scores(records, aspect), [aspect], "")
        out.extend(report.aspects)
    unmatched = [a for a in aspects if a not in rated]
    scores_from = "the annotator's rating of the same aspect"
    if unmatched:
        scores_from += f"; its overall score for {', '.join(unmatched)}"
    return RatingReport(scores_from=scores_from, aspects=out)
