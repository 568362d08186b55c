"""Hindsight feedback (RLHS): foresight and hindsight verdicts on one pair, side by side.

The ``hindsight`` kind of :class:`~simfarm.annotation.judge.Judge`. For each pair of
responses to one scenario instance (:class:`~simfarm.annotation.scenario.HindsightItem`):

1. ``foresight`` stage: the judge compares the two responses seeing only the conversation;
2. ``outcome`` stage: the world answers each response, by the scenario's function (no
   request; it also gives the true utility) or by an LLM world model that sees the hidden
   context (one request per response, cached by content, so a response shared by several
   pairs is simulated once); a world model is asked in the same round as the foresight
   verdict, since neither needs the other;
3. ``hindsight`` stage: the judge compares them again, now told what happened after each.

Both verdicts, the outcomes and the true preference (from the utilities, where known) go in
one :class:`HindsightAnnotation`; the run's cache, retries, failures and executors are the
same as for every other kind.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

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
from simfarm.annotation.scenario import (
    HindsightItem,
    HindsightPersona,
    LoadedScenario,
    SimulatedOutcome,
    load_scenario,
)
from simfarm.annotation.template import PromptTemplate
from simfarm.errors import ConfigError
from simfarm.types import (
    Completion,
    Failure,
    Record,
    RequestDraft,
    stable_digest,
)

__all__ = ["HindsightAnnotation", "HindsightJudge", "HindsightSummary", "agreement"]

FORESIGHT, HINDSIGHT, OUTCOME = "foresight", "hindsight", "outcome"
"""Stage names (in every cache key of their requests)."""
_OUTCOME_SLOTS = ("outcome_1", "outcome_2")


class HindsightAnnotation(Record):
    """One pair judged in foresight and in hindsight (one JSON object per line)."""

    scenario: str
    instance_id: str
    context: str
    response_1: str
    """Id of the first response."""
    response_2: str
    output_1: str
    output_2: str
    outcome_1: str | None = None
    """What happened after response 1 (None until simulated)."""
    outcome_2: str | None = None
    utility_1: float | None = None
    """True utility of response 1, where the scenario can compute it."""
    utility_2: float | None = None
    true_preference: float | None = None
    """1, 2 or 1.5 (equal utility) from the utilities; None when they are unknown."""
    foresight_preference: float | None = None
    """1 = response 1 better, 2 = response 2, 1.5 = tie; judged before the outcome."""
    hindsight_preference: float | None = None
    """The same, judged after the simulated outcomes."""
    swapped: bool = False
    """The responses were shown in swapped order (already undone)."""
    annotator: str
    pool: str | None = None
    raw_foresight: str | None = None
    raw_hindsight: str | None = None
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False
    failure: Failure | None = None


class HindsightSummary(BaseModel):
    """What a hindsight run did, and how often each kind of feedback found the truth."""

    model_config = ConfigDict(extra="forbid")

    annotator: str
    n_items: int
    n_annotated: int
    n_failed: int
    failures_by_kind: dict[str, int]
    n_decisive: int
    """Annotated pairs whose true utilities differ."""
    foresight_agreement: float | None
    """Fraction of decisive pairs where the foresight verdict picks the truly better
    response (a tie counts as not picking it; a logprob-weighted verdict picks the side it
    leans to)."""
    hindsight_agreement: float | None
    foresight_ties: int
    hindsight_ties: int
    requests_sent: int
    cache_hits: int
    cost_usd: float
    elapsed_s: float


@dataclass(kw_only=True)
class HindsightReading(Reading):
    preference: float | None = None
    """A verdict's preference in the item's own order."""
    text: str = ""


def agreement(records: Sequence[HindsightAnnotation], field: str) -> tuple[int, float | None]:
    """(decisive pairs, fraction where ``field``'s verdict matches the true preference)."""
    decisive = [
        r
        for r in records
        if r.failure is None and r.true_preference is not None and r.true_preference != 1.5
    ]
    if not decisive:
        return 0, None
    hits = sum(_side(getattr(r, field)) == _side(r.true_preference) for r in decisive)
    return len(decisive), hits / len(decisive)


def _side(preference: float | None) -> int:
    """-1 (response 1), 1 (response 2) or 0 (tie, or no verdict): logprob-weighted
    preferences are continuous in [1, 2]."""
    if preference is None or preference == 1.5:
        return 0
    return 1 if preference > 1.5 else -1


class HindsightJudge(Judge[HindsightItem, HindsightReading, HindsightAnnotation, HindsightSummary]):
    """A loaded hindsight persona with its scenario, ready to plan and read."""

    kind = "hindsight"

    def __init__(self, persona: LoadedPersona, pool: str | None = None) -> None:
        spec = persona.spec
        if not isinstance(spec, HindsightPersona):
            raise ConfigError(f"{persona.path}: not a hindsight persona")
        self.spec = spec
        self.id = spec.id
        self.pool = pool
        self.backend = spec.backend
        self.max_parse_attempts = spec.max_parse_attempts
        folder = [persona.path.parent] if persona.path is not None else []
        try:
            self.scenario: LoadedScenario = load_scenario(spec.scenario, folder)
        except ConfigError as error:
            raise ConfigError(f"{persona.path}: scenario: {error}") from None
        scenario = self.scenario.spec
        self.foresight = _template(persona.path, spec.foresight_template) or (
            PromptTemplate.from_file(self.scenario.relative(scenario.foresight_template))
        )
        self.hindsight = _template(persona.path, spec.hindsight_template) or (
            PromptTemplate.from_file(self.scenario.relative(scenario.hindsight_template))
        )
        outcome = scenario.outcome
        self.world_model = None
        if outcome.prompt_template is not None:
            self.world_model = PromptTemplate.from_file(
                self.scenario.relative(outcome.prompt_template)
            )
        self.outcome_backend = outcome.backend or spec.outcome_backend
        self.outcome_function = self.scenario.outcome_function()
        self.utility_function = self.scenario.utility_function()
        self.template_digest = stable_digest(
            [
                self.foresight.digest,
                self.hindsight.digest,
                self.world_model.digest if self.world_model else outcome.function,
            ]
        )

    # -- planning --

    def swapped(self, item: HindsightItem) -> bool:
        if not self.spec.randomize_order:
            return False
        return seeded_random("order", self.id, item.content_digest()) < 0.5

    def plan(self, item: HindsightItem) -> list[PlannedRequest]:
        """The foresight verdict, and (with a world model) both outcomes, at once."""
        planned = [PlannedRequest(FORESIGHT, self._verdict_request(item, None), FORESIGHT)]
        if self.world_model is not None:
            for slot, response in zip(
                _OUTCOME_SLOTS, (item.response_1, item.response_2), strict=True
            ):
                planned.append(
                    PlannedRequest(
                        slot,
                        self._outcome_request(item, response.text),
                        OUTCOME,
                        backend=self.outcome_backend,
                    )
                )
        return planned

    def follow_up(
        self, item: HindsightItem, readings: Mapping[str, HindsightReading]
    ) -> list[PlannedRequest]:
        if HINDSIGHT in readings:
            return []
        outcomes = self._outcomes(item, readings)
        texts = (outcomes[0].text, outcomes[1].text)
        return [PlannedRequest(HINDSIGHT, self._verdict_request(item, texts), HINDSIGHT)]

    def _outcomes(
        self, item: HindsightItem, readings: Mapping[str, HindsightReading]
    ) -> tuple[SimulatedOutcome, SimulatedOutcome]:
        """Both outcomes: computed by the scenario's function, or the world model's text
        (with the true utility where the scenario can compute it)."""
        responses = (item.response_1.text, item.response_2.text)
        if self.outcome_function is not None:
            first, second = (self.outcome_function(item.context, item.hidden, r) for r in responses)
            return first, second
        found = []
        for slot, response in zip(_OUTCOME_SLOTS, responses, strict=True):
            reading = readings.get(slot)
            utility = (
                self.utility_function(item.context, item.hidden, response)
                if self.utility_function is not None
                else None
            )
            text = reading.text if reading is not None and reading.failure is None else ""
            found.append(SimulatedOutcome(text=text, utility=utility))
        return found[0], found[1]

    def _verdict_request(
        self, item: HindsightItem, outcomes: tuple[str, str] | None
    ) -> RequestDraft:
        swapped = self.swapped(item)
        responses = [item.response_1.text, item.response_2.text]
        values = {"context": item.context, "persona": self.spec.persona_text}
        if outcomes is None:
            template = self.foresight
        else:
            template = self.hindsight
            shown = list(reversed(outcomes)) if swapped else list(outcomes)
            values |= {"outcome_1": shown[0], "outcome_2": shown[1]}
        if swapped:
            responses.reverse()
        values |= {"output_1": responses[0], "output_2": responses[1]}
        return template.draft(values, self.spec.decoding, self.spec.prompt_format)

    def _outcome_request(self, item: HindsightItem, response: str) -> RequestDraft:
        assert self.world_model is not None
        values = {
            "context": item.context,
            "hidden": json.dumps(item.hidden, sort_keys=True, indent=1),
            "response": response,
        }
        outcome = self.scenario.spec.outcome
        return self.world_model.draft(values, outcome.decoding, outcome.prompt_format)

    # -- reading --

    def read(
        self, item: HindsightItem, planned: PlannedRequest, completion: Completion
    ) -> HindsightReading:
        if completion.failure is not None:
            return HindsightReading(completion=completion, failure=completion.failure)
        if planned.slot in _OUTCOME_SLOTS:
            text = completion.text.strip()
            if not text:
                failure = Failure(kind="parse", message="the world model wrote no outcome")
                return HindsightReading(completion=completion, failure=failure)
            return HindsightReading(completion=completion, text=text)
        try:
            shown, _ = self.spec.parser.parse(completion)
        except ParseError as error:
            failure = Failure(kind="parse", message=f"{planned.slot}: {error}")
            return HindsightReading(completion=completion, failure=failure)
        return HindsightReading(
            completion=completion,
            preference=unswap(shown, self.swapped(item)),
            text=completion.text,
        )

    def combine(
        self, item: HindsightItem, readings: Mapping[str, HindsightReading]
    ) -> HindsightAnnotation:
        outcomes = self._outcomes(item, readings)
        utilities = (outcomes[0].utility, outcomes[1].utility)
        true_preference = None
        if utilities[0] is not None and utilities[1] is not None:
            true_preference = (
                1.5
                if utilities[0] == utilities[1]
                else (1.0 if utilities[0] > utilities[1] else 2.0)
            )
        foresight, hindsight = readings.get(FORESIGHT), readings.get(HINDSIGHT)
        failures = [r.failure for r in readings.values() if r.failure is not None]
        done = list(readings.values())
        record = HindsightAnnotation(
            scenario=item.scenario,
            instance_id=item.instance_id,
            context=item.context,
            response_1=item.response_1.id,
            response_2=item.response_2.id,
            output_1=item.response_1.text,
            output_2=item.response_2.text,
            utility_1=utilities[0],
            utility_2=utilities[1],
            true_preference=true_preference,
            swapped=self.swapped(item),
            annotator=self.id,
            pool=self.pool,
            cost_usd=sum(r.completion.cost_usd for r in done),
            latency_s=sum(r.completion.latency_s for r in done),
            cached=all(r.completion.cached for r in done),
            failure=failures[0] if failures else None,
        )
        if all(o.text for o in outcomes):
            record.outcome_1, record.outcome_2 = outcomes[0].text, outcomes[1].text
        if foresight is not None:
            record.raw_foresight = foresight.completion.text
            record.foresight_preference = foresight.preference
        if hindsight is not None:
            record.raw_hindsight = hindsight.completion.text
            record.hindsight_preference = hindsight.preference
        return record

    @classmethod
    def summarise(
        cls, annotator: str, records: Sequence[HindsightAnnotation], stats: RunStats
    ) -> HindsightSummary:
        failures = Counter(r.failure.kind for r in records if r.failure is not None)
        n_decisive, foresight = agreement(records, "foresight_preference")
        _, hindsight = agreement(records, "hindsight_preference")
        judged = [r for r in records if r.failure is None]
        return HindsightSummary(
            annotator=annotator,
            n_items=len(records),
            n_annotated=len(judged),
            n_failed=sum(failures.values()),
            failures_by_kind={str(kind): n for kind, n in failures.items()},
            n_decisive=n_decisive,
            foresight_agreement=foresight,
            hindsight_agreement=hindsight,
            foresight_ties=sum(_side(r.foresight_preference) == 0 for r in judged),
            hindsight_ties=sum(_side(r.hindsight_preference) == 0 for r in judged),
            requests_sent=stats.requests_sent,
            cache_hits=stats.cache_hits,
            cost_usd=stats.cost_usd,
            elapsed_s=stats.elapsed_s,
        )


def _template(persona_path: Path | None, name: str | None) -> PromptTemplate | None:
    """A persona's own judge template (relative to its file, then the annotator folders)."""
    if name is None:
        return None
    from simfarm.annotation.loader import find_template

    if persona_path is None:
        raise ConfigError(f"template {name!r}: the persona has no file to resolve it from")
    return PromptTemplate.from_file(find_template(persona_path, name))
