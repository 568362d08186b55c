"""Items and records of the single-output feedback kinds (ratings, critiques), and the one
summary they share. Written to annotation files like pairwise records (one JSON object per
line), so every field here is part of the file format."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from simfarm.annotation.judge import RunStats
from simfarm.types import Failure, Preference, Record, stable_digest


class SingleItem(Record):
    """One output to judge on its own (a rating, an absolute critique)."""

    instruction: str
    input: str = ""
    output: str
    generator: str = "model"
    reference: str | None = None
    """A reference answer the judge may compare against (critiques); None: none given."""
    item_id: str | None = None

    def content_digest(self) -> str:
        """Digest of what is judged (not the generator): seeds per-item draws."""
        return stable_digest([self.instruction, self.input, self.output, self.reference])


class RatingRecord(Record):
    """One output's ratings: a score and rationale per aspect, and an overall score."""

    instruction: str
    input: str = ""
    output: str
    generator: str
    item_id: str | None = None
    annotator: str
    pool: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    """Aspect -> the score the judge wrote (on that aspect's scale)."""
    expected_scores: dict[str, float] | None = None
    """Aspect (and ``overall``) -> expected score over the score-token distribution, for
    personas with ``logprob_scores`` where the backend returned the score token's
    alternatives; None otherwise."""
    rationales: dict[str, str] = Field(default_factory=dict)
    """Aspect -> the judge's short rationale (may be empty)."""
    overall: float | None = None
    """The judge's overall score, or the mean of the aspects (persona ``overall: null``)."""
    score: float | None = None
    """The one number per output (``overall``; the expected overall when computed), so a
    rating file works wherever ``(item_id, score)`` records are read."""
    raw_completion: str | None = None
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False
    failure: Failure | None = None


class CritiqueRecord(Record):
    """An absolute critique: free text against a rubric, then a score on its scale."""

    instruction: str
    input: str = ""
    output: str
    generator: str
    reference: str | None = None
    item_id: str | None = None
    annotator: str
    pool: str | None = None
    rubric: str
    """The rubric's id."""
    critique: str | None = None
    """The judge's natural-language feedback (everything before ``[RESULT]``)."""
    score: float | None = None
    raw_completion: str | None = None
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False
    failure: Failure | None = None


class RelativeCritiqueRecord(Record):
    """A relative critique of two outputs, then a verdict (alpaca_eval preference)."""

    instruction: str
    input: str = ""
    output_1: str
    generator_1: str
    output_2: str
    generator_2: str
    item_id: str | None = None
    annotator: str
    pool: str | None = None
    rubric: str
    critique: str | None = None
    """The judge's comparison, with the outputs named as shown (see ``swapped``)."""
    preference: Preference | None = None
    """1 = output_1 wins, 2 = output_2 wins (already mapped back from the shown order)."""
    swapped: bool = False
    """The outputs were shown as B, A (the critique's "A" is then ``output_2``)."""
    raw_completion: str | None = None
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False
    failure: Failure | None = None


class _Scored(Protocol):
    @property
    def failure(self) -> Failure | None: ...
    @property
    def cost_usd(self) -> float: ...


class FeedbackSummary(BaseModel):
    """What a rating or critique run did: outcomes, failures by kind, cost and time."""

    model_config = ConfigDict(extra="forbid")

    annotator: str
    kind: str
    n_items: int
    n_annotated: int
    n_failed: int
    failures_by_kind: dict[str, int]
    mean_score: float | None
    """Mean ``score`` (ratings, absolute critiques) or preference (relative critiques)."""
    requests_sent: int
    cache_hits: int
    cost_usd: float
    cost_usd_total: float
    elapsed_s: float

    @classmethod
    def of(
        cls, kind: str, annotator: str, records: Sequence[_Scored], stats: RunStats
    ) -> FeedbackSummary:
        failures = Counter(r.failure.kind for r in records if r.failure is not None)
        values = [
            float(v)
            for r in records
            if (v := getattr(r, "score", getattr(r, "preference", None))) is not None
        ]
        return cls(
            annotator=annotator,
            kind=kind,
            n_items=len(records),
            n_annotated=len(records) - sum(failures.values()),
            n_failed=sum(failures.values()),
            failures_by_kind={str(k): n for k, n in failures.items()},
            mean_score=sum(values) / len(values) if values else None,
            requests_sent=stats.requests_sent,
            cache_hits=stats.cache_hits,
            cost_usd=stats.cost_usd,
            cost_usd_total=sum(r.cost_usd for r in records),
            elapsed_s=stats.elapsed_s,
        )
