"""Annotate many items with a judge, a pool or a persona: cached, resumable, cost-accounted.

Flow: assign each item a judge (pools: seeded draw) -> decide model-free items at once
(rules, identical outputs, label noise) -> each judge plans its requests (per sample) ->
answer what the cache already has -> send the rest through the executors, committing each
readable answer to the cache as it arrives -> judges ask follow-up requests (multi-stage)
-> combine readings into records, in input order.

The run is generic over :class:`~simfarm.annotation.judge.Judge`; pairwise personas are
one kind. It owns the cache (workers never open it), deduplicates identical requests in
flight (a second identical request waits for the first's answer), and borrows backends from
a :class:`~simfarm.execution.session.BackendSession` (the caller's, or one for this call).

A run interrupted at any point (Ctrl-C, ``kill -9``) has lost nothing that was paid for,
except answers still queued for the cache writer (see :mod:`simfarm.cache`): the next run
finds the rest in the cache and sends only the missing requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field

from simfarm.annotation.critique import critique_judge
from simfarm.annotation.hindsight import HindsightJudge
from simfarm.annotation.judge import (
    AnyJudge,
    ItemT,
    Judge,
    JudgePool,
    PlannedRequest,
    Reading,
    RecordT,
    RunStats,
    SummaryT,
)
from simfarm.annotation.likelihood import LikelihoodJudge
from simfarm.annotation.loader import LoadedPersona, LoadedPool, load_annotator
from simfarm.annotation.pairwise import AnnotationSummary, PairwiseJudge
from simfarm.annotation.rating import RatingJudge
from simfarm.backends.base import BackendSpec
from simfarm.cache import CompletionCache, RequestKeys
from simfarm.errors import ConfigError
from simfarm.execution.executor import Executor, ExecutorFactory, Job
from simfarm.execution.gc_pacing import fewer_collections
from simfarm.execution.session import BackendSession
from simfarm.types import (
    Completion,
    CompletionRequest,
    PairwiseAnnotation,
    PairwiseItem,
    PlannedContent,
    stable_digest,
)

__all__ = [
    "AnnotationResult",
    "AnnotationSummary",
    "BackendOverrides",
    "ProgressCallback",
    "annotate",
    "annotate_async",
    "annotate_pairs",
    "judge_for_persona",
    "judges_for",
    "with_both_orders",
]

ProgressCallback = Callable[[int, int, float], None]
"""Called as ``(records_done, records_total, cost_usd_this_run)``."""

T = TypeVar("T")

JUDGE_KINDS: dict[str, Callable[[LoadedPersona, str | None], AnyJudge]] = {
    "pairwise": PairwiseJudge,
    "hindsight": HindsightJudge,
    "likelihood": LikelihoodJudge,
    "rating": RatingJudge,
    "critique": critique_judge,
}
"""Persona ``kind`` -> the judge class that applies it (more kinds register here)."""

PAIR_JUDGING_KINDS = frozenset({"pairwise", "likelihood"})
"""Kinds whose records are pairwise annotations (what evaluate and validate read)."""


@dataclass
class AnnotationResult(Generic[RecordT, SummaryT]):
    annotations: list[RecordT]
    """Aligned with the items; with ``samples=k``, item ``i``'s samples are at
    ``i*k ... i*k+k-1`` (see :meth:`by_item`). Failures are included, never dropped."""
    summary: SummaryT
    samples: int = 1

    def by_item(self) -> list[list[RecordT]]:
        """The records of each item (one list of ``samples`` records per item)."""
        k = self.samples
        return [self.annotations[i : i + k] for i in range(0, len(self.annotations), k)]


class BackendOverrides(BaseModel):
    """Run-time changes to every persona's backend (CLI ``--model``, ``--base-url``, ...),
    so a persona file can be pointed at another server or model without editing it."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    """Merged over the persona's ``backend.options`` (e.g. ``base_url``, ``request_budget``)."""

    def apply(self, spec: BackendSpec) -> BackendSpec:
        if self.model is None and not self.options:
            return spec
        return spec.model_copy(
            update={"model": self.model or spec.model, "options": {**spec.options, **self.options}}
        )


