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

from pydantic import BaseModel, ConfigDict

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


def _with_overrides(spec: BackendSpec, overrides: dict[str, Any] | None) -> BackendSpec:
    if not overrides:
        return spec
    options = {**spec.options, **overrides.get("options", {})}
    return spec.model_copy(
        update={"model": overrides.get("model") or spec.model, "options": options}
    )


async def annotate_async(
    items: Sequence[PairwiseItem],
    annotator: LoadedPersona | LoadedPool,
    *,
    cache: CompletionCache | None = None,
    backend_overrides: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> AnnotationResult:
    """Annotate ``items``; the result is aligned with them (failures included, never dropped)."""
    started = time.perf_counter()
    judges = _assign(annotator, items)
    results: list[PairwiseAnnotation | None] = [None] * len(items)
    states: dict[int, _ItemState] = {}
    backends: dict[str, Backend] = {}
    runners: dict[str, JobRunner[_Route]] = {}
    done = 0
    cost_now = 0.0
    cache_hits = 0

    def finish_item(index: int, annotation: PairwiseAnnotation) -> None:
        nonlocal done
        results[index] = annotation
        done += 1
        if progress is not None:
            progress(done, len(items), cost_now)

    def record(index: int, swapped: bool, verdict: Verdict) -> None:
        state = states[index]
        state.verdicts[swapped] = verdict
        if len(state.verdicts) == len(state.orders):
            verdicts = [state.verdicts[s] for s in state.orders]
            finish_item(index, state.judge.combine(items[index], verdicts))
            del states[index]

    def on_result(job: Job[_Route], completion: Completion) -> bool:
        nonlocal cost_now
        index, swapped, key = job.payload
        judge = states[index].judge
        cost_now += completion.cost_usd
        verdict = judge.read(completion, swapped)
        if verdict.failure is None:
            if cache is not None:
                cache.put(key, completion)
        elif verdict.failure.kind == "parse":
            if job.attempt < judge.spec.max_parse_attempts:
                return True
            verdict.failure.attempts = job.attempt
        record(index, swapped, verdict)
        return False

    routes: dict[int, tuple[Backend, JobRunner[_Route], dict[str, Any]]] = {}

    def runner_for(judge: PairwiseJudge) -> tuple[Backend, JobRunner[_Route], dict[str, Any]]:
        """The judge's backend (shared by judges with equal specs), runner and identity."""
        if id(judge) not in routes:
            assert judge.spec.backend is not None
            backend_spec = _with_overrides(judge.spec.backend, backend_overrides)
            backend_id = stable_digest(backend_spec.model_dump())
            if backend_id not in backends:
                backends[backend_id] = create_backend(backend_spec)
                runners[backend_id] = JobRunner(backends[backend_id], on_result)
            backend = backends[backend_id]
            routes[id(judge)] = (backend, runners[backend_id], backend.identity())
        return routes[id(judge)]

    if progress is not None:
        progress(0, len(items), 0.0)
    try:
        # Build, look up and submit in chunks, so requests are in flight while later
        # prompts are still being built.
        start, chunk = 0, _FIRST_CHUNK
        while start < len(items):
            planned: list[tuple[Backend, JobRunner[_Route], Job[_Route]]] = []
            end = min(start + chunk, len(items))
            for index in range(start, end):
                item, judge = items[index], judges[index]
                decided = judge.decide_without_model(item)
                if decided is not None:
                    finish_item(index, decided)
                    continue
                states[index] = _ItemState(judge, judge.orders(item))
                backend, runner, identity = runner_for(judge)
                assert judge.persona.template is not None
                for swapped in states[index].orders:
                    request = judge.request(item, swapped)
                    key = cache_key(
                        identity,
                        request,
                        judge.persona.template.digest,
                        judge.spec.cache_fields(),
                    )
                    planned.append((backend, runner, Job(request, (index, swapped, key))))
            hits = cache.get_many(job.payload[2] for _, _, job in planned) if cache else {}
            for _, runner, job in planned:
                index, swapped, key = job.payload
                cached = hits.get(key)
                if cached is not None:
                    verdict = states[index].judge.read(cached, swapped)
                    if verdict.failure is None:
                        cache_hits += 1
                        record(index, swapped, verdict)
                        continue
                runner.submit(job)
            start, chunk = end, min(2 * chunk, _MAX_CHUNK)
            await asyncio.sleep(0)
        for runner in runners.values():
            runner.close()
        await asyncio.gather(*(runner.wait() for runner in runners.values()))
    finally:
        requests_sent = sum(b.requests_sent for b in backends.values())
        await asyncio.gather(*(b.aclose() for b in backends.values()))

    annotations = [r for r in results if r is not None]
    assert len(annotations) == len(items), "every item ends annotated or failed"
    return AnnotationResult(
        annotations,
        _summarise(annotator, annotations, requests_sent, cache_hits, cost_now, started),
    )


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
    backend_overrides: dict[str, Any] | None = None,
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
    show_progress: bool = False,
) -> list[PairwiseAnnotation]:
    """Annotations for ``items`` (aligned) by a persona or pool id; the simplest API."""
    loaded = load_annotator(persona, annotators_dirs)
    if both_orders:
        loaded = _force_both_orders(loaded)
    if not show_progress:
        return annotate(items, loaded, use_cache=use_cache).annotations
    from simfarm.progress import annotation_progress

    with annotation_progress(len(items), loaded.spec.id) as callback:
        return annotate(items, loaded, use_cache=use_cache, progress=callback).annotations


def _force_both_orders(loaded: LoadedPersona | LoadedPool) -> LoadedPersona | LoadedPool:
    def both(persona: LoadedPersona) -> LoadedPersona:
        spec = persona.spec.model_copy(update={"both_orders": True})
        return LoadedPersona(spec=spec, template=persona.template, path=persona.path)

    if isinstance(loaded, LoadedPersona):
        return both(loaded)
    return LoadedPool(
        spec=loaded.spec, members=[(both(p), w) for p, w in loaded.members], path=loaded.path
    )
