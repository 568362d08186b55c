"""Agreement metrics on annotations built here (no annotation engine involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simfarm.evaluation.human_sets import HumanPairwiseItem, find_human_set, load_human_set
from simfarm.evaluation.io import AnnotationFile
from simfarm.evaluation.run_validation import align_annotations
from simfarm.evaluation.validation import agreement_metrics, breakdown
from simfarm.types import PairwiseAnnotation, PairwiseItem


def _judge(item: PairwiseItem, preference: float | None, **extra) -> PairwiseAnnotation:
    return PairwiseAnnotation(**item.model_dump(), annotator="test", preference=preference, **extra)


def _longest(item: PairwiseItem) -> PairwiseAnnotation:
    """AlpacaEval's `longest` baseline, written out here: longer wins, equal lengths tie."""
    len_1, len_2 = len(item.output_1), len(item.output_2)
    return _judge(item, 1.5 if len_1 == len_2 else (2.0 if len_2 > len_1 else 1.0))


def test_pandalm_longest_and_human_ceiling(shared_data: Path) -> None:
    loaded = load_human_set(find_human_set("pandalm"), data_root=shared_data, warn=False)
    metrics = agreement_metrics(loaded.pairs, [[_longest(p.item) for p in loaded.pairs]])
    assert round(metrics.accuracy_with_ties, 1) == 61.1
    assert round(metrics.human_loo_ceiling, 1) == 92.0
    assert metrics.p_prefer_longer == 100.0
    assert metrics.bias == pytest.approx(100 - metrics.accuracy_with_ties)
    assert metrics.variance is None
    assert metrics.n_humans == 3 and metrics.n_items == 999


def _pair(labels: list[float], out_1: str = "a" * 50, out_2: str = "b") -> HumanPairwiseItem:
    return HumanPairwiseItem(
        item=PairwiseItem(instruction="i", output_1=out_1, output_2=out_2),
        human=labels,
        subset="s1" if len(labels) > 1 else "s2",
        group="g",
    )


def test_definitions_on_a_small_case() -> None:
    pairs = [
        _pair([1.0, 1.0, 2.0]),  # majority 1
        _pair([1.5, 1.5, 1.0]),  # majority tie
        _pair([1.0, 2.0]),  # even split: expected agreement 1/2 for any decisive verdict
        _pair([2.0]),
    ]
    first = [
        _judge(pairs[0].item, 1.0, position_consistent=True, cost_usd=0.002, latency_s=1.0),
        _judge(pairs[1].item, 1.5, position_consistent=False, cost_usd=0.002, latency_s=1.0),
        _judge(pairs[2].item, 2.0, cost_usd=0.002, latency_s=1.0),
        _judge(pairs[3].item, None, cost_usd=0.002, latency_s=1.0),  # failed
    ]
    second = [
        _judge(pairs[0].item, 2.0),
        _judge(pairs[1].item, 1.5),
        _judge(pairs[2].item, 2.0),
        _judge(pairs[3].item, 1.0),
    ]
    m = agreement_metrics(pairs, [first, second])
    assert m.n_failed == 1
    # with ties, over 7 valid verdicts: 1, 1, 0.5 | 0, 1, 0.5, 0
    assert m.accuracy_with_ties == pytest.approx(100 * 4 / 7)
    # decisive single-label majority: pairs 0 and 3 -> verdicts 1 (right), 2 (wrong), 1 (wrong)
    assert m.accuracy_without_ties == pytest.approx(100 / 3)
    assert m.n_without_ties == 2
    # human LOO, each human vs the others' majority: pair 0 -> .5 .5 0, pair 1 -> .5 .5 0,
    # pair 2 -> 0 0 (a single other human who disagrees); pair 3 has one human: no LOO
    loo = [0.5, 0.5, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0]
    assert m.human_loo_ceiling == pytest.approx(100 * sum(loo) / len(loo))
    assert m.position_consistency == 50.0 and m.n_position_checked == 2
    # output_1 is longer by > 30 characters in every pair: decisive verdicts for output_1
    assert m.p_prefer_longer == pytest.approx(100 * 2 / 5)
    assert m.variance is not None and m.bias is not None
    assert m.price_per_1000 == pytest.approx(1.0) and m.time_per_1000 == pytest.approx(500.0)
    by_subset = breakdown(pairs, [first, second], "subset")
    assert set(by_subset) == {"s1", "s2"}
    assert by_subset["s2"].n_items == 1


def test_variance_needs_samples_and_is_zero_for_a_deterministic_judge() -> None:
    pairs = [_pair([1.0]), _pair([2.0])]
    same = [_judge(p.item, 1.0) for p in pairs]
    assert agreement_metrics(pairs, [same, same]).variance == 0.0
    flip = [_judge(p.item, 2.0) for p in pairs]
    assert agreement_metrics(pairs, [same, flip]).variance == 100.0


def test_align_annotations_matches_by_content_in_either_order() -> None:
    pairs = [_pair([1.0], "x" * 40, "y"), _pair([2.0], "p", "q" * 40)]
    straight = _judge(pairs[0].item, 1.0)
    swapped_item = PairwiseItem(instruction="i", output_1="q" * 40, output_2="p")
    swapped = _judge(swapped_item, 1.0)  # output "q..." wins, i.e. pair 1's output_2
    stray = _judge(PairwiseItem(instruction="other", output_1="a", output_2="b"), 2.0)
    files = [AnnotationFile("f.jsonl", [straight, swapped, stray], [], [])]
    samples, notes = align_annotations(pairs, files)
    assert len(samples) == 1
    assert [a.preference for a in samples[0]] == [1.0, 2.0]
    assert any("match no pair" in n for n in notes)
    assert agreement_metrics(pairs, samples).accuracy_with_ties == 100.0


def test_undefined_kappa_is_none_without_raw_warnings() -> None:
    import warnings

    from simfarm.evaluation.validation import _kappa

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _kappa([2.0, 2.0, 2.0], [2.0, 2.0, 2.0]) is None
