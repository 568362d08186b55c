"""Scores for generated responses: from a simfarm annotator or from a reward-model checkpoint.

Best-of-n, expert iteration and PPO all need "how good is this response to this instruction",
from one of two sources:

- a **pairwise persona** (any simfarm persona or pool, through
  :func:`simfarm.annotation.run.annotate`, so every verdict is cached and a rerun pays for
  nothing twice): either against a *reference* response (score = +1 win, 0 tie, -1 loss), or,
  for best-of-n, in a knockout tournament among the candidates themselves;
- a **reward model** trained by the ``reward_model`` recipe (a scalar head; score = its output).

simfarm has no rating (pointwise) persona yet; when one exists it becomes a third source here.
A failed annotation scores 0 (the neutral value) and is counted, never silently dropped: callers
report the count in their metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from simfarm.training.config import ModelSpec
from simfarm.types import PairwiseAnnotation, PairwiseItem


class ScorerSpec(BaseModel):
    """Where scores come from."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    kind: Literal["annotator", "reward_model"] = "annotator"
    """"annotator": a simfarm pairwise persona or pool judges each response; "reward_model":
    a checkpoint of the reward_model recipe scores it."""
    annotator: str = "longest"
    """Persona or pool id (or YAML path) when kind is "annotator"."""
    annotators_dirs: list[Path] = Field(default_factory=list)
    """Extra folders searched for persona files before the bundled annotators/."""
    base_url: str | None = None
    """Point the persona's backend at this OpenAI-compatible server instead."""
    backend_model: str | None = None
    """Replace the persona backend's model name."""
    reference: Literal["data", "initial_policy"] = "data"
    """What a response is judged against: the data's reference output ("data"), or the
    starting policy's greedy response to the same prompt, generated once per run
    ("initial_policy", for prompt-only data)."""
    reward_model: Path | None = Field(default=None, json_schema_extra={"input": True})
    """Checkpoint folder of a reward_model run (its checkpoint/) when kind is "reward_model"."""
    batch_size: int = Field(default=8, ge=1)
    """Responses per reward-model forward pass."""


class JudgeUsage(BaseModel):
    """What a recipe's judge calls cost in one run: requests sent, answers from the cache,
    dollars (summed over every :func:`~simfarm.annotation.run.annotate` call)."""

    model_config = ConfigDict(extra="forbid")

    annotations: int = 0
    """Verdicts asked for (cached or not)."""
    requests: int = 0
    """Model requests sent (retries included; 0 when everything came from the cache)."""
    cache_hits: int = 0
    cost_usd: float = 0.0
    """Spent by this run (an answer from the cache costs nothing now)."""
    cost_usd_total: float = 0.0
    """What these verdicts cost when they were first paid for, by this run or an earlier one
    (the cache keeps each answer's cost): a run killed and resumed reports its whole judge
    bill here, where ``cost_usd`` has only the resumed run's share."""

    def add(self, summary: Any) -> None:
        """Count one annotation run (its ``AnnotationSummary``)."""
        self.annotations += int(summary.n_items)
        self.requests += int(summary.requests_sent)
        self.cache_hits += int(summary.cache_hits)
        self.cost_usd += float(summary.cost_usd)
        self.cost_usd_total += float(summary.cost_usd_total)


@dataclass
class Scored:
    """Scores aligned with the responses, and how many could not be judged."""

    scores: list[float]
    n_failed: int


def preference_score(annotation: PairwiseAnnotation) -> float | None:
    """+1 when output_2 (the candidate) wins, -1 when output_1 (the reference) wins, 0 on a
    tie; probability-weighted judges give values in between. None when the annotation failed."""
    if annotation.preference is None:
        return None
    return 2.0 * (float(annotation.preference) - 1.5)


