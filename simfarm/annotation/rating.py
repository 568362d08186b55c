"""Ratings: one output scored on declared aspects, each on its own scale, with a short
rationale, and an overall score (UltraFeedback / HelpSteer2 style).

The rating kind of :class:`~simfarm.annotation.judge.Judge`: it builds one request per
item and reads the answer; the run (:mod:`simfarm.annotation.run`) does caching, retries
and failures. An answer with a missing or out-of-range score is unreadable (``parse``):
retried, and never cached as an answer. Where the backend returns the alternatives of each
generated token (``logprob_scores``), each score also gets its expectation over the
score-token distribution (G-Eval style), a finer signal than the one sampled digit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from simfarm.annotation.feedback_records import FeedbackSummary, RatingRecord, SingleItem
from simfarm.annotation.feedback_specs import RatingPersona, Scale
from simfarm.annotation.judge import Judge, PlannedRequest, Reading, RunStats
from simfarm.annotation.loader import LoadedPersona
from simfarm.annotation.parsers import ParseError
from simfarm.errors import ConfigError
from simfarm.types import Completion, CompletionRequest, Failure, RequestDraft, TokenLogprob

__all__ = ["RatingJudge", "RatingReading", "expected_score", "parse_rating"]

OVERALL = "overall"
_SLOT = "rating"


@dataclass(kw_only=True)
class RatingReading(Reading):
    scores: dict[str, float] = field(default_factory=dict)
    rationales: dict[str, str] = field(default_factory=dict)
    expected: dict[str, float] = field(default_factory=dict)


def _line_pattern(name: str) -> re.Pattern[str]:
    """``<name>: <score>[/<max>] [- rationale]`` on its own line; markdown bold, bullets and
    a parenthesised scale after the name are tolerated, case is not significant."""
    words = r"[ _-]".join(re.escape(part) for part in name.split("_"))
    return re.compile(
        rf"^[ \t>*#-]*{words}[ \t*]*(?:\([^)\n]*\))?[ \t*]*[:=][ \t*]*"
        r"(?P<score>-?\d+(?:\.\d+)?)(?:[ \t]*/[ \t]*\d+)?[ \t*]*(?:[-\u2013\u2014:|,.][ \t]*)?"
        r"(?P<rationale>[^\n]*)$",
        re.IGNORECASE | re.MULTILINE,
    )


def parse_rating(
    text: str, scales: Mapping[str, Scale]
) -> tuple[dict[str, float], dict[str, str], dict[str, int]]:
    """Scores, rationales and each score's character offset in ``text``, per name in
    ``scales`` (aspects, and ``overall`` when asked). Raises :class:`ParseError` naming the
    first missing or out-of-range score."""
    scores: dict[str, float] = {}
    rationales: dict[str, str] = {}
    offsets: dict[str, int] = {}
    for name, scale in scales.items():
        match = _line_pattern(name).search(text)
        if match is None:
            raise ParseError(f"no `{name}: <score>` line in {text[:160]!r}")
        value = float(match["score"])
        if not scale.contains(value):
            raise ParseError(f"{name}: {match['score']} is outside its scale {scale.describe()}")
        scores[name] = value
        rationales[name] = match["rationale"].strip()
        offsets[name] = match.start("score")
    return scores, rationales, offsets


def expected_score(
    logprobs: Sequence[TokenLogprob], text: str, offset: int, written: str, scale: Scale
) -> float | None:
    """The expectation of the score over the alternatives of the token that wrote it.

    The token is found by its character offset in the generated ``text`` (the tokens spell
    it); only alternatives that are whole in-scale integers count (renormalised). None when
    the score is not a token of its own there (``10`` split as ``1``, ``0``), or no
    alternative is a score."""
    position = 0
    for entry in logprobs:
        end = position + len(entry.token)
        if position <= offset < end:
            if entry.token.strip() != written:
                return None
            candidates = dict(entry.top_logprobs)
            candidates.setdefault(entry.token, entry.logprob)
            weights: dict[int, float] = {}
            for token, logprob in candidates.items():
                stripped = token.strip()
                if stripped.isdigit() and scale.contains(int(stripped)):
                    value = int(stripped)
                    weights[value] = weights.get(value, 0.0) + math.exp(logprob)
            total = sum(weights.values())
            if total == 0.0:
                return None
            return sum(v * w for v, w in weights.items()) / total
        position = end
    return None


class RatingJudge(Judge[SingleItem, RatingReading, RatingRecord, FeedbackSummary]):
    """A loaded rating persona, ready to build requests and read answers."""

    kind = "rating"

    def __init__(self, persona: LoadedPersona, pool: str | None = None) -> None:
        if not isinstance(persona.spec, RatingPersona) or persona.template is None:
            raise ConfigError(f"{persona.path}: not a rating persona")
        self.persona = persona
        self.spec: RatingPersona = persona.spec
        self.template = persona.template
        self.id = self.spec.id
        self.pool = pool
        self.backend = self.spec.backend
        self.template_digest = persona.template.digest
        self.max_parse_attempts = self.spec.max_parse_attempts
        self.scales: dict[str, Scale] = {a.name: a.scale for a in self.spec.aspects}
        if self.spec.overall is not None:
            self.scales[OVERALL] = self.spec.overall

    def plan(self, item: SingleItem) -> list[PlannedRequest]:
        return [PlannedRequest(_SLOT, self.draft(item))]

    def request(self, item: SingleItem) -> CompletionRequest:
        """The request that rates ``item``."""
        return self.draft(item).build()

    def draft(self, item: SingleItem) -> RequestDraft:
        """:meth:`request`'s content, validated only if it is sent (see RequestDraft)."""
        aspects = "\n".join(
            f"- {a.name} ({a.scale.describe()}): {a.description}".rstrip(": ")
            for a in self.spec.aspects
        )
        answer = [f"{a.name}: <{a.scale.describe()}> - <rationale>" for a in self.spec.aspects]
        if self.spec.overall is not None:
            answer.append(f"{OVERALL}: <{self.spec.overall.describe()}>")
        values = {
            "instruction": item.instruction,
            "input": item.input,
            "output": item.output,
            "reference": item.reference or "",
            "persona": self.spec.persona_text,
            "aspects": aspects,
            "answer_format": "\n".join(answer),
        }
        spec = self.spec
        return self.template.draft(values, spec.decoding, spec.prompt_format, spec.prefill)

    def read(
        self, item: SingleItem, planned: PlannedRequest, completion: Completion
    ) -> RatingReading:
        if completion.failure is not None:
            return RatingReading(completion=completion, failure=completion.failure)
        answer = self.spec.prefill + completion.text
        try:
            scores, rationales, offsets = parse_rating(answer, self.scales)
        except ParseError as error:
            failure = Failure(kind="parse", message=str(error))
            return RatingReading(completion=completion, failure=failure)
        expected: dict[str, float] = {}
        if self.spec.logprob_scores and completion.logprobs:
            for name, at in offsets.items():
                offset = at - len(self.spec.prefill)  # in the generated text
                if offset < 0:
                    continue
                written = answer[at:].split(maxsplit=1)[0].split("/")[0].rstrip("*.,-")
                value = expected_score(
                    completion.logprobs, completion.text, offset, written, self.scales[name]
                )
                if value is not None:
                    expected[name] = value
        return RatingReading(
            completion=completion, scores=scores, rationales=rationales, expected=expected
        )

    def _mean(self, scores: Mapping[str, float]) -> float:
        aspects = self.spec.aspects
        if len({(a.scale.min, a.scale.max) for a in aspects}) == 1:
            return sum(scores[a.name] for a in aspects) / len(aspects)
        return sum(
            (scores[a.name] - a.scale.min) / (a.scale.max - a.scale.min) for a in aspects
        ) / len(aspects)

    def combine(self, item: SingleItem, readings: Mapping[str, RatingReading]) -> RatingRecord:
        reading = readings[_SLOT]
        completion = reading.completion
        record = RatingRecord(
            instruction=item.instruction,
            input=item.input,
            output=item.output,
            generator=item.generator,
            item_id=item.item_id,
            annotator=self.id,
            pool=self.pool,
            raw_completion=self.spec.prefill + completion.text if completion.ok else None,
            cost_usd=completion.cost_usd,
            latency_s=completion.latency_s,
            cached=completion.cached,
            failure=reading.failure,
        )
        if reading.failure is not None:
            return record
        aspect_scores = {a.name: reading.scores[a.name] for a in self.spec.aspects}
        record.scores = aspect_scores
        record.rationales = {a.name: reading.rationales[a.name] for a in self.spec.aspects}
        overall = reading.scores.get(OVERALL)
        record.overall = overall if overall is not None else self._mean(aspect_scores)
        if reading.expected:
            record.expected_scores = dict(reading.expected)
        expected_overall = reading.expected.get(OVERALL)
        record.score = expected_overall if expected_overall is not None else record.overall
        return record

    @classmethod
    def summarise(
        cls, annotator: str, records: Sequence[RatingRecord], stats: RunStats
    ) -> FeedbackSummary:
        return FeedbackSummary.of(cls.kind, annotator, records, stats)
