"""Likelihood annotators: pairwise verdicts from a model's log-probabilities, no judge prompt.

Every request is a *scoring* request (a raw prompt, ``max_tokens: 0``, ``logprobs``): the
backend returns the log-probability of each of the prompt's own tokens, and the score of a
text is their sum. Differences of such sums are conditional log-probabilities:

- follow-up likelihood: ``S(context + output + positive) - S(context + output + negative)``
  = log P(positive | ...) - log P(negative | ...), the shared prefix cancelling;
- response likelihood: ``S(context + output) - S(context)`` = log P(output | context)
  (``per_token``: divided by the output's token count).

Each scored text is its own cached request, so the context of a pair is scored once for
both outputs, and identical texts across items are scored once. The records are ordinary
pairwise annotations (``raw_completion`` holds the two scores).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from simfarm.annotation.conversation import conversation_values
from simfarm.annotation.judge import Judge, PlannedRequest, Reading, RunStats
from simfarm.annotation.likelihood_persona import LikelihoodPersona
from simfarm.annotation.loader import LoadedPersona
from simfarm.annotation.pairwise import AnnotationSummary, PairwiseJudge
from simfarm.errors import ConfigError
from simfarm.types import (
    Completion,
    CompletionRequest,
    DecodingParams,
    Failure,
    PairwiseAnnotation,
    PairwiseItem,
    stable_digest,
)

__all__ = ["LikelihoodJudge", "calibrate_tie_band", "verdict"]

SCORING = DecodingParams(max_tokens=0, logprobs=True)
"""A scoring request: no new tokens, the prompt's own log-probabilities."""


@dataclass(kw_only=True)
class Score(Reading):
    total: float = 0.0
    """Sum of the token log-probabilities of the scored text."""
    tokens: int = 0


def verdict(score_1: float, score_2: float, tie_band: float) -> float:
    """1 or 2 for the higher score, 1.5 when they differ by at most ``tie_band``."""
    difference = score_2 - score_1
    # Equal scores summed over different token sequences differ by rounding (~1e-12).
    if abs(difference) <= tie_band + 1e-9:
        return 1.5
    return 2.0 if difference > 0 else 1.0


def calibrate_tie_band(differences: Sequence[float], human_tie_rate: float) -> float:
    """The tie band under which the predicted tie rate equals the humans' tie rate: the
    ``human_tie_rate`` quantile of the absolute score differences (0 when humans never
    tie)."""
    if not differences or human_tie_rate <= 0:
        return 0.0
    ordered = sorted(abs(d) for d in differences)
    index = min(len(ordered) - 1, max(0, math.ceil(human_tie_rate * len(ordered)) - 1))
    return ordered[index]


class LikelihoodJudge(Judge[PairwiseItem, Score, PairwiseAnnotation, AnnotationSummary]):
    """A loaded likelihood persona."""

    kind = "likelihood"

    def __init__(self, persona: LoadedPersona, pool: str | None = None) -> None:
        if not isinstance(persona.spec, LikelihoodPersona):
            raise ConfigError(f"{persona.path}: not a likelihood persona")
        self.spec: LikelihoodPersona = persona.spec
        self.id = self.spec.id
        self.pool = pool
        self.backend = self.spec.backend
        self.max_parse_attempts = 1
        self.template_digest = stable_digest(
            [
                "likelihood-v1",
                self.spec.method,
                self.spec.context_template,
                self.spec.positive_follow_up,
                self.spec.negative_follow_up,
            ]
        )

    def _context(self, item: PairwiseItem) -> str:
        # A multi-turn item's earlier turns go where the instruction goes (never dropped).
        values = {**conversation_values(item, set()), "input": item.input}
        # One pass: text that comes in through a placeholder is never substituted again.
        return re.sub(
            r"\{(instruction|input)\}", lambda m: values[m[1]], self.spec.context_template
        )

    @staticmethod
    def _ask(text: str) -> CompletionRequest:
        return CompletionRequest(prompt=text, params=SCORING)

    def decide_without_model(self, item: PairwiseItem) -> PairwiseAnnotation | None:
        if item.output_1 != item.output_2:
            return None
        annotation = self._base(item)
        annotation.preference = 1.5
        return annotation

    def plan(self, item: PairwiseItem) -> list[PlannedRequest]:
        context = self._context(item)
        outputs = {"1": item.output_1, "2": item.output_2}
        if self.spec.method == "follow_up":
            return [
                PlannedRequest(f"{n}_{sign}", self._ask(f"{context} {output}{follow}"), "follow_up")
                for n, output in outputs.items()
                for sign, follow in (
                    ("positive", self.spec.positive_follow_up),
                    ("negative", self.spec.negative_follow_up),
                )
            ]
        return [
            PlannedRequest("context", self._ask(context), "response"),
            *(
                PlannedRequest(n, self._ask(f"{context} {output}"), "response")
                for n, output in outputs.items()
            ),
        ]

    def read(self, item: PairwiseItem, planned: PlannedRequest, completion: Completion) -> Score:
        if completion.failure is not None:
            return Score(completion=completion, failure=completion.failure)
        if not completion.logprobs:
            failure = Failure(
                kind="parse",
                message="the backend returned no prompt log-probabilities (likelihood "
                "annotators need a local backend, or a completions endpoint with `echo`)",
            )
            return Score(completion=completion, failure=failure)
        if completion.completion_tokens:
            failure = Failure(
                kind="parse",
                message=f"the backend generated {completion.completion_tokens} token(s) "
                "instead of scoring the prompt (does it honour `echo` with `max_tokens: 0`?)",
            )
            return Score(completion=completion, failure=failure)
        return Score(
            completion=completion,
            total=sum(t.logprob for t in completion.logprobs),
            tokens=len(completion.logprobs),
        )

    def scores(self, readings: Mapping[str, Score]) -> tuple[float, float]:
        if self.spec.method == "follow_up":
            first, second = (
                readings[f"{n}_positive"].total - readings[f"{n}_negative"].total
                for n in ("1", "2")
            )
            return first, second
        context = readings["context"]
        found = []
        for n in ("1", "2"):
            reading = readings[n]
            value = reading.total - context.total
            if self.spec.per_token:
                value /= max(1, reading.tokens - context.tokens)
            found.append(value)
        return found[0], found[1]

    def _base(self, item: PairwiseItem) -> PairwiseAnnotation:
        return PairwiseAnnotation.model_construct(
            instruction=item.instruction,
            input=item.input,
            output_1=item.output_1,
            generator_1=item.generator_1,
            output_2=item.output_2,
            generator_2=item.generator_2,
            item_id=item.item_id,
            conversation=item.conversation,
            annotator=self.id,
            pool=self.pool,
        )

    def combine(self, item: PairwiseItem, readings: Mapping[str, Score]) -> PairwiseAnnotation:
        annotation = self._base(item)
        done = list(readings.values())
        annotation.cost_usd = sum(r.completion.cost_usd for r in done)
        annotation.latency_s = sum(r.completion.latency_s for r in done)
        annotation.cached = all(r.completion.cached for r in done)
        failures = [r.failure for r in done if r.failure is not None]
        if failures:
            annotation.failure = failures[0]
            return annotation
        first, second = self.scores(readings)
        annotation.preference = verdict(first, second, self.spec.tie_band)
        annotation.raw_completion = f"<{self.spec.method} score_1={first:.4f} score_2={second:.4f}>"
        return annotation

    @classmethod
    def summarise(
        cls, annotator: str, records: Sequence[PairwiseAnnotation], stats: RunStats
    ) -> AnnotationSummary:
        return PairwiseJudge.summarise(annotator, records, stats)