def judge_for_persona(persona: LoadedPersona, pool: str | None = None) -> AnyJudge:
    """The judge that applies ``persona`` (by its ``kind``)."""
    try:
        factory = JUDGE_KINDS[persona.spec.kind]
    except KeyError:
        raise ConfigError(
            f"{persona.path}: no judge for persona kind {persona.spec.kind!r} "
            f"(known: {', '.join(sorted(JUDGE_KINDS))})"
        ) from None
    return factory(persona, pool)


def judges_for(annotator: LoadedPersona | LoadedPool) -> AnyJudge | JudgePool[Any, Any, Any, Any]:
    """A loaded persona as its judge, a loaded pool as a :class:`JudgePool` (which checks
    that the members share one kind)."""
    if isinstance(annotator, LoadedPersona):
        return judge_for_persona(annotator)
    spec = annotator.spec
    return JudgePool(
        id=spec.id,
        judges=[judge_for_persona(persona, pool=spec.id) for persona, _ in annotator.members],
        weights=[weight for _, weight in annotator.members],
        seed=spec.seed,
        source=str(annotator.path or ""),
    )


_FIRST_CHUNK, _MAX_CHUNK = 8, 256
"""Items planned per step before yielding to the event loop (and to requests in flight):
small at first, so the first requests leave at once, then doubling up to the maximum."""


@dataclass(frozen=True)
class _Route:
    """What every request of one judge shares: its executor and backend identity."""

    executor: Executor[_Ticket]
    identity: dict[str, Any]
    request_keys: dict[tuple[str | None, str | None], RequestKeys] = field(default_factory=dict)
    """(template digest, stage) -> the cache keys of such requests (shared part encoded once)."""

    def key(self, request: PlannedContent, template_digest: str | None, stage: str | None) -> str:
        """:func:`~simfarm.cache.cache_key` of a request sent this way."""
        keys = self.request_keys.get((template_digest, stage))
        if keys is None:
            keys = RequestKeys(self.identity, template_digest, stage)
            self.request_keys[(template_digest, stage)] = keys
        return keys.key(request)


@dataclass(eq=False, slots=True)
class _Unit:
    """One (item, sample) being judged."""

    position: int
    """Where its record goes in the result."""
    item: Any
    sample: int
    judge: AnyJudge
    readings: dict[str, Any] = field(default_factory=dict)
    """Slot -> reading (None until read), in planned order."""
    waiting: int = 0
    """Requests of the current round not read yet."""


@dataclass(eq=False, slots=True)
class _Ticket:
    """One planned request of one unit, with its cache key: the payload of a job."""

    unit: _Unit
    planned: PlannedRequest
    route: _Route
    key: str


