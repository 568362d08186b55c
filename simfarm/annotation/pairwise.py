"""One persona judging pairs: prompt building, order randomisation, verdicts.

The pairwise kind of :class:`~simfarm.annotation.judge.Judge`. This module decides *what*
to ask and how to read the answer; :mod:`simfarm.annotation.run` decides when and through
which backend. Everything random here (shown order, label noise)
is drawn from ``random.Random`` seeded with a sha256 of the item's content and the persona
id, never Python's per-process salted ``hash()``, so reruns and other machines make the same
choices (AlpacaFarm's pool assignment was not reproducible for exactly that reason).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from simfarm.annotation.conversation import conversation_values
from simfarm.annotation.judge import (
    Judge,
    PlannedRequest,
    Reading,
    RunStats,
    seeded_random,
    seeded_rng,
)
from simfarm.annotation.loader import LoadedPersona
from simfarm.annotation.parsers import ParseError
from simfarm.annotation.persona import PairwisePersona
from simfarm.errors import ConfigError
from simfarm.types import (
    Completion,
    CompletionRequest,
    Failure,
    PairwiseAnnotation,
    PairwiseItem,
    RequestDraft,
)

__all__ = [
    "AnnotationSummary",
    "PairwiseJudge",
    "Verdict",
    "seeded_rng",
    "unswap",
]

SHOWN, SWAPPED = "shown", "swapped"
"""Slot names: the pair shown in its own order, or swapped."""


class AnnotationSummary(BaseModel):
    """What a pairwise run did: outcomes, failures by kind, cost and time."""

    model_config = ConfigDict(extra="forbid")

    annotator: str
    n_items: int
    n_annotated: int
    n_failed: int
    failures_by_kind: dict[str, int]
    n_output_1_wins: int
    n_output_2_wins: int
    n_ties: int
    requests_sent: int
    """HTTP/model requests made in this run, retries included (0 on a fully cached rerun)."""
    cache_hits: int
    cost_usd: float
    """Spent in this run (cached answers cost nothing now)."""
    cost_usd_total: float
    """What all these annotations cost when they were first made."""
    elapsed_s: float


@dataclass(kw_only=True)
class Verdict(Reading):
    """One order's reading, already mapped back to the item's own order."""

    swapped: bool
    preference: float | None = None
    probability: float | None = None
    """P(output_2 wins), for logprob judges."""


def unswap(preference: float, swapped: bool) -> float:
    """Map a preference in shown order back to the item's order (1 <-> 2, ties stay)."""
    return 3.0 - preference if swapped else preference


