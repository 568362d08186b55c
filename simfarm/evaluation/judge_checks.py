"""Is the judge behind a leaderboard doing anything? Position bias and a narrow band.

A judge that always picks the same shown slot, or whose soft preferences all sit in a narrow
band around a tie, still yields win rates with small standard errors: the SE measures how
consistently the judge answers, not whether it discriminates. These checks say so beside
the board (issue 13: a quickstart judge answering "A" in both orders 24/24 showed
51.3 ± 0.8 vs 47.1 ± 0.7 as if significant).

Order information exists when pairs were judged in both orders (``position_consistent``
is set), or when single-order annotations were shown in both orders across items
(``swapped`` takes both values). Annotations shown in one fixed order carry none: there a
slot share is the win rate itself and says nothing about the judge.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field

from simfarm.types import PairwiseAnnotation, Record

SLOT_SHARE_LIMIT = 0.9
"""A judge choosing one shown slot at least this often is flagged as position-driven."""
NARROW_BAND = 0.2
"""Soft preferences whose max - min is below this are flagged as not discriminating."""
MIN_VERDICTS = 5
"""Below this many verdicts neither check is attempted (too few to say anything)."""


class JudgeCheck(Record):
    annotator: str
    n: int
    """Verdicts (annotations with a preference) by this judge."""
    position_consistency: float | None = None
    """Share of pairs judged in both orders whose two verdicts agreed (None: not judged in
    both orders)."""
    n_both_orders: int = 0
    first_slot_share: float | None = None
    """Share of decisive single-order verdicts that chose the output shown first (None: no
    order information)."""
    preference_range: tuple[float, float] | None = None
    """(min, max) of the preferences, when any is soft (strictly between 1 and 2, not 1.5)."""
    warnings: list[str] = Field(default_factory=list)


def _is_soft(preference: float) -> bool:
    return 1.0 < preference < 2.0 and preference != 1.5


def consistency_line(check: JudgeCheck) -> str | None:
    """``judge 'x': position consistency 3/24 (12%)`` when both orders were judged."""
    if check.position_consistency is None:
        return None
    agreed = round(check.position_consistency * check.n_both_orders)
    return (
        f"judge {check.annotator!r}: position consistency {agreed}/{check.n_both_orders} "
        f"({check.position_consistency:.0%}) of pairs judged in both orders"
    )


def check_judge(annotator: str, annotations: Iterable[PairwiseAnnotation]) -> JudgeCheck:
    judged = [a for a in annotations if a.preference is not None and a.failure is None]
    check = JudgeCheck(annotator=annotator, n=len(judged))
    both = [a for a in judged if a.position_consistent is not None]
    if both:
        check.n_both_orders = len(both)
        check.position_consistency = sum(bool(a.position_consistent) for a in both) / len(both)
    single = [a for a in judged if a.position_consistent is None]
    if len({a.swapped for a in single}) == 2:
        decisive = [a for a in single if a.preference not in (0.0, 1.5)]
        if decisive:
            # Unswapped: output_1 was shown first; swapped: output_2 was.
            first = sum(
                (a.preference < 1.5) != a.swapped for a in decisive if a.preference is not None
            )
            check.first_slot_share = first / len(decisive)
    preferences = [float(a.preference) for a in judged if a.preference is not None]
    if any(_is_soft(p) for p in preferences):
        check.preference_range = (min(preferences), max(preferences))
    if check.n < MIN_VERDICTS:
        return check
    consistency = check.position_consistency
    if (
        consistency is not None
        and check.n_both_orders >= MIN_VERDICTS
        and consistency <= 1 - SLOT_SHARE_LIMIT
    ):
        check.warnings.append(
            f"judge {annotator!r} is degenerate: its two orders agreed on only "
            f"{consistency:.0%} of {check.n_both_orders} pairs, so it picks a shown slot, "
            "not an output; its win rates and SEs mean nothing"
        )
    if check.first_slot_share is not None:
        share = max(check.first_slot_share, 1 - check.first_slot_share)
        if share >= SLOT_SHARE_LIMIT:
            slot = "first" if check.first_slot_share >= 0.5 else "second"
            check.warnings.append(
                f"judge {annotator!r} is degenerate: it chose the output shown {slot} in "
                f"{share:.0%} of its verdicts; its win rates and SEs mean nothing"
            )
    if check.preference_range is not None:
        low, high = check.preference_range
        if high - low < NARROW_BAND:
            check.warnings.append(
                f"judge {annotator!r} barely discriminates: all {check.n} preferences lie in "
                f"{low:.2f}-{high:.2f}; a small SE here reflects a steady judge, not a "
                "significant difference"
            )
    return check


def check_judges(annotations: Iterable[PairwiseAnnotation]) -> list[JudgeCheck]:
    """One check per annotator (pooled over models), sorted by annotator."""
    by_judge: dict[str, list[PairwiseAnnotation]] = {}
    for a in annotations:
        if a.generator_1 != a.generator_2:
            by_judge.setdefault(a.annotator, []).append(a)
    return [check_judge(judge, anns) for judge, anns in sorted(by_judge.items())]
