"""The judge protocol: what the annotation run needs from any kind of feedback.

A run (:mod:`simfarm.annotation.run`) is generic over a :class:`Judge`. For each item the
judge

1. may decide without a model (:meth:`Judge.decide_without_model`: rules, ties, noise);
2. plans the first requests (:meth:`Judge.plan`), each in a named *slot* of the item;
3. reads each completion (:meth:`Judge.read`) into its own reading type;
4. may ask for follow-up requests once every planned request is read
   (:meth:`Judge.follow_up`: critique then score, outcome simulation then hindsight
   judgment), any number of rounds;
5. combines the readings into its own record type (:meth:`Judge.combine`), and its kind
   summarises a run's records (:meth:`Judge.summarise`).

The run does everything else: cache lookups and commits, in-flight deduplication, sample
indices, retries after unreadable answers (:func:`parse_retry`), executors and progress.
A request's ``stage`` enters its cache key, so two stages never share an answer even if
their prompts coincide. Pairwise preference (:class:`~simfarm.annotation.pairwise.PairwiseJudge`)
is one judge among several; a pool's members must all be of one kind (:class:`JudgePool`).
"""

from __future__ import annotations

import _random
import abc
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from simfarm.backends.base import BackendSpec
from simfarm.errors import ConfigError
from simfarm.types import (
    Completion,
    CompletionRequest,
    Failure,
    PlannedContent,
    stable_digest,
    strings_digest,
)

ItemT = TypeVar("ItemT")
ReadingT = TypeVar("ReadingT", bound="Reading")
RecordT = TypeVar("RecordT")
SummaryT = TypeVar("SummaryT")


@dataclass(frozen=True)
class PlannedRequest:
    """One request a judge wants answered for an item."""

    slot: str
    """Names this request within its item (``shown``, ``critique``, ``score``); unique per
    item across all stages. The reading is handed back under this name."""
    request: PlannedContent
    """The request, or a :class:`~simfarm.types.RequestDraft` of it: the run keys it as is
    and builds the validated request only when it must be sent (not on a cache hit)."""
    stage: str | None = None
    """The step of a multi-stage judge that asks; enters the cache key. None for
    single-stage judges (their keys then equal the stage-less keys of earlier versions)."""
    backend: BackendSpec | None = None
    """Another backend for this request (e.g. a cheap model simulates an outcome, a strong
    one judges it); None: the judge's own :attr:`Judge.backend`."""


@dataclass(kw_only=True)
class Reading:
    """A judge's reading of one completion; judges subclass it with what they extract."""

    completion: Completion
    failure: Failure | None = None
    """Set when the request failed or the answer could not be read (kind ``parse``)."""


@dataclass(frozen=True)
class RunStats:
    """What a run did beyond the records themselves, for summaries."""

    requests_sent: int
    """Requests made in this run, retries included (0 on a fully cached rerun)."""
    cache_hits: int
    cost_usd: float
    """Spent in this run (cached answers cost nothing now)."""
    elapsed_s: float


def parse_retry(
    request: CompletionRequest, attempt: int, max_attempts: int
) -> CompletionRequest | None:
    """The request to send after attempt ``attempt`` gave an unreadable answer, or None.

    Re-sending an identical greedy request cannot help against a model that deterministically
    answers something unreadable (it re-buys the same text), so greedy requests
    (``temperature == 0``) are sent again once only, identically: that still recovers an
    answer garbled in transport. Sampled requests get up to ``max_attempts`` attempts, each
    a new sample (the next sample index past what a run can ask for, and the next seed when
    a seed is fixed), so every attempt is a genuinely different draw.
    """
    if attempt >= max_attempts:
        return None
    if request.params.temperature == 0:
        return request if attempt == 1 else None
    retry_index = request.sample_index + _RETRY_SAMPLE_OFFSET * attempt
    return request.for_sample(retry_index)


_RETRY_SAMPLE_OFFSET = 1_000_000
"""Retry draws use sample indices this far apart, clear of the ``samples`` a run asks for."""


