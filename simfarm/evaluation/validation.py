"""How far an annotator agrees with humans: the numbers behind ``simfarm validate``.

Inputs are human-labelled pairs (:mod:`.human_sets`) and one or more *samples* of the
annotator's judgements of them (each sample a list aligned with the pairs; several samples
come from re-running a stochastic judge). Definitions, all in percent:

* **accuracy with ties**: the annotator's verdict (rounded to 1, 1.5 or 2) equals the human
  majority label, ties being a label of their own (three-way agreement). When humans split
  evenly the majority is drawn uniformly among the tied labels and the expectation is taken.
* **accuracy without ties**: only pairs whose human majority is a single non-tie label; an
  annotator tie there scores one half (alpaca_eval's absolute scoring rule).
* **human leave-one-out ceiling** (pairs with several humans): each human against the
  majority of the others, with the same even-split rule; the agreement an annotator as good
  as one more human would reach.
* **Cohen's kappa** between the annotator's verdicts and the single-label human majority.
* **position consistency**: in both-orders mode, the share of pairs whose two orders agreed.
* **P(prefer longer)**: among decisive verdicts on pairs whose outputs differ by more than 30
  characters, the share that prefer the longer one (alpaca_eval counts an annotator tie as
  preferring ``output_2``; here ties are left out).
* **bias** and **variance**, as alpaca_eval defines them: bias = disagreement between the
  annotator's most likely verdict (its majority over samples) and the human majority;
  variance = disagreement of one sample with the majority of the others (needs >= 2 samples).
* **$/1000** and **s/1000**: mean ``cost_usd`` and ``latency_s`` per annotation, x 1000.

Failed annotations are left out of every rate and counted in ``n_failed``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

from pydantic import Field

from simfarm.evaluation.human_sets import HumanPairwiseItem, HumanRatingItem
from simfarm.evaluation.winrate import discretize
from simfarm.provenance import Provenance
from simfarm.record_checks import RecordIssue
from simfarm.types import PairwiseAnnotation, Record

LENGTH_MARGIN = 30


class AgreementMetrics(Record):
    n_items: int
    n_failed: int
    """Failed annotations, over all samples."""
    accuracy_with_ties: float | None
    accuracy_without_ties: float | None
    n_without_ties: int
    """Pairs whose human majority is one non-tie label."""
    cohen_kappa: float | None
    human_loo_ceiling: float | None
    n_humans: int
    """Most human labels on one pair."""
    position_consistency: float | None
    n_position_checked: int
    p_prefer_longer: float | None
    n_length_differs: int
    bias: float | None
    variance: float | None
    annotator_tie_rate: float | None
    human_tie_rate: float | None
    price_per_1000: float
    time_per_1000: float


class SystemRanking(Record):
    """Per-system win rates (ties = 1/2, against every other system in the set): humans
    (majority label) vs the annotator, and how their rankings correlate."""

    human_win_rate: dict[str, float]
    annotator_win_rate: dict[str, float]
    spearman: float | None
    kendall: float | None


class AspectCorrelation(Record):
    aspect: str
    n: int
    spearman: float | None
    kendall: float | None
    spearman_within_context: float | None
    """Mean Spearman over contexts (responses to the same context ranked against each other)."""


class RatingReport(Record):
    scores_from: str
    """What the annotator's per-response scores are (ratings, or round-robin win rates)."""
    aspects: list[AspectCorrelation]


class ValidationReport(Record):
    set: str
    description: str
    sources: list[str]
    annotator: str
    both_orders: bool
    n_samples: int
    overall: AgreementMetrics
    subsets: dict[str, AgreementMetrics]
    groups: dict[str, AgreementMetrics]
    systems: SystemRanking | None = None
    rating: RatingReport | None = None
    issues: list[RecordIssue]
    notes: list[str] = Field(default_factory=list)
    provenance: Provenance | None = None
    """simfarm version, command line and persona digests (set when written)."""


def _modes(labels: Sequence[float]) -> list[float]:
    counts = Counter(labels)
    top = max(counts.values())
    return [label for label, count in counts.items() if count == top]


def _expected_match(label: float, modes: Sequence[float]) -> float:
    return (label in modes) / len(modes)


def _pct(values: Sequence[float]) -> float | None:
    return 100.0 * sum(values) / len(values) if values else None


def _verdict(annotation: PairwiseAnnotation) -> float | None:
    p = annotation.preference
    if p is None or math.isnan(p) or not (1.0 <= p <= 2.0 or p == 0.0):
        return None
    return discretize(p)