class _AnnotationRun:
    """The state of one :func:`annotate_async` call; each method is one step of the flow."""

    def __init__(
        self,
        items: Sequence[Any],
        judges: list[AnyJudge],
        annotator_id: str,
        cache: CompletionCache | None,
        overrides: BackendOverrides,
        progress: ProgressCallback | None,
        samples: int,
        executor_factory: ExecutorFactory,
    ) -> None:
        self.items = items
        self.judges = judges
        self.annotator_id = annotator_id
        self.cache = cache
        self.overrides = overrides
        self.progress = progress
        self.samples = samples
        self.executor_factory = executor_factory
        self.total = len(items) * samples
        self.results: list[Any] = [None] * self.total
        self.executors: dict[str, Executor[_Ticket]] = {}
        self.routes: dict[tuple[int, str | None], _Route] = {}
        self.in_flight: dict[str, list[_Ticket]] = {}
        """Key -> tickets waiting for the answer already requested under that key."""
        self.answered: dict[str, Completion] = {}
        """Readable answers of this run, by key (duplicates planned later reuse them even
        before the cache writer has committed them)."""
        self.done = 0
        self.cost_now = 0.0
        self.cache_hits = 0
        self.error: BaseException | None = None
        self.all_done = asyncio.Event()
        self.executor_added = asyncio.Event()
        self.started = time.perf_counter()

    async def run(self) -> tuple[list[Any], RunStats]:
        if self.progress is not None:
            self.progress(0, self.total, 0.0)
        if self.total == 0:
            self.all_done.set()
        waits: dict[str, asyncio.Future[Any]] = {}
        try:
            # Plan in growing chunks, so the first requests are in flight while later
            # prompts are still being built.
            # Fewer collections meanwhile: this is where a cached rerun spends its time,
            # allocating many short-lived objects per item (see gc_pacing).
            start, chunk = 0, _FIRST_CHUNK
            with fewer_collections():
                while start < len(self.items):
                    end = min(start + chunk, len(self.items))
                    self._plan(range(start, end))
                    start, chunk = end, min(2 * chunk, _MAX_CHUNK)
                    await asyncio.sleep(0)
            await self._until_done(waits)
            if self.error is not None:
                raise self.error
            for key, executor in self.executors.items():
                if key not in waits:
                    waits[key] = asyncio.ensure_future(executor.wait())
            for executor in self.executors.values():
                executor.close()
            await asyncio.gather(*waits.values())
        finally:
            for waiting in waits.values():
                waiting.cancel()
            requests_sent = sum(e.counters().requests_sent for e in self.executors.values())
            await asyncio.gather(*(e.aclose() for e in self.executors.values()))
        assert self.done == self.total, "every item ends annotated or failed"
        stats = RunStats(
            requests_sent=requests_sent,
            cache_hits=self.cache_hits,
            cost_usd=self.cost_now,
            elapsed_s=time.perf_counter() - self.started,
        )
        return self.results, stats

    async def _until_done(self, waits: dict[str, asyncio.Future[Any]]) -> None:
        """Wait until every unit is finished, or an executor fails (its wait() returns
        early only then). Executors that later stages add are watched as they come."""
        finished: asyncio.Future[Any] = asyncio.ensure_future(self.all_done.wait())
        try:
            while not finished.done():
                self.executor_added.clear()
                for key, executor in self.executors.items():
                    if key not in waits:
                        waits[key] = asyncio.ensure_future(executor.wait())
                added = asyncio.ensure_future(self.executor_added.wait())
                try:
                    await asyncio.wait(
                        [finished, added, *waits.values()], return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    added.cancel()
                if any(waiting.done() for waiting in waits.values()):
                    return
        finally:
            finished.cancel()

    # -- planning --

    def _plan(self, indices: range) -> None:
        """Decide model-free items now; for the rest, the judge's first requests."""
        tickets: list[_Ticket] = []
        for index in indices:
            item, judge = self.items[index], self.judges[index]
            decided = judge.decide_without_model(item)
            for sample in range(self.samples):
                position = index * self.samples + sample
                if decided is not None:
                    self._finish(position, decided if sample == 0 else copy.copy(decided))
                    continue
                unit = _Unit(position, item, sample, judge)
                self._start_round(unit, judge.plan(item), tickets)
        self._dispatch(tickets)

    def _start_round(
        self, unit: _Unit, planned: list[PlannedRequest], tickets: list[_Ticket]
    ) -> None:
        if not planned:
            raise ValueError(f"judge {unit.judge.id!r} planned no request for an item")
        unit.waiting += len(planned)
        template_digest = unit.judge.template_digest
        for request in planned:
            if request.slot in unit.readings:
                raise ValueError(f"judge {unit.judge.id!r} planned slot {request.slot!r} twice")
            if unit.sample:
                request = replace(request, request=request.request.for_sample(unit.sample))
            unit.readings[request.slot] = None
            route = self._route_for(unit.judge, request.backend)
            key = route.key(request.request, template_digest, request.stage)
            tickets.append(_Ticket(unit, request, route, key))

    def _dispatch(self, tickets: list[_Ticket]) -> None:
        """Answer what this run or the cache already has; send the rest (once per key)."""
        while tickets:
            lookup = [t.key for t in tickets if t.key not in self.answered]
            hits = self.cache.get_many(lookup) if self.cache is not None and lookup else {}
            follow: list[_Ticket] = []
            for ticket in tickets:
                key = ticket.key
                known = self.answered.get(key) or hits.get(key)
                if known is not None:
                    unit = ticket.unit
                    reading = unit.judge.read(unit.item, ticket.planned, known)
                    if reading.failure is None:
                        self.cache_hits += 1
                        self.answered.setdefault(key, known)
                        self._accept(ticket, reading, follow)
                        continue
                waiting = self.in_flight.get(key)
                if waiting is not None:
                    waiting.append(ticket)
                    continue
                self.in_flight[key] = []
                ticket.route.executor.submit(Job(ticket.planned.request.build(), ticket))
            tickets = follow

    def _route_for(self, judge: AnyJudge, backend: BackendSpec | None) -> _Route:
        """One executor per distinct backend spec; per judge (and per backend a request
        names), worked out once."""
        route_key = (id(judge), None if backend is None else stable_digest(backend.model_dump()))
        route = self.routes.get(route_key)
        if route is None:
            declared = backend or judge.backend
            if declared is None:
                raise ConfigError(f"judge {judge.id!r} needs a model but declares no backend")
            spec = self.overrides.apply(declared)
            spec_key = stable_digest(spec.model_dump(mode="json"))
            executor = self.executors.get(spec_key)
            if executor is None:
                executor = self.executor_factory(spec, self._on_result)
                self.executors[spec_key] = executor
                self.executor_added.set()
            route = self.routes[route_key] = _Route(executor, executor.identity())
        return route

    # -- results --

    def _on_result(self, job: Job[_Ticket], completion: Completion) -> CompletionRequest | None:
        """Read one answer; commit it to the cache at once; return a retry if unreadable."""
        try:
            ticket = job.payload
            unit = ticket.unit
            self.cost_now += completion.cost_usd
            reading = unit.judge.read(unit.item, ticket.planned, completion)
            if reading.failure is not None and reading.failure.kind == "parse":
                retry = unit.judge.retry_request(job.request, job.attempt)
                if retry is not None:
                    return retry
                reading.failure.attempts = job.attempt
            follow: list[_Ticket] = []
            self._settle(ticket, completion, reading, follow)
            self._dispatch(follow)
            return None
        except BaseException as error:
            self.error = error
            self.all_done.set()
            raise

    def _settle(
        self, ticket: _Ticket, completion: Completion, reading: Reading, follow: list[_Ticket]
    ) -> None:
        """Hand a final answer to its ticket and to every ticket waiting on the same key."""
        key = ticket.key
        waiting = self.in_flight.pop(key, [])
        if reading.failure is None:
            self._remember(key, completion)
        self._accept(ticket, reading, follow)
        if not waiting:
            return
        shared = completion.model_copy(update={"cached": True})
        for other in waiting:
            unit = other.unit
            other_reading = unit.judge.read(unit.item, other.planned, shared)
            if other_reading.failure is None:
                self.cache_hits += 1  # answered without a request of its own
                if key not in self.answered:
                    self._remember(key, completion)
            self._accept(other, other_reading, follow)

    def _remember(self, key: str, completion: Completion) -> None:
        self.answered[key] = completion.model_copy(update={"cached": True})
        if self.cache is not None:
            self.cache.put(key, completion)

    def _accept(self, ticket: _Ticket, reading: Reading, follow: list[_Ticket]) -> None:
        """File a reading; when its round is complete, plan the next or finish the unit."""
        unit = ticket.unit
        unit.readings[ticket.planned.slot] = reading
        unit.waiting -= 1
        if unit.waiting:
            return
        if all(r.failure is None for r in unit.readings.values()):
            more = unit.judge.follow_up(unit.item, unit.readings)
            if more:
                self._start_round(unit, more, follow)
                return
        self._finish(unit.position, unit.judge.combine(unit.item, unit.readings))

    def _finish(self, position: int, record: Any) -> None:
        self.results[position] = record
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, self.cost_now)
        if self.done == self.total:
            self.all_done.set()