class Judge(abc.ABC, Generic[ItemT, ReadingT, RecordT, SummaryT]):
    """One configured judge of one kind; see the module docstring for the protocol."""

    kind: ClassVar[str]
    """The feedback kind (``pairwise``, ...); a pool's members share one."""

    id: str
    """The judge's (persona's) id, recorded in every record it makes."""
    pool: str | None = None
    """The pool it judged for, if any."""
    backend: BackendSpec | None = None
    """Which backend answers its requests (None: it never asks a model)."""
    template_digest: str | None = None
    """Digest of the prompt template; part of every cache key of its requests."""
    max_parse_attempts: int = 1
    """Attempts per request when the answer cannot be read (see :func:`parse_retry`)."""

    def decide_without_model(self, item: ItemT) -> RecordT | None:
        """The record when no model call is needed, else None (the default)."""
        return None

    @abc.abstractmethod
    def plan(self, item: ItemT) -> list[PlannedRequest]:
        """The first requests for ``item`` (at least one)."""

    @abc.abstractmethod
    def read(self, item: ItemT, planned: PlannedRequest, completion: Completion) -> ReadingT:
        """Read one completion (failed completions included: return their failure)."""

    def follow_up(self, item: ItemT, readings: Mapping[str, ReadingT]) -> list[PlannedRequest]:
        """More requests once every request so far is read without failure; [] when done.

        ``readings`` holds every slot so far, in the order they were planned."""
        return []

    @abc.abstractmethod
    def combine(self, item: ItemT, readings: Mapping[str, ReadingT]) -> RecordT:
        """The item's record from its readings (a failed reading makes a failed record)."""

    @classmethod
    @abc.abstractmethod
    def summarise(cls, annotator: str, records: Sequence[RecordT], stats: RunStats) -> SummaryT:
        """The summary of one run of judges of this kind."""

    def retry_request(self, request: CompletionRequest, attempt: int) -> CompletionRequest | None:
        """What to send after an unreadable answer (default: :func:`parse_retry`)."""
        return parse_retry(request, attempt, self.max_parse_attempts)

    def item_digest(self, item: ItemT) -> str:
        """A stable digest of what is judged: seeds per-item draws (pool assignment)."""
        content_digest = getattr(item, "content_digest", None)
        if callable(content_digest):
            return str(content_digest())
        if isinstance(item, BaseModel):
            return stable_digest(item.model_dump(mode="json"))
        return stable_digest(item)


def _seed_of(parts: tuple[object, ...]) -> int:
    return int(strings_digest([str(p) for p in parts])[:16], 16)


def seeded_rng(*parts: object) -> random.Random:
    """A generator seeded from the sha256 of ``parts`` (stable across processes)."""
    return random.Random(_seed_of(parts))


def seeded_random(*parts: object) -> float:
    """``seeded_rng(*parts).random()``: the first draw, the same number.

    For per-item draws that need one float (the shown order of every judged pair). Built
    on the C generator :class:`random.Random` extends: seeding it with an int is exactly
    what ``random.Random(seed)`` does (``Random.seed`` hands ints straight to it), minus
    the Python-level wrapper and instance set-up that a cached rerun paid per item. A test
    pins the two together."""
    return _random.Random(_seed_of(parts)).random()


AnyJudge = Judge[Any, Any, Any, Any]


@dataclass(frozen=True)
class JudgePool(Generic[ItemT, ReadingT, RecordT, SummaryT]):
    """A weighted set of judges of one kind; each item gets one member by a seeded draw
    over its content, so assignments are the same in every process and on every machine."""

    id: str
    judges: Sequence[Judge[ItemT, ReadingT, RecordT, SummaryT]]
    weights: Sequence[float] = field(default_factory=list)
    """One per judge (default: equal)."""
    seed: str = ""
    """Salt for the draw (default: the pool id)."""
    source: str = ""
    """Where the pool was declared (a file), for error messages."""

    def __post_init__(self) -> None:
        where = f"{self.source}: " if self.source else ""
        if not self.judges:
            raise ConfigError(f"{where}pool {self.id!r} has no members")
        if self.weights and len(self.weights) != len(self.judges):
            raise ConfigError(f"{where}pool {self.id!r}: one weight per member is needed")
        kinds: dict[str, list[str]] = {}
        for judge in self.judges:
            kinds.setdefault(judge.kind, []).append(judge.id)
        if len(kinds) > 1:
            found = "; ".join(f"{kind}: {', '.join(ids)}" for kind, ids in kinds.items())
            raise ConfigError(
                f"{where}pool {self.id!r} mixes judge kinds ({found}); the members of a pool "
                "must all produce the same kind of feedback"
            )

    @property
    def kind(self) -> str:
        return self.judges[0].kind

    def assign(self, items: Sequence[ItemT]) -> list[Judge[ItemT, ReadingT, RecordT, SummaryT]]:
        """The judge of each item."""
        judges = list(self.judges)
        weights = list(self.weights) or [1.0] * len(judges)
        salt = self.seed or self.id
        first = judges[0]
        return [
            seeded_rng("pool", salt, first.item_digest(item)).choices(judges, weights)[0]
            for item in items
        ]
