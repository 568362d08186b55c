"""Scoring ``data.test_annotations`` with heads that never trained on the systems they score.

A test file is meant to measure the judge on systems it never saw, but public verdict pools
overlap: three of the seven systems GPT-4-turbo judged in ``../shared/data/alpaca_eval/
annotations`` (alpaca-7b, claude-2, gpt-3.5-turbo-1106) are also among the 39 GPT-4 judged,
with the same outputs. Scored by the shipped head, those systems are not held out, and the
figures flatter the judge (measured on the shipped GPT-4 head: Spearman over the 7 systems
0.929 with the overlap, 0.857 without). So each test system that is also a training system
(``generator_2``) is scored by a head refitted without that system's pairs, exactly as a
held-out fold is fitted; the others by the shipped head. The shipped head's figures on every
test system are kept beside them (``shipped_head``), so the difference is on record.

A test system's outputs can also sit in training pairs it is not ``generator_2`` of: as a
pool's reference (text_davinci_003 is the GPT-4 pool's reference and one of GPT-4-turbo's judged
systems, though its two files hold mostly different texts), or as a short answer several
systems give alike. Leaving those pairs out could leave out a whole pool, so the distinct
outputs found are counted (``outputs_in_training``), not removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from simfarm.training.verdicts import Verdict


class PairScorer(Protocol):
    """What scores a pair: the persona's :class:`~simfarm.annotation.distilled.DistilledHead`."""

    def probability(self, tokenizer: Any, prompt: str, output_1: str, output_2: str) -> float: ...


def overlapping_systems(test: Sequence[Verdict], training_systems: Sequence[str]) -> list[str]:
    """Test systems that are also training systems (by ``generator_2``)."""
    return sorted({v.generator_2 for v in test} & set(training_systems))


def outputs_in_training(test: Sequence[Verdict], training: Sequence[Verdict]) -> dict[str, int]:
    """:func:`shared_outputs` of the test systems' outputs (``output_2``)."""
    return shared_outputs(((v.generator_2, v.output_2) for v in test), training)


def shared_outputs(
    outputs: Iterable[tuple[str, str]], training: Sequence[Verdict]
) -> dict[str, int]:
    """Per system of ``(system, output)``, how many of its distinct non-empty outputs appear
    word for word in training pairs of *other* systems (as a pool's reference, or a short
    answer several systems give alike); systems with none are left out."""
    in_pairs: dict[str, set[str]] = {}
    for verdict in training:
        for text in (verdict.output_1, verdict.output_2):
            in_pairs.setdefault(text, set()).add(verdict.generator_2)
    seen: dict[str, set[str]] = {}
    for system, text in outputs:
        if text.strip() and in_pairs.get(text, set()) - {system}:
            seen.setdefault(system, set()).add(text)
    return {system: len(texts) for system, texts in sorted(seen.items())}


def unseen_probabilities(
    test: Sequence[Verdict],
    tokenizer: Any,
    shipped: PairScorer,
    head_without: Callable[[str], PairScorer],
    overlap: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """(P(output 2 wins) by a head that never trained on the pair's system, the same by the
    shipped head) for every test verdict; ``head_without(system)`` is called once per
    system in ``overlap``."""
    import numpy as np

    shipped_prob = np.array(
        [shipped.probability(tokenizer, v.prompt, v.output_1, v.output_2) for v in test]
    )
    prob = shipped_prob.copy()
    for system in overlap:
        head = head_without(system)
        for i, v in enumerate(test):
            if v.generator_2 == system:
                prob[i] = head.probability(tokenizer, v.prompt, v.output_1, v.output_2)
    return prob, shipped_prob
