"""The judge protocol with a second, two-stage kind defined here: critique, then a score
given the critique. It runs through the real run against the loopback server."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel

from simfarm.annotation import (
    Judge,
    JudgePool,
    PlannedRequest,
    Reading,
    RunStats,
    annotate,
    judges_for,
    load_annotator,
)
from simfarm.backends import Backend, BackendSpec, create_backend
from simfarm.errors import ConfigError
from simfarm.execution import BackendSession
from simfarm.testing.openai_server import RunningServer, start_server
from simfarm.types import ChatMessage, Completion, CompletionRequest, DecodingParams, Failure


class Answer(BaseModel):
    question: str
    answer: str


class CritiqueScore(BaseModel):
    question: str
    critique: str | None = None
    score: float | None = None
    annotator: str
    cached: bool = False
    failure: Failure | None = None


class CritiqueSummary(BaseModel):
    annotator: str
    n: int
    n_scored: int
    requests_sent: int
    cache_hits: int


@dataclass(kw_only=True)
class Read(Reading):
    text: str = ""
    score: float | None = None


class CritiqueThenScore(Judge[Answer, Read, CritiqueScore, CritiqueSummary]):
    """Stage 1 asks for a critique; stage 2 asks for a score given that critique.

    ``same_prompt`` makes stage 2 send exactly stage 1's prompt: only the stage in the
    cache key then keeps the two apart."""

    kind = "critique_score"

    def __init__(
        self, server: RunningServer, same_prompt: bool = False, scorer: str | None = None
    ) -> None:
        self.id = "critic"
        options = {"base_url": server.base_url, "timeout_s": 5.0}
        self.backend = BackendSpec(name="openai", model="fake", options=options)
        self.scorer = BackendSpec(name="openai", model=scorer, options=options) if scorer else None
        """Stage 2 on another model, when given."""
        self.template_digest = "critique-score-v1"
        self.same_prompt = same_prompt

    @staticmethod
    def _ask(text: str) -> CompletionRequest:
        return CompletionRequest(
            messages=[ChatMessage(role="user", content=text)], params=DecodingParams(max_tokens=8)
        )

    def _critique_prompt(self, item: Answer) -> str:
        return f"Critique this answer.\nQ: {item.question}\nA: {item.answer}"

    def plan(self, item: Answer) -> list[PlannedRequest]:
        return [PlannedRequest("critique", self._ask(self._critique_prompt(item)), "critique")]

    def read(self, item: Answer, planned: PlannedRequest, completion: Completion) -> Read:
        if completion.failure is not None:
            return Read(completion=completion, failure=completion.failure)
        if planned.slot == "critique":
            return Read(completion=completion, text=completion.text)
        match = re.search(r"Output \(([ab])\)", completion.text)
        if match is None:
            return Read(completion=completion, failure=Failure(kind="parse", message="no score"))
        return Read(completion=completion, score=1.0 if match[1] == "a" else 2.0)

    def follow_up(self, item: Answer, readings: Mapping[str, Read]) -> list[PlannedRequest]:
        if "score" in readings:
            return []
        prompt = (
            self._critique_prompt(item)
            if self.same_prompt
            else f"Given this critique: {readings['critique'].text}\nScore: {item.answer}"
        )
        return [PlannedRequest("score", self._ask(prompt), "score", backend=self.scorer)]

    def combine(self, item: Answer, readings: Mapping[str, Read]) -> CritiqueScore:
        failures = [r.failure for r in readings.values() if r.failure is not None]
        score = readings.get("score")
        return CritiqueScore(
            question=item.question,
            critique=readings["critique"].text,
            score=score.score if score is not None else None,
            annotator=self.id,
            cached=all(r.completion.cached for r in readings.values()),
            failure=failures[0] if failures else None,
        )

    @classmethod
    def summarise(
        cls, annotator: str, records: Sequence[CritiqueScore], stats: RunStats
    ) -> CritiqueSummary:
        return CritiqueSummary(
            annotator=annotator,
            n=len(records),
            n_scored=sum(r.score is not None for r in records),
            requests_sent=stats.requests_sent,
            cache_hits=stats.cache_hits,
        )


def answers(n: int) -> list[Answer]:
    return [Answer(question=f"What is {i} + {i}?", answer=f"It is {2 * i}.") for i in range(n)]


def test_two_stage_judge_runs_through_the_real_run_and_caches_each_stage(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    with start_server(policy="random") as server:
        judge = CritiqueThenScore(server)
        first = annotate(answers(10), judge, cache_path=cache)
        stats = server.stats()
        # Two stages per item, and stage 2's prompt carries stage 1's answer.
        assert stats["requests"] == 20 and stats["distinct_prompts"] == 20
        assert first.summary.requests_sent == 20 and first.summary.n_scored == 10
        for record in first.annotations:
            assert record.critique in ("Output (a)", "Output (b)")
            assert record.score in (1.0, 2.0) and not record.cached
        # Rerun: every stage from the cache, not one request.
        again = annotate(answers(10), judge, cache_path=cache)
        assert server.stats()["requests"] == 20
    assert again.summary.requests_sent == 0 and again.summary.cache_hits == 20
    assert [r.model_dump(exclude={"cached"}) for r in again.annotations] == [
        r.model_dump(exclude={"cached"}) for r in first.annotations
    ]
    assert all(r.cached for r in again.annotations)


def test_the_stage_is_in_the_cache_key(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    with start_server(policy="random") as server:
        judge = CritiqueThenScore(server, same_prompt=True)
        annotate(answers(5), judge, cache_path=cache)
        # Same prompt in both stages, still two requests: the stages do not share an answer.
        assert server.stats()["requests"] == 10
        annotate(answers(5), judge, cache_path=cache)
        assert server.stats()["requests"] == 10


def test_a_pool_must_not_mix_judge_kinds(tmp_path: Path) -> None:
    with start_server() as server:
        critic = CritiqueThenScore(server)
    pairwise = judges_for(load_annotator("alpaca_farm_greedy"))
    assert isinstance(pairwise, Judge)
    with pytest.raises(ConfigError, match=r"mixes judge kinds .*critique_score: critic"):
        JudgePool(id="mixed", judges=[critic, pairwise])  # type: ignore[list-item]


def test_a_later_stage_may_ask_another_model(tmp_path: Path) -> None:
    built: list[str] = []

    def factory(spec: BackendSpec) -> Backend:
        built.append(spec.model)
        return create_backend(spec)

    cache = tmp_path / "cache.sqlite"
    with start_server(policy="random") as server:
        judge = CritiqueThenScore(server, scorer="scorer")
        with BackendSession(factory) as session:
            first = annotate(answers(6), judge, cache_path=cache, session=session)
            assert server.stats()["requests"] == 12
            annotate(answers(6), judge, cache_path=cache, session=session)
            assert server.stats()["requests"] == 12
    assert built == ["fake", "scorer"]
    assert first.summary.n_scored == 6
