"""Annotate many pairs with a persona or a pool: cached, resumable, cost-accounted.

Flow: assign each item a persona (pools: seeded draw) -> decide model-free items at once
(rules, identical outputs, label noise) -> build one request per shown order -> answer what
the cache already has -> send the rest through the executor, committing each parsed answer
to the cache as it arrives -> assemble annotations in input order.

A run interrupted at any point (Ctrl-C, ``kill -9``) has lost nothing that was paid for:
the next run finds those answers in the cache and sends only the missing requests.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from simfarm.annotation.loader import LoadedPersona, LoadedPool, load_annotator
from simfarm.annotation.pairwise import PairwiseJudge, Verdict, seeded_rng
from simfarm.backends.base import Backend, BackendSpec
from simfarm.backends.registry import create_backend
from simfarm.cache import CompletionCache, cache_key
from simfarm.execution.local import Job, JobRunner
from simfarm.types import Completion, PairwiseAnnotation, PairwiseItem, stable_digest

ProgressCallback = Callable[[int, int, float], None]
"""Called as ``(items_done, items_total, cost_usd_this_run)``."""


class AnnotationSummary(BaseModel):
    """What a run did: outcomes, failures by kind, cost and time."""

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


@dataclass
class AnnotationResult:
    annotations: list[PairwiseAnnotation]
    summary: AnnotationSummary


_FIRST_CHUNK, _MAX_CHUNK = 8, 256
"""Items planned per step before yielding to the event loop (and to requests in flight):
small at first, so the first requests leave at once, then doubling up to the maximum."""

_Route = tuple[int, bool, str]
"""(item index, shown swapped?, cache key): where a result belongs."""


@dataclass(frozen=True)
class _JudgeRoute:
    runner: JobRunner[_Route]
    identity: dict[str, Any]
    template_digest: str
    cache_fields: dict[str, Any]


@dataclass
class _ItemState:
    judge: PairwiseJudge
    orders: list[bool]
    verdicts: dict[bool, Verdict] = field(default_factory=dict)


def _assign(
    annotator: LoadedPersona | LoadedPool, items: Sequence[PairwiseItem]
) -> list[PairwiseJudge]:
    """The judge of each item. Pools draw a member per item from a seeded generator."""
    if isinstance(annotator, LoadedPersona):
        judge = PairwiseJudge(annotator)
        return [judge] * len(items)
    spec = annotator.spec
    judges = [PairwiseJudge(persona, pool=spec.id) for persona, _ in annotator.members]
    weights = [weight for _, weight in annotator.members]
    salt = spec.seed or spec.id
    return [
        seeded_rng("pool", salt, item.content_digest()).choices(judges, weights)[0]
        for item in items
    ]


class BackendOverrides(BaseModel):
    """Run-time changes to every persona's backend (CLI ``--model``, ``--base-url``, ...),
    so a persona file can be pointed at another server or model without editing it."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    """Merged over the persona's ``backend.options`` (e.g. ``base_url``, ``request_budget``)."""

    def apply(self, spec: BackendSpec) -> BackendSpec:
        return spec.model_copy(
            update={"model": self.model or spec.model, "options": {**spec.options, **self.options}}
        )