def _kappa(predicted: list[float], truth: list[float]) -> float | None:
    if len(predicted) < 2:
        return None
    import warnings

    from sklearn.metrics import cohen_kappa_score

    # A single label on both sides makes kappa undefined: reported as None ("-"), so
    # scikit-learn's warnings about it (with source lines) would only be console noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(cohen_kappa_score([str(x) for x in predicted], [str(x) for x in truth]))
    return None if math.isnan(value) else value


def agreement_metrics(
    items: Sequence[HumanPairwiseItem], samples: Sequence[Sequence[PairwiseAnnotation]]
) -> AgreementMetrics:
    """All agreement numbers for ``items`` (each sample aligned with them)."""
    for sample in samples:
        if len(sample) != len(items):
            raise ValueError(f"a sample has {len(sample)} annotations for {len(items)} items")
    with_ties: list[float] = []
    without_ties: list[float] = []
    kappa_pred: list[float] = []
    kappa_true: list[float] = []
    loo: list[float] = []
    consistent: list[bool] = []
    longer: list[bool] = []
    bias: list[float] = []
    variance: list[float] = []
    n_failed = 0
    annotator_labels: list[float] = []
    human_labels: list[float] = []
    costs: list[float] = []
    times: list[float] = []
    decisive_items = 0
    for index, human in enumerate(items):
        modes = _modes(human.human)
        single = modes[0] if len(modes) == 1 else None
        decisive = single is not None and single != 1.5
        decisive_items += decisive
        human_labels += human.human
        for h in range(len(human.human)) if len(human.human) > 1 else ():
            others = human.human[:h] + human.human[h + 1 :]
            loo.append(_expected_match(human.human[h], _modes(others)))
        verdicts: list[float] = []
        for sample in samples:
            annotation = sample[index]
            costs.append(annotation.cost_usd)
            times.append(annotation.latency_s)
            if annotation.position_consistent is not None:
                consistent.append(annotation.position_consistent)
            verdict = _verdict(annotation)
            if verdict is None:
                n_failed += 1
                continue
            verdicts.append(verdict)
            annotator_labels.append(verdict)
            with_ties.append(_expected_match(verdict, modes))
            if decisive:
                without_ties.append(1.0 if verdict == single else 0.5 if verdict == 1.5 else 0.0)
            if single is not None:
                kappa_pred.append(verdict)
                kappa_true.append(single)
            len_1, len_2 = len(annotation.output_1), len(annotation.output_2)
            if abs(len_1 - len_2) > LENGTH_MARGIN and verdict != 1.5:
                longer.append((verdict == 2.0) == (len_2 > len_1))
        if verdicts:
            annotator_modes = _modes(verdicts)
            bias.append(
                len(set(annotator_modes) & set(modes)) / (len(annotator_modes) * len(modes))
            )
            for k in range(len(verdicts)) if len(verdicts) > 1 else ():
                others = verdicts[:k] + verdicts[k + 1 :]
                variance.append(_expected_match(verdicts[k], _modes(others)))
    n = len(costs)
    bias_pct = _pct(bias)
    variance_pct = _pct(variance)
    return AgreementMetrics(
        n_items=len(items),
        n_failed=n_failed,
        accuracy_with_ties=_pct(with_ties),
        accuracy_without_ties=_pct(without_ties),
        n_without_ties=decisive_items,
        cohen_kappa=_kappa(kappa_pred, kappa_true),
        human_loo_ceiling=_pct(loo),
        n_humans=max((len(i.human) for i in items), default=0),
        position_consistency=_pct([float(c) for c in consistent]),
        n_position_checked=len(consistent),
        p_prefer_longer=_pct([float(x) for x in longer]),
        n_length_differs=len(longer),
        bias=None if bias_pct is None else 100.0 - bias_pct,
        variance=None if variance_pct is None else 100.0 - variance_pct,
        annotator_tie_rate=_pct([float(x == 1.5) for x in annotator_labels]),
        human_tie_rate=_pct([float(x == 1.5) for x in human_labels]),
        price_per_1000=sum(costs) / n * 1000 if n else 0.0,
        time_per_1000=sum(times) / n * 1000 if n else 0.0,
    )


def _rank_correlations(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, float | None]:
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None, None
    from scipy import stats

    spearman = float(stats.spearmanr(x, y).statistic)
    kendall = float(stats.kendalltau(x, y).statistic)
    return (
        None if math.isnan(spearman) else spearman,
        None if math.isnan(kendall) else kendall,
    )