class PairwiseJudge(Judge[PairwiseItem, Verdict, PairwiseAnnotation, AnnotationSummary]):
    """A loaded pairwise persona, ready to build requests and read answers."""

    kind = "pairwise"

    def __init__(self, persona: LoadedPersona, pool: str | None = None) -> None:
        if not isinstance(persona.spec, PairwisePersona):
            raise ConfigError(f"{persona.path}: not a pairwise persona")
        self.persona = persona
        self.spec: PairwisePersona = persona.spec
        self.id = persona.spec.id
        self.pool = pool
        self.backend = persona.spec.backend
        self.template_digest = persona.template.digest if persona.template else None
        self.max_parse_attempts = persona.spec.max_parse_attempts
        self._blank = PairwiseAnnotation(
            instruction="",
            output_1="",
            generator_1="",
            output_2="",
            generator_2="",
            annotator=self.id,
            pool=pool,
        )

    def base_annotation(self, item: PairwiseItem, **fields: Any) -> PairwiseAnnotation:
        """This judge's record of ``item``, with ``fields`` (outcome, cost, ...) set.

        A copy of one validated blank record with every field given at once: every value
        comes from an already validated item, persona or completion, and copying skips
        both validation and pydantic's per-record default resolution (this runs once per
        judged pair, on the event loop: a fully cached rerun is mostly this)."""
        return self._blank.model_copy(
            update={
                "instruction": item.instruction,
                "input": item.input,
                "output_1": item.output_1,
                "generator_1": item.generator_1,
                "output_2": item.output_2,
                "generator_2": item.generator_2,
                "item_id": item.item_id,
                "conversation": item.conversation,
                **fields,
            }
        )

    def decide_without_model(self, item: PairwiseItem) -> PairwiseAnnotation | None:
        """The annotation when no model call is needed (rule persona, identical outputs,
        label noise), else None."""
        if item.output_1 == item.output_2:
            return self.base_annotation(item, preference=1.5)
        if self.spec.label_noise > 0:
            rng = seeded_rng("label_noise", self.id, item.content_digest())
            if rng.random() < 2 * self.spec.label_noise:
                return self.base_annotation(
                    item,
                    preference=float(rng.choice((1, 2))),
                    raw_completion="<label noise: fair coin>",
                )
        biased = self._biased(item)
        if biased is not None:
            return biased
        if self.spec.rule == "distilled":
            from simfarm.annotation.distilled import embedded_tokenizer, load_head, prompt_text

            assert self.spec.head is not None  # the persona validator guarantees it
            probability = load_head(self.spec.head).probability(
                embedded_tokenizer(),
                prompt_text(item.instruction, item.input),
                item.output_1,
                item.output_2,
            )
            return self.base_annotation(
                item, preference=1.0 + probability, preference_probability=probability
            )
        if self.spec.rule is not None:
            len_1, len_2 = len(item.output_1), len(item.output_2)
            longer_wins = self.spec.rule == "longest"
            if len_1 == len_2:
                preference = 1.5
            elif (len_2 > len_1) == longer_wins:
                preference = 2.0
            else:
                preference = 1.0
            return self.base_annotation(item, preference=preference)
        return None

    def _biased(self, item: PairwiseItem) -> PairwiseAnnotation | None:
        """The annotation a bias knob forces (position, then length), else None.

        Each knob has its own seeded draw over the item's content and the persona id, so
        turning one on never moves another's draws, and reruns make the same choices."""
        if self.spec.position_bias > 0:
            rng = seeded_rng("position_bias", self.id, item.content_digest())
            if rng.random() < self.spec.position_bias:
                swapped = self.orders(item)[0]
                return self.base_annotation(
                    item,
                    swapped=swapped,
                    preference=unswap(1.0, swapped),
                    raw_completion="<position bias: first shown>",
                )
        if self.spec.length_bias > 0 and len(item.output_1) != len(item.output_2):
            rng = seeded_rng("length_bias", self.id, item.content_digest())
            if rng.random() < self.spec.length_bias:
                longer = 2.0 if len(item.output_2) > len(item.output_1) else 1.0
                return self.base_annotation(
                    item, preference=longer, raw_completion="<length bias: longer>"
                )
        return None

    def plan(self, item: PairwiseItem) -> list[PlannedRequest]:
        """One request per shown order (drafts: built only if sent, see RequestDraft)."""
        return [
            PlannedRequest(SWAPPED if swapped else SHOWN, self.draft(item, swapped))
            for swapped in self.orders(item)
        ]

    def orders(self, item: PairwiseItem) -> list[bool]:
        """Which orders to show: ``[swapped?]``, or both in both-orders mode."""
        if self.spec.both_orders:
            return [False, True]
        if not self.spec.randomize_order:
            return [False]
        return [seeded_random("order", self.id, item.content_digest()) < 0.5]

    def request(self, item: PairwiseItem, swapped: bool) -> CompletionRequest:
        """The request that judges ``item`` in the given order."""
        return self.draft(item, swapped).build()

    def draft(self, item: PairwiseItem, swapped: bool) -> RequestDraft:
        """:meth:`request`'s content, not validated yet (see RequestDraft)."""
        assert self.persona.template is not None
        first, second = (
            (item.output_2, item.output_1) if swapped else (item.output_1, item.output_2)
        )
        values = {
            **conversation_values(item, self.persona.template.placeholders),
            "input": item.input,
            "output_1": first,
            "output_2": second,
            "persona": self.spec.persona_text,
        }
        return self.persona.template.draft(values, self.spec.decoding, self.spec.prompt_format)

    def read(self, item: PairwiseItem, planned: PlannedRequest, completion: Completion) -> Verdict:
        """Parse one completion; a parse failure becomes a Failure of kind ``parse``."""
        return self.read_verdict(completion, planned.slot == SWAPPED)

    def read_verdict(self, completion: Completion, swapped: bool) -> Verdict:
        if completion.failure is not None:
            return Verdict(swapped=swapped, completion=completion, failure=completion.failure)
        try:
            shown, p_second = self.spec.parser.parse(completion)
        except ParseError as error:
            failure = Failure(kind="parse", message=str(error))
            return Verdict(swapped=swapped, completion=completion, failure=failure)
        probability = None
        if p_second is not None:
            probability = 1.0 - p_second if swapped else p_second
        return Verdict(
            swapped=swapped,
            completion=completion,
            preference=unswap(shown, swapped),
            probability=probability,
        )

    def combine(self, item: PairwiseItem, readings: Mapping[str, Verdict]) -> PairwiseAnnotation:
        """One annotation from one verdict, or from both orders (mean preference)."""
        verdicts = list(readings.values())
        if (
            len(verdicts) == 1
            and verdicts[0].failure is None
            and verdicts[0].preference is not None
        ):
            return self._from_one_verdict(item, verdicts[0])
        return self._from_verdicts(item, verdicts)

    def _from_verdicts(self, item: PairwiseItem, verdicts: list[Verdict]) -> PairwiseAnnotation:
        """:meth:`combine` in general: any number of verdicts, failed ones included."""
        fields: dict[str, Any] = {
            "raw_completion": "\n---\n".join(v.completion.text for v in verdicts),
            "cost_usd": sum(v.completion.cost_usd for v in verdicts),
            "latency_s": sum(v.completion.latency_s for v in verdicts),
            "cached": all(v.completion.cached for v in verdicts),
            "swapped": verdicts[0].swapped if len(verdicts) == 1 else False,
        }
        failed = [v.failure for v in verdicts if v.failure is not None]
        if failed:
            return self.base_annotation(item, failure=failed[0], **fields)
        preferences = [v.preference for v in verdicts if v.preference is not None]
        fields["preference"] = sum(preferences) / len(preferences)
        probabilities = [v.probability for v in verdicts if v.probability is not None]
        if probabilities:
            fields["preference_probability"] = sum(probabilities) / len(probabilities)
        if len(verdicts) == 2:
            signs = [0 if p == 1.5 else (1 if p > 1.5 else -1) for p in preferences]
            fields["position_consistent"] = signs[0] == signs[1]
        return self.base_annotation(item, **fields)

    def _from_one_verdict(self, item: PairwiseItem, verdict: Verdict) -> PairwiseAnnotation:
        """:meth:`combine` of one readable verdict, the fields written out directly (the
        common case, once per judged pair: a fully cached rerun spent a tenth of its time
        in the general path's sums and joins over a one-element list). A test compares it
        with the general path."""
        completion = verdict.completion
        fields: dict[str, Any] = {
            "raw_completion": completion.text,
            "cost_usd": completion.cost_usd,
            "latency_s": completion.latency_s,
            "cached": completion.cached,
            "swapped": verdict.swapped,
        }
        assert verdict.preference is not None
        fields["preference"] = float(verdict.preference)  # the general path's mean of one
        if verdict.probability is not None:
            fields["preference_probability"] = float(verdict.probability)
        return self.base_annotation(item, **fields)

    @classmethod
    def summarise(
        cls, annotator: str, records: Sequence[PairwiseAnnotation], stats: RunStats
    ) -> AnnotationSummary:
        failures = Counter(a.failure.kind for a in records if a.failure is not None)
        preferences = [a.preference for a in records if a.preference is not None]
        return AnnotationSummary(
            annotator=annotator,
            n_items=len(records),
            n_annotated=len(preferences),
            n_failed=sum(failures.values()),
            failures_by_kind={str(kind): n for kind, n in failures.items()},
            n_output_1_wins=sum(p < 1.5 for p in preferences),
            n_output_2_wins=sum(p > 1.5 for p in preferences),
            n_ties=sum(p == 1.5 for p in preferences),
            requests_sent=stats.requests_sent,
            cache_hits=stats.cache_hits,
            cost_usd=stats.cost_usd,
            cost_usd_total=sum(a.cost_usd for a in records),
            elapsed_s=stats.elapsed_s,
        )