@overload
async def annotate_async(
    items: Sequence[PairwiseItem],
    annotator: LoadedPersona | LoadedPool,
    *,
    cache: CompletionCache | None = None,
    backend_overrides: BackendOverrides | None = None,
    progress: ProgressCallback | None = None,
    samples: int = 1,
    session: BackendSession | None = None,
    executor_factory: ExecutorFactory | None = None,
) -> AnnotationResult[PairwiseAnnotation, AnnotationSummary]: ...


@overload
async def annotate_async(
    items: Sequence[ItemT],
    annotator: Judge[ItemT, Any, RecordT, SummaryT] | JudgePool[ItemT, Any, RecordT, SummaryT],
    *,
    cache: CompletionCache | None = None,
    backend_overrides: BackendOverrides | None = None,
    progress: ProgressCallback | None = None,
    samples: int = 1,
    session: BackendSession | None = None,
    executor_factory: ExecutorFactory | None = None,
) -> AnnotationResult[RecordT, SummaryT]: ...


async def annotate_async(
    items: Sequence[Any],
    annotator: LoadedPersona | LoadedPool | AnyJudge | JudgePool[Any, Any, Any, Any],
    *,
    cache: CompletionCache | None = None,
    backend_overrides: BackendOverrides | None = None,
    progress: ProgressCallback | None = None,
    samples: int = 1,
    session: BackendSession | None = None,
    executor_factory: ExecutorFactory | None = None,
) -> AnnotationResult[Any, Any]:
    """Annotate ``items`` inside a running event loop; the result is aligned with them.

    ``samples=k`` judges every item k times, each sample its own request and cache entry
    (sample index 0..k-1). ``session`` keeps backends (and endpoint limits) alive across
    calls; without one, this call opens and closes its own. ``executor_factory`` replaces
    the in-process executor (e.g. with a Ray one); the cache stays here, in the driver.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if session is not None and not session.on_own_loop():
        # A `with` session's backends live on its own loop: run there, await it here.
        return await session.run_async(
            annotate_async(
                items,
                annotator,  # type: ignore[arg-type]
                cache=cache,
                backend_overrides=backend_overrides,
                progress=progress,
                samples=samples,
                session=session,
                executor_factory=executor_factory,
            )
        )
    if isinstance(annotator, LoadedPersona | LoadedPool):
        annotator = judges_for(annotator)
    if isinstance(annotator, JudgePool):
        judges, annotator_id = annotator.assign(items), annotator.id
        kind = type(annotator.judges[0])
    else:
        judges, annotator_id, kind = [annotator] * len(items), annotator.id, type(annotator)
    own_session = None
    if executor_factory is None:
        if session is None:
            session = own_session = BackendSession()
        executor_factory = session.executor_factory()
    try:
        run = _AnnotationRun(
            items,
            judges,
            annotator_id,
            cache,
            backend_overrides or BackendOverrides(),
            progress,
            samples,
            executor_factory,
        )
        records, stats = await run.run()
    finally:
        if own_session is not None:
            await own_session.aclose()
    if cache is not None:
        # Everything this run received counts as saved once committed: wait for that
        # off the loop (usually nothing is left by now).
        await asyncio.to_thread(cache.flush)
    return AnnotationResult(records, kind.summarise(annotator_id, records, stats), samples)


@overload
def annotate(
    items: Sequence[PairwiseItem],
    annotator: str | LoadedPersona | LoadedPool,
    *,
    annotators_dirs: list[Path] | None = None,
    use_cache: bool = True,
    cache_path: Path | None = None,
    backend_overrides: BackendOverrides | None = None,
    progress: ProgressCallback | None = None,
    samples: int = 1,
    session: BackendSession | None = None,
    executor_factory: ExecutorFactory | None = None,
) -> AnnotationResult[PairwiseAnnotation, AnnotationSummary]: ...


@overload
def annotate(
    items: Sequence[ItemT],
    annotator: Judge[ItemT, Any, RecordT, SummaryT] | JudgePool[ItemT, Any, RecordT, SummaryT],
    *,
    annotators_dirs: list[Path] | None = None,
    use_cache: bool = True,
    cache_path: Path | None = None,
    backend_overrides: BackendOverrides | None = None,
    progress: ProgressCallback | None = None,
    samples: int = 1,
    session: BackendSession | None = None,
    executor_factory: ExecutorFactory | None = None,
) -> AnnotationResult[RecordT, SummaryT]: ...


def annotate(
    items: Sequence[Any],
    annotator: str | LoadedPersona | LoadedPool | AnyJudge | JudgePool[Any, Any, Any, Any],
    *,
    annotators_dirs: list[Path] | None = None,
    use_cache: bool = True,
    cache_path: Path | None = None,
    backend_overrides: BackendOverrides | None = None,
    progress: ProgressCallback | None = None,
    samples: int = 1,
    session: BackendSession | None = None,
    executor_factory: ExecutorFactory | None = None,
) -> AnnotationResult[Any, Any]:
    """Synchronous entry point: load the annotator by id if needed, run, close the cache.

    With a session entered by ``with BackendSession() as session``, runs on the session's
    loop (its backends stay loaded for the next call). Without one, runs here, or in a
    worker thread when this thread already runs an event loop (a notebook cell, an async
    trainer calling synchronous code): use :func:`annotate_async` there to stay on it.
    ``executor_factory`` sends the requests another way (e.g.
    :meth:`~simfarm.execution.ray_executor.RayRuntime.executor_factory`).
    """
    loaded = load_annotator(annotator, annotators_dirs) if isinstance(annotator, str) else annotator
    cache = CompletionCache(cache_path) if use_cache else None
    try:
        coroutine = annotate_async(
            items,
            loaded,
            cache=cache,
            backend_overrides=backend_overrides,
            progress=progress,
            samples=samples,
            session=session,
            executor_factory=executor_factory,
        )
        if session is not None:
            return session.run(coroutine)
        return _run_to_completion(coroutine)
    finally:
        if cache is not None:
            cache.close()


def _run_to_completion(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` here, or in a worker thread when this thread's loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="simfarm-annotate") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def annotate_pairs(
    items: list[PairwiseItem],
    persona: str,
    *,
    annotators_dirs: list[Path] | None = None,
    use_cache: bool = True,
    both_orders: bool = False,
    progress: ProgressCallback | None = None,
    session: BackendSession | None = None,
    executor_factory: ExecutorFactory | None = None,
    samples: int = 1,
) -> list[PairwiseAnnotation]:
    """Annotations for ``items`` (aligned) by a persona or pool id; the simplest API.

    Pass a ``with BackendSession()`` session when calling it repeatedly (one model file
    after another): a local judge then loads once."""
    loaded = load_annotator(persona, annotators_dirs)
    members = [loaded] if isinstance(loaded, LoadedPersona) else [m for m, _ in loaded.members]
    for member in members:
        if member.spec.kind not in PAIR_JUDGING_KINDS:
            raise ConfigError(
                f"{member.path}: {member.spec.id!r} is a {member.spec.kind} persona; judging "
                "pairs here needs a pairwise one (rate or critique with `simfarm annotate`)"
            )
    if both_orders:
        loaded = with_both_orders(loaded)
    result = annotate(
        items,
        loaded,
        use_cache=use_cache,
        progress=progress,
        session=session,
        executor_factory=executor_factory,
        samples=samples,
    )
    return result.annotations


def with_both_orders(loaded: LoadedPersona | LoadedPool) -> LoadedPersona | LoadedPool:
    """The same persona (or every pool member) judging each pair in both orders."""

    def both(persona: LoadedPersona) -> LoadedPersona:
        if persona.spec.kind != "pairwise":  # e.g. likelihood: no shown order to swap
            return persona
        spec = persona.spec.model_copy(update={"both_orders": True})
        return LoadedPersona(spec=spec, template=persona.template, path=persona.path)

    if isinstance(loaded, LoadedPersona):
        return both(loaded)
    return LoadedPool(
        spec=loaded.spec, members=[(both(p), w) for p, w in loaded.members], path=loaded.path
    )