def system_ranking(
    items: Sequence[HumanPairwiseItem], samples: Sequence[Sequence[PairwiseAnnotation]]
) -> SystemRanking | None:
    """Per-system win rates by humans and by the annotator, when the pairs name their systems
    (PandaLM's ``cmp_key``); None when fewer than three systems are named."""
    human_scores: dict[str, list[float]] = defaultdict(list)
    annotator_scores: dict[str, list[float]] = defaultdict(list)
    for index, human in enumerate(items):
        a, b = human.item.generator_1, human.item.generator_2
        if a == b or {a, b} & {"output_1", "output_2"}:
            continue
        modes = _modes(human.human)
        b_score = sum(m - 1.0 for m in modes) / len(modes)
        human_scores[b].append(b_score)
        human_scores[a].append(1.0 - b_score)
        for sample in samples:
            verdict = _verdict(sample[index])
            if verdict is not None:
                annotator_scores[b].append(verdict - 1.0)
                annotator_scores[a].append(2.0 - verdict)
    systems = sorted(s for s in human_scores if annotator_scores.get(s))
    if len(systems) < 3:
        return None
    human_wr = {s: 100 * sum(human_scores[s]) / len(human_scores[s]) for s in systems}
    annot_wr = {s: 100 * sum(annotator_scores[s]) / len(annotator_scores[s]) for s in systems}
    spearman, kendall = _rank_correlations(
        [annot_wr[s] for s in systems], [human_wr[s] for s in systems]
    )
    return SystemRanking(
        human_win_rate=human_wr, annotator_win_rate=annot_wr, spearman=spearman, kendall=kendall
    )


def round_robin_scores(
    pairs: Sequence[HumanPairwiseItem], samples: Sequence[Sequence[PairwiseAnnotation]]
) -> dict[str, float]:
    """Per-response score from pairwise verdicts among responses to the same context: the
    mean probability of being preferred (ties = 1/2). Pair ids are ``<id_1>|<id_2>``."""
    wins: dict[str, list[float]] = defaultdict(list)
    for index, pair in enumerate(pairs):
        first, _, second = (pair.item.item_id or "").partition("|")
        for sample in samples:
            p = sample[index].preference
            if p is None or math.isnan(p) or not 1.0 <= p <= 2.0:
                continue
            wins[second].append(p - 1.0)
            wins[first].append(2.0 - p)
    return {item_id: sum(v) / len(v) for item_id, v in wins.items() if v}


def rating_correlations(
    ratings: Sequence[HumanRatingItem],
    scores: dict[str, float],
    aspects: Sequence[str],
    scores_from: str,
) -> RatingReport:
    """Spearman/Kendall between annotator scores and human scores, per aspect: pooled over
    all responses, and within each context (then averaged)."""
    scored = [r for r in ratings if r.item_id in scores]
    by_group: dict[str, list[HumanRatingItem]] = defaultdict(list)
    for r in scored:
        by_group[r.group_id].append(r)
    out: list[AspectCorrelation] = []
    for aspect in aspects:
        rows = [r for r in scored if aspect in r.scores]
        spearman, kendall = _rank_correlations(
            [scores[r.item_id] for r in rows], [r.scores[aspect] for r in rows]
        )
        within = [
            _rank_correlations(
                [scores[r.item_id] for r in group], [r.scores[aspect] for r in group]
            )[0]
            for group in by_group.values()
        ]
        within_valid = [w for w in within if w is not None]
        out.append(
            AspectCorrelation(
                aspect=aspect,
                n=len(rows),
                spearman=spearman,
                kendall=kendall,
                spearman_within_context=(
                    sum(within_valid) / len(within_valid) if within_valid else None
                ),
            )
        )
    return RatingReport(scores_from=scores_from, aspects=out)


def breakdown(
    items: Sequence[HumanPairwiseItem],
    samples: Sequence[Sequence[PairwiseAnnotation]],
    key: str,
) -> dict[str, AgreementMetrics]:
    """Agreement metrics per subset (``key="subset"``) or per group (``key="group"``)."""
    indices: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        name = getattr(item, key)
        if name is not None:
            indices[name].append(index)
    return {
        name: agreement_metrics(
            [items[i] for i in idx], [[sample[i] for i in idx] for sample in samples]
        )
        for name, idx in indices.items()
    }