class _AnnotationRun:
    """The state of one :func:`annotate_async` call; each method is one step of the flow."""

    def __init__(
        self,
        items: Sequence[PairwiseItem],
        annotator: LoadedPersona | LoadedPool,
        cache: CompletionCache | None,
        overrides: BackendOverrides,
        progress: ProgressCallback | None,
    ) -> None:
        self.items = items
        self.annotator = annotator
        self.cache = cache
        self.overrides = overrides
        self.progress = progress
        self.judges = _assign(annotator, items)
        self.results: list[PairwiseAnnotation | None] = [None] * len(items)
        self.states: dict[int, _ItemState] = {}
        self.backends: dict[str, Backend] = {}
        self.runners: dict[str, JobRunner[_Route]] = {}
        self.routes: dict[int, _JudgeRoute] = {}
        self.done = 0
        self.cost_now = 0.0
        self.cache_hits = 0
        self.started = time.perf_counter()

    async def run(self) -> AnnotationResult:
        if self.progress is not None:
            self.progress(0, len(self.items), 0.0)
        try:
            # Plan in growing chunks, so the first requests are in flight while later
            # prompts are still being built.
            start, chunk = 0, _FIRST_CHUNK
            while start < len(self.items):
                end = min(start + chunk, len(self.items))
                self._submit(self._plan(range(start, end)))
                start, chunk = end, min(2 * chunk, _MAX_CHUNK)
                await asyncio.sleep(0)
            for runner in self.runners.values():
                runner.close()
            await asyncio.gather(*(runner.wait() for runner in self.runners.values()))
        finally:
            requests_sent = sum(b.requests_sent for b in self.backends.values())
            await asyncio.gather(*(b.aclose() for b in self.backends.values()))
        annotations = [r for r in self.results if r is not None]
        assert len(annotations) == len(self.items), "every item ends annotated or failed"
        summary = _summarise(
            self.annotator, annotations, requests_sent, self.cache_hits, self.cost_now, self.started
        )
        return AnnotationResult(annotations, summary)

    def _plan(self, indices: range) -> list[tuple[JobRunner[_Route], Job[_Route]]]:
        """Decide model-free items now; for the rest, one job per shown order."""
        planned: list[tuple[JobRunner[_Route], Job[_Route]]] = []
        for index in indices:
            item, judge = self.items[index], self.judges[index]
            decided = judge.decide_without_model(item)
            if decided is not None:
                self._finish_item(index, decided)
                continue
            self.states[index] = _ItemState(judge, judge.orders(item))
            route = self._route_for(judge)
            for swapped in self.states[index].orders:
                request = judge.request(item, swapped)
                key = cache_key(route.identity, request, route.template_digest, route.cache_fields)
                planned.append((route.runner, Job(request, (index, swapped, key))))
        return planned

    def _submit(self, planned: list[tuple[JobRunner[_Route], Job[_Route]]]) -> None:
        """Answer from the cache what it has; queue the rest."""
        keys = (job.payload[2] for _, job in planned)
        hits = self.cache.get_many(keys) if self.cache is not None else {}
        for runner, job in planned:
            index, swapped, key = job.payload
            cached = hits.get(key)
            if cached is not None:
                verdict = self.states[index].judge.read(cached, swapped)
                if verdict.failure is None:
                    self.cache_hits += 1
                    self._record(index, swapped, verdict)
                    continue
            runner.submit(job)

    def _route_for(self, judge: PairwiseJudge) -> _JudgeRoute:
        """Everything per judge that its requests share: the runner (one per distinct backend
        spec) and the cache-key fields, worked out once rather than per request."""
        if id(judge) not in self.routes:
            assert judge.spec.backend is not None and judge.persona.template is not None
            backend_spec = self.overrides.apply(judge.spec.backend)
            backend_id = stable_digest(backend_spec.model_dump())
            if backend_id not in self.backends:
                self.backends[backend_id] = create_backend(backend_spec)
                self.runners[backend_id] = JobRunner(self.backends[backend_id], self._on_result)
            self.routes[id(judge)] = _JudgeRoute(
                runner=self.runners[backend_id],
                identity=self.backends[backend_id].identity(),
                template_digest=judge.persona.template.digest,
                cache_fields=judge.spec.cache_fields(),
            )
        return self.routes[id(judge)]

    def _on_result(self, job: Job[_Route], completion: Completion) -> bool:
        """Read one answer; commit it to the cache at once; True asks to send it again."""
        index, swapped, key = job.payload
        judge = self.states[index].judge
        self.cost_now += completion.cost_usd
        verdict = judge.read(completion, swapped)
        if verdict.failure is None:
            if self.cache is not None:
                self.cache.put(key, completion)
        elif verdict.failure.kind == "parse":
            if job.attempt < judge.spec.max_parse_attempts:
                return True
            verdict.failure.attempts = job.attempt
        self._record(index, swapped, verdict)
        return False

    def _record(self, index: int, swapped: bool, verdict: Verdict) -> None:
        state = self.states[index]
        state.verdicts[swapped] = verdict
        if len(state.verdicts) == len(state.orders):
            verdicts = [state.verdicts[s] for s in state.orders]
            self._finish_item(index, state.judge.combine(self.items[index], verdicts))
            del self.states[index]

    def _finish_item(self, index: int, annotation: PairwiseAnnotation) -> None:
        self.results[index] = annotation
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, len(self.items), self.cost_now)