class AnnotatorScorer:
    """A simfarm persona or pool as a scorer (pairwise, cached through simfarm's cache)."""

    def __init__(self, spec: ScorerSpec) -> None:
        from simfarm.annotation.loader import load_annotator
        from simfarm.annotation.run import BackendOverrides

        self.spec = spec
        self.annotator = load_annotator(spec.annotator, list(spec.annotators_dirs) or None)
        options: dict[str, Any] = {"base_url": spec.base_url} if spec.base_url else {}
        self.overrides = BackendOverrides(model=spec.backend_model, options=options)
        self.usage = JudgeUsage()
        """Every judge call this scorer made (for the run's result and cost table)."""

    @property
    def id(self) -> str:
        return self.annotator.spec.id

    def judge(self, items: Sequence[PairwiseItem]) -> list[PairwiseAnnotation]:
        """Annotations aligned with ``items`` (failures included)."""
        from simfarm.annotation.run import annotate

        if not items:
            return []
        result = annotate(items, self.annotator, backend_overrides=self.overrides)
        self.usage.add(result.summary)
        return result.annotations

    def against_reference(
        self,
        instructions: Sequence[str],
        inputs: Sequence[str],
        responses: Sequence[str],
        references: Sequence[str],
    ) -> Scored:
        """Each response judged against its prompt's reference (reference is output_1)."""
        items = [
            PairwiseItem(
                instruction=instruction,
                input=input_,
                output_1=reference,
                output_2=response,
                generator_1="reference",
                generator_2="policy",
            )
            for instruction, input_, response, reference in zip(
                instructions, inputs, responses, references, strict=True
            )
        ]
        scores, failed = [], 0
        for annotation in self.judge(items):
            score = preference_score(annotation)
            failed += score is None
            scores.append(0.0 if score is None else score)
        return Scored(scores, failed)

    def tournament(
        self,
        instructions: Sequence[str],
        inputs: Sequence[str],
        candidates: Sequence[Sequence[str]],
    ) -> tuple[list[int], list[list[float]], int]:
        """A knockout tournament among each prompt's candidates; all prompts' matches of one
        round go to the annotator as one batch.

        Pairs are (0, 1), (2, 3), ... in sample order; an odd one out advances on a bye; a tie
        or a failed match goes to the lower sample index, so the result is deterministic and
        does not favour later samples. Returns (winner index per prompt, rounds survived per
        candidate (a bye counts as a round survived), failed matches): the winner has survived
        all ``ceil(log2 n)`` rounds, strictly more than anyone else.
        """
        alive = [list(range(len(c))) for c in candidates]
        wins = [[0.0] * len(c) for c in candidates]
        failed = 0
        while any(len(a) > 1 for a in alive):
            matches: list[tuple[int, int, int]] = []  # (prompt, first, second)
            for prompt, indices in enumerate(alive):
                matches.extend(
                    (prompt, indices[i], indices[i + 1]) for i in range(0, len(indices) - 1, 2)
                )
            items = [
                PairwiseItem(
                    instruction=instructions[p],
                    input=inputs[p],
                    output_1=candidates[p][a],
                    output_2=candidates[p][b],
                    generator_1=f"sample-{a}",
                    generator_2=f"sample-{b}",
                )
                for p, a, b in matches
            ]
            next_alive: list[list[int]] = [[] for _ in alive]
            for (prompt, first, second), annotation in zip(matches, self.judge(items), strict=True):
                score = preference_score(annotation)
                failed += score is None
                winner = second if score is not None and score > 0 else first
                wins[prompt][winner] += 1.0
                next_alive[prompt].append(winner)
            for prompt, indices in enumerate(alive):
                if len(indices) % 2 == 1 and len(indices) > 1:
                    next_alive[prompt].append(indices[-1])  # the bye: advances, counts
                    wins[prompt][indices[-1]] += 1.0
                next_alive[prompt].sort()
            alive = [n if len(a) > 1 else a for n, a in zip(next_alive, alive, strict=True)]
        return [a[0] for a in alive], wins, failed


class RewardModelScorer:
    """A checkpoint of the ``reward_model`` recipe as a scorer (scalar head over the policy's
    prompt format followed by the response, as the reward model was trained)."""

    def __init__(self, spec: ScorerSpec, model: ModelSpec) -> None:
        from simfarm.training.reward_model import load_reward_model

        assert spec.reward_model is not None, "scorer.reward_model is required"
        self.spec = spec
        self.model_spec = model
        # The base model comes from the checkpoint's own info file (it may differ from the policy).
        self.reward_model = load_reward_model(spec.reward_model)

    @property
    def id(self) -> str:
        return f"reward_model:{self.spec.reward_model}"

    def score(
        self, instructions: Sequence[str], inputs: Sequence[str], responses: Sequence[str]
    ) -> Scored:
        from simfarm.training.policy import format_prompt
        from simfarm.training.reward_model import score

        tokenizer = getattr(self.reward_model, "tokenizer", None)
        prompts = [
            format_prompt(
                tokenizer, instruction, input_, use_chat_template=self.model_spec.use_chat_template
            )
            for instruction, input_ in zip(instructions, inputs, strict=True)
        ]
        values = score(self.reward_model, prompts, list(responses), batch_size=self.spec.batch_size)
        return Scored([float(v) for v in values], 0)


ResponseScorer = Callable[[Sequence[str], Sequence[str], Sequence[str], Sequence[str]], Scored]
"""(instructions, inputs, responses, references) -> scores: the absolute scorer PPO and the
evaluation of best-of-n use (references are ignored by a reward model)."""


def build_response_scorer(
    spec: ScorerSpec, model: ModelSpec, device: str = "cpu"
) -> tuple[ResponseScorer, str, JudgeUsage]:
    """The absolute scorer for ``spec``, its id (for manifests) and the usage counter its
    judge calls add to (stays zero for a reward model). ``model`` is the policy's model spec:
    a reward model checkpoint that is a LoRA adapter sits on that base model."""
    if spec.kind == "reward_model":
        model_scorer = RewardModelScorer(spec, model)

        def by_model(
            instructions: Sequence[str],
            inputs: Sequence[str],
            responses: Sequence[str],
            references: Sequence[str],
        ) -> Scored:
            return model_scorer.score(instructions, inputs, responses)

        return by_model, model_scorer.id, JudgeUsage()
    annotator_scorer = AnnotatorScorer(spec)
    return annotator_scorer.against_reference, annotator_scorer.id, annotator_scorer.usage
