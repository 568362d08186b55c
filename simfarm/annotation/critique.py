"""Critiques (Prometheus style): natural-language feedback against a rubric, then a score.

Two judges of the ``critique`` kind. :class:`CritiqueJudge` (``mode: absolute``) critiques
one output against the rubric and an optional reference answer and ends with
``[RESULT] <score>`` on the rubric's scale. :class:`RelativeCritiqueJudge`
(``mode: relative``) compares two outputs (shown in a seeded order) and ends with
``[RESULT] A`` or ``B``. The critique - everything the judge wrote before ``[RESULT]`` - is a
field of the record, so recipes can learn from the text, not only the score.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from simfarm.annotation.feedback_records import (
    CritiqueRecord,
    FeedbackSummary,
    RelativeCritiqueRecord,
    SingleItem,
)
from simfarm.annotation.feedback_specs import CritiquePersona, Rubric
from simfarm.annotation.judge import (
    Judge,
    PlannedRequest,
    Reading,
    RunStats,
    seeded_random,
)
from simfarm.annotation.loader import LoadedPersona
from simfarm.annotation.pairwise import unswap
from simfarm.annotation.parsers import ParseError
from simfarm.annotation.rubric import find_rubric, load_rubric
from simfarm.annotation.template import PromptTemplate
from simfarm.errors import ConfigError
from simfarm.types import (
    Completion,
    Failure,
    PairwiseItem,
    RequestDraft,
    stable_digest,
)

__all__ = ["CritiqueJudge", "CritiqueReading", "RelativeCritiqueJudge", "critique_judge"]

_RESULT = re.compile(r"\[\s*RESULT\s*\]\s*[:\-]?\s*\(?\s*(?P<value>[^\s)\].,]+)", re.IGNORECASE)
_FEEDBACK_PREFIX = re.compile(r"^\s*\**\s*feedback\s*\**\s*:\s*", re.IGNORECASE)


@dataclass(kw_only=True)
class CritiqueReading(Reading):
    critique: str = ""
    value: str = ""
    """What followed the last ``[RESULT]`` (a score, or ``A``/``B``)."""


def split_critique(text: str) -> tuple[str, str]:
    """(critique, result) of an answer: the result is what follows its last ``[RESULT]``."""
    matches = list(_RESULT.finditer(text))
    if not matches:
        raise ParseError(f"no `[RESULT] ...` in {text[-160:]!r}")
    last = matches[-1]
    critique = _FEEDBACK_PREFIX.sub("", text[: last.start()]).strip()
    if not critique:
        raise ParseError("the answer has a [RESULT] but no critique before it")
    return critique, last["value"]


class _CritiqueBase:
    """What both modes share: the persona, its template and rubric."""

    def _setup(self, persona: LoadedPersona, pool: str | None) -> tuple[CritiquePersona, Rubric]:
        spec = persona.spec
        if not isinstance(spec, CritiquePersona) or persona.template is None:
            raise ConfigError(f"{persona.path}: not a critique persona")
        rubric_path = find_rubric(spec.rubric, persona.path)
        rubric = load_rubric(rubric_path)
        self.persona = persona
        self.prefill = spec.prefill
        self.template: PromptTemplate = persona.template
        # The rubric is part of the prompt's recipe: it enters every cache key.
        self.template_digest: str | None = stable_digest(
            [persona.template.digest, rubric.model_dump(mode="json")]
        )
        return spec, rubric

    def _request(self, spec: CritiquePersona, values: dict[str, str]) -> RequestDraft:
        return self.template.draft(values, spec.decoding, spec.prompt_format, spec.prefill)

    def _reading(self, completion: Completion) -> tuple[str, str] | Failure:
        if completion.failure is not None:
            return completion.failure
        try:
            return split_critique(self.prefill + completion.text)
        except ParseError as error:
            return Failure(kind="parse", message=str(error))


class CritiqueJudge(
    _CritiqueBase, Judge[SingleItem, CritiqueReading, CritiqueRecord, FeedbackSummary]
):
    """Absolute mode: one output, the rubric, an optional reference -> critique, score."""

    kind = "critique"

    def __init__(self, persona: LoadedPersona, pool: str | None = None) -> None:
        self.spec, self.rubric = self._setup(persona, pool)
        self.id, self.pool, self.backend = self.spec.id, pool, self.spec.backend
        self.max_parse_attempts = self.spec.max_parse_attempts

    def plan(self, item: SingleItem) -> list[PlannedRequest]:
        values = {
            "instruction": item.instruction,
            "input": item.input,
            "output": item.output,
            "reference": item.reference or "(no reference answer given)",
            "rubric": self.rubric.render(),
            "scale": self.rubric.scale.describe(),
            "persona": self.spec.persona_text,
        }
        return [PlannedRequest("critique", self._request(self.spec, values))]

    def read(
        self, item: SingleItem, planned: PlannedRequest, completion: Completion
    ) -> CritiqueReading:
        read = self._reading(completion)
        if isinstance(read, Failure):
            return CritiqueReading(completion=completion, failure=read)
        critique, value = read
        scale = self.rubric.scale
        try:
            score = float(value)
        except ValueError:
            score = float("nan")
        if not scale.contains(score):
            message = f"[RESULT] {value!r} is not a score on the rubric's {scale.describe()}"
            return CritiqueReading(
                completion=completion, failure=Failure(kind="parse", message=message)
            )
        return CritiqueReading(completion=completion, critique=critique, value=value)

    def combine(self, item: SingleItem, readings: Mapping[str, CritiqueReading]) -> CritiqueRecord:
        reading = readings["critique"]
        completion = reading.completion
        ok = reading.failure is None
        return CritiqueRecord(
            instruction=item.instruction,
            input=item.input,
            output=item.output,
            generator=item.generator,
            reference=item.reference,
            item_id=item.item_id,
            annotator=self.id,
            pool=self.pool,
            rubric=self.rubric.id,
            critique=reading.critique if ok else None,
            score=float(reading.value) if ok else None,
            raw_completion=completion.text if completion.ok else None,
            cost_usd=completion.cost_usd,
            latency_s=completion.latency_s,
            cached=completion.cached,
            failure=reading.failure,
        )

    @classmethod
    def summarise(
        cls, annotator: str, records: Sequence[CritiqueRecord], stats: RunStats
    ) -> FeedbackSummary:
        return FeedbackSummary.of(cls.kind, annotator, records, stats)


@dataclass(kw_only=True)
class _RelativeReading(CritiqueReading):
    swapped: bool = False


class RelativeCritiqueJudge(
    _CritiqueBase,
    Judge[PairwiseItem, _RelativeReading, RelativeCritiqueRecord, FeedbackSummary],
):
    """Relative mode: two outputs (seeded shown order) -> critique, then ``A`` or ``B``."""

    kind = "critique"

    def __init__(self, persona: LoadedPersona, pool: str | None = None) -> None:
        self.spec, self.rubric = self._setup(persona, pool)
        self.id, self.pool, self.backend = self.spec.id, pool, self.spec.backend
        self.max_parse_attempts = self.spec.max_parse_attempts

    def _swapped(self, item: PairwiseItem) -> bool:
        if not self.spec.randomize_order:
            return False
        return seeded_random("order", self.id, item.content_digest()) < 0.5

    def plan(self, item: PairwiseItem) -> list[PlannedRequest]:
        swapped = self._swapped(item)
        first, second = (
            (item.output_2, item.output_1) if swapped else (item.output_1, item.output_2)
        )
        values = {
            "instruction": item.instruction,
            "input": item.input,
            "output_a": first,
            "output_b": second,
            "reference": "(no reference answer given)",
            "rubric": self.rubric.render(),
            "persona": self.spec.persona_text,
        }
        slot = "swapped" if swapped else "shown"
        return [PlannedRequest(slot, self._request(self.spec, values))]

    def read(
        self, item: PairwiseItem, planned: PlannedRequest, completion: Completion
    ) -> _RelativeReading:
        swapped = planned.slot == "swapped"
        read = self._reading(completion)
        if isinstance(read, Failure):
            return _RelativeReading(completion=completion, failure=read, swapped=swapped)
        critique, value = read
        if value.upper() not in ("A", "B"):
            failure = Failure(kind="parse", message=f"[RESULT] {value!r} is neither A nor B")
            return _RelativeReading(completion=completion, failure=failure, swapped=swapped)
        return _RelativeReading(
            completion=completion, critique=critique, value=value.upper(), swapped=swapped
        )

    def combine(
        self, item: PairwiseItem, readings: Mapping[str, _RelativeReading]
    ) -> RelativeCritiqueRecord:
        reading = next(iter(readings.values()))
        completion = reading.completion
        ok = reading.failure is None
        preference = unswap(1.0 if reading.value == "A" else 2.0, reading.swapped) if ok else None
        return RelativeCritiqueRecord(
            instruction=item.instruction,
            input=item.input,
            output_1=item.output_1,
            generator_1=item.generator_1,
            output_2=item.output_2,
            generator_2=item.generator_2,
            item_id=item.item_id,
            annotator=self.id,
            pool=self.pool,
            rubric=self.rubric.id,
            critique=reading.critique if ok else None,
            preference=preference,
            swapped=reading.swapped,
            raw_completion=completion.text if completion.ok else None,
            cost_usd=completion.cost_usd,
            latency_s=completion.latency_s,
            cached=completion.cached,
            failure=reading.failure,
        )

    @classmethod
    def summarise(
        cls, annotator: str, records: Sequence[RelativeCritiqueRecord], stats: RunStats
    ) -> FeedbackSummary:
        return FeedbackSummary.of(cls.kind, annotator, records, stats)


def critique_judge(
    persona: LoadedPersona, pool: str | None = None
) -> CritiqueJudge | RelativeCritiqueJudge:
    """The critique judge for the persona's ``mode``."""
    spec = persona.spec
    if isinstance(spec, CritiquePersona) and spec.mode == "relative":
        return RelativeCritiqueJudge(persona, pool)
    return CritiqueJudge(persona, pool)