async def annotate_async(
    items: Sequence[PairwiseItem],
    annotator: LoadedPersona | LoadedPool,
    *,
    cache: CompletionCache | None = None,
    backend_overrides: BackendOverrides | None = None,
    progress: ProgressCallback | None = None,
) -> AnnotationResult:
    """Annotate ``items``; the result is aligned with them (failures included, never dropped)."""
    run = _AnnotationRun(items, annotator, cache, backend_overrides or BackendOverrides(), progress)
    return await run.run()


def _summarise(
    annotator: LoadedPersona | LoadedPool,
    annotations: list[PairwiseAnnotation],
    requests_sent: int,
    cache_hits: int,
    cost_now: float,
    started: float,
) -> AnnotationSummary:
    failures = Counter(a.failure.kind for a in annotations if a.failure is not None)
    preferences = [a.preference for a in annotations if a.preference is not None]
    return AnnotationSummary(
        annotator=annotator.spec.id,
        n_items=len(annotations),
        n_annotated=len(preferences),
        n_failed=sum(failures.values()),
        failures_by_kind={str(kind): n for kind, n in failures.items()},
        n_output_1_wins=sum(p < 1.5 for p in preferences),
        n_output_2_wins=sum(p > 1.5 for p in preferences),
        n_ties=sum(p == 1.5 for p in preferences),
        requests_sent=requests_sent,
        cache_hits=cache_hits,
        cost_usd=cost_now,
        cost_usd_total=sum(a.cost_usd for a in annotations),
        elapsed_s=time.perf_counter() - started,
    )


def annotate(
    items: Sequence[PairwiseItem],
    annotator: str | LoadedPersona | LoadedPool,
    *,
    annotators_dirs: list[Path] | None = None,
    use_cache: bool = True,
    cache_path: Path | None = None,
    backend_overrides: BackendOverrides | None = None,
    progress: ProgressCallback | None = None,
) -> AnnotationResult:
    """Synchronous entry point: load the annotator by id if needed, run, close the cache."""
    loaded = load_annotator(annotator, annotators_dirs) if isinstance(annotator, str) else annotator
    cache = CompletionCache(cache_path) if use_cache else None
    try:
        return asyncio.run(
            annotate_async(
                items, loaded, cache=cache, backend_overrides=backend_overrides, progress=progress
            )
        )
    finally:
        if cache is not None:
            cache.close()


def annotate_pairs(
    items: list[PairwiseItem],
    persona: str,
    *,
    annotators_dirs: list[Path] | None = None,
    use_cache: bool = True,
    both_orders: bool = False,
    progress: ProgressCallback | None = None,
) -> list[PairwiseAnnotation]:
    """Annotations for ``items`` (aligned) by a persona or pool id; the simplest API."""
    loaded = load_annotator(persona, annotators_dirs)
    if both_orders:
        loaded = with_both_orders(loaded)
    return annotate(items, loaded, use_cache=use_cache, progress=progress).annotations


def with_both_orders(loaded: LoadedPersona | LoadedPool) -> LoadedPersona | LoadedPool:
    """The same persona (or every pool member) judging each pair in both orders."""

    def both(persona: LoadedPersona) -> LoadedPersona:
        spec = persona.spec.model_copy(update={"both_orders": True})
        return LoadedPersona(spec=spec, template=persona.template, path=persona.path)

    if isinstance(loaded, LoadedPersona):
        return both(loaded)
    return LoadedPool(
        spec=loaded.spec, members=[(both(p), w) for p, w in loaded.members], path=loaded.path
    )
