"""The Ray executor: the same jobs as the in-process executor, sent by Ray actors.

What runs where:

- the **driver** (the process that called ``annotate``) plans requests, owns the cache,
  dispatches work and receives every result; it hands each to the run's ``on_result`` as it
  arrives, which commits it to the cache, so a crash of the driver or of an actor loses at
  most the requests in flight;
- each **actor** builds its own backend from the backend spec (an HTTP client, or a local
  model on the CPUs/GPUs it asked Ray for) and answers chunks of requests. No actor opens
  the cache.

Work leaves the driver in chunks of ``backend.batch_size`` requests (one for an HTTP
backend, a padded batch for a local model), at most ``in_flight`` chunks per actor: a new
chunk goes to an actor only when one of its chunks came back (backpressure), so a slow or
dead actor holds at most ``in_flight`` chunks. An optional :class:`RequestRate` in the
driver bounds the requests of all actors together.

Fault tolerance: when an actor dies mid-chunk, Ray fails its calls in flight; their jobs go
back to the front of the queue and are sent by another actor (a retry; nothing answered is
lost, since answers only count once they reached the driver). The dead actor is restarted
by Ray (``max_restarts``) or, once those are spent, replaced by a new one; a job that kept
failing on dying actors ends as a ``worker`` failure. :meth:`RayExecutor.stats` counts the
restarts, replacements and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simfarm.backends.base import BackendSpec
from simfarm.errors import ConfigError, SimfarmError
from simfarm.execution.executor import (
    ExecutorCounters,
    ExecutorFactory,
    Job,
    JobLedger,
    PayloadT,
    ResultHandler,
)
from simfarm.execution.rate import RequestRate, RequestRateSpec
from simfarm.types import Completion, CompletionRequest, Failure

REMOTE_BACKENDS = frozenset({"openai", "openai_sdk"})
"""Backends whose actors only wait on the network: they ask Ray for a sliver of a CPU by
default, so many fit on a small machine. Others (local models) ask for whole CPUs/GPUs."""

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's single-machine mode (on by default on Windows/macOS only): with it set to 0, the
node address is loopback and gcs_server, raylet, workers and agents bind 127.0.0.1 instead
of every interface. Read when ``ray`` is imported."""


class RayExecutorOptions(BaseModel):
    """How a job is spread over Ray actors (CLI ``--ray-*`` options)."""

    model_config = ConfigDict(extra="forbid")

    actors: int = Field(default=2, ge=1)
    """Actors per backend, each with its own client (or model)."""
    in_flight: int = Field(default=8, ge=1)
    """Chunks in flight per actor (an HTTP chunk is one request)."""
    num_cpus: float | None = Field(default=None, ge=0)
    """CPUs each actor reserves (default: 0.1 for HTTP backends, 1 for local models)."""
    num_gpus: float = Field(default=0.0, ge=0)
    """GPUs each actor reserves (local models)."""
    max_actor_restarts: int = Field(default=2, ge=0)
    """Restarts Ray gives a dead actor before the executor replaces it."""
    max_replacements: int = Field(default=4, ge=0)
    """New actors started in all, once restarts are spent."""
    max_job_retries: int = Field(default=3, ge=0)
    """Times a chunk is sent again after the actor holding it died."""
    request_rate: RequestRateSpec | None = None
    """A budget for all actors together (e.g. 600 requests per 60 s)."""
    start_timeout_s: float = Field(default=120.0, gt=0)


@dataclass(frozen=True)
class RayStats:
    """What happened on the Ray side of a run (for its summary)."""

    actors: int
    actor_deaths: int
    """Times a live actor was found dead (its calls in flight failed)."""
    actor_restarts: int
    """Actors Ray restarted after they died."""
    actor_replacements: int
    """Actors the executor started anew after Ray's restarts were spent."""
    retries: int
    """Jobs sent again because the actor holding them died."""
    worker_failures: int
    """Jobs given up because actors kept dying under them (kind ``worker``)."""


class _BackendWorker:
    """The actor: one backend built from its spec, answering chunks of requests."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from simfarm.backends.registry import create_backend

        self.backend = create_backend(BackendSpec.model_validate(spec))

    async def info(self) -> dict[str, Any]:
        return {
            "identity": self.backend.identity(),
            "batch_size": self.backend.batch_size,
            "endpoint": self.backend.endpoint(),
            "pid": os.getpid(),
        }

    async def complete(
        self, requests: list[CompletionRequest]
    ) -> tuple[list[Completion], int, int]:
        """The answers, in order; this process's id and the requests its backend has really
        sent so far (a running total: calls overlap, so per-call differences would count a
        neighbour's requests too)."""
        try:
            completions = await self.backend.complete(requests)
        except Exception as error:  # a backend bug fails the chunk, not the actor
            failure = Failure(kind="backend", message=f"{type(error).__name__}: {error}")
            completions = [Completion(failure=failure) for _ in requests]
        return completions, os.getpid(), self.backend.requests_sent


@dataclass(eq=False)
class _Actor:
    handle: Any
    pid: int
    in_flight: int = 0
    healthy: bool = True
    recovering: bool = False


@dataclass(eq=False)
class _Chunk(Generic[PayloadT]):
    jobs: list[Job[PayloadT]]
    failed_sends: int = 0
    errors: list[str] = field(default_factory=list)


class RayExecutor(JobLedger[PayloadT]):
    """Implements :class:`~simfarm.execution.Executor` with Ray actors (Ray must be
    initialised: see :class:`RayRuntime`)."""

    def __init__(
        self,
        spec: BackendSpec,
        on_result: ResultHandler[PayloadT],
        options: RayExecutorOptions | None = None,
        rates: dict[str, RequestRate] | None = None,
    ) -> None:
        """``rates``: request-rate limiters by endpoint, shared with other executors (a
        persona pool's members on one server share its budget)."""
        import ray

        self.options = options or RayExecutorOptions()
        super().__init__(on_result)
        self._spec_json = spec.model_dump(mode="json")
        num_cpus = self.options.num_cpus
        if num_cpus is None:
            num_cpus = 0.1 if spec.name in REMOTE_BACKENDS else 1.0
        actor_class: Any = ray.remote(_BackendWorker)
        self._actor_class: Any = actor_class.options(
            num_cpus=num_cpus,
            num_gpus=self.options.num_gpus,
            max_restarts=self.options.max_actor_restarts,
            max_task_retries=0,  # the executor retries, so it can count and bound retries
            max_concurrency=self.options.in_flight + 2,
        )
        self._queue: deque[_Chunk[PayloadT]] = deque()
        """Chunks waiting to be sent (retries at the front)."""
        self._unchunked: deque[Job[PayloadT]] = deque()
        self._actors: list[_Actor] = []
        self._sent_by_process: dict[tuple[int, int], int] = {}
        """Requests sent per actor process, as it last reported them (the requests a killed
        process sent after its last report are not known here)."""
        self._restarts = self._replacements = self._retries = self._worker_failures = 0
        self._deaths = 0
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        handles = [self._actor_class.remote(self._spec_json) for _ in range(self.options.actors)]
        infos = self._get([handle.info.remote() for handle in handles])
        self._actors = [_Actor(h, info["pid"]) for h, info in zip(handles, infos, strict=True)]
        self._identity: dict[str, Any] = infos[0]["identity"]
        self._rate = self._rate_for(infos[0]["endpoint"], rates if rates is not None else {})
        self._batch_size = max(1, int(infos[0]["batch_size"]))

    def _rate_for(self, endpoint: str | None, rates: dict[str, RequestRate]) -> RequestRate | None:
        spec = self.options.request_rate
        if spec is None:
            return None
        if endpoint is None:  # a model of the actor's own: its budget is its own
            return RequestRate(spec)
        rate = rates.get(endpoint)
        if rate is None:
            rate = rates[endpoint] = RequestRate(spec)
        else:
            rate.tighten(spec)
        return rate

    def _get(self, refs: list[Any]) -> list[Any]:
        import ray

        try:
            return list(ray.get(refs, timeout=self.options.start_timeout_s))
        except ray.exceptions.GetTimeoutError:
            raise SimfarmError(
                f"Ray actors for backend {self._spec_json['name']!r} did not start within "
                f"{self.options.start_timeout_s:g}s: does the cluster have the resources "
                f"they ask for (num_cpus={self.options.num_cpus}, "
                f"num_gpus={self.options.num_gpus}, {self.options.actors} actors)?"
            ) from None
        except ray.exceptions.RayActorError as error:
            raise SimfarmError(f"a Ray actor could not build its backend: {error}") from None

    # -- the Executor protocol --

    def identity(self) -> dict[str, Any]:
        return self._identity

    def submit(self, job: Job[PayloadT]) -> None:
        self._count_submitted()
        self._unchunked.append(job)
        self._wake.set()
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch())

    def counters(self) -> ExecutorCounters:
        return ExecutorCounters(
            submitted=self._submitted,
            finished=self._finished,
            requests_sent=sum(self._sent_by_process.values()),
        )

    async def aclose(self) -> None:
        tasks = [t for t in (self._dispatcher, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._dispatcher = None
        self._tasks.clear()
        if self._actors:
            import ray

            for actor in self._actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor.handle, no_restart=True)
            self._actors = []

    # -- beyond the protocol --

    def stats(self) -> RayStats:
        return RayStats(
            actors=self.options.actors,
            actor_deaths=self._deaths,
            actor_restarts=self._restarts,
            actor_replacements=self._replacements,
            retries=self._retries,
            worker_failures=self._worker_failures,
        )

    def actor_pids(self) -> list[int]:
        """Process ids of the live actors (for tests that kill one)."""
        return [actor.pid for actor in self._actors if actor.healthy]

    # -- dispatching --

    def _next_chunk(self) -> _Chunk[PayloadT] | None:
        if self._queue:
            return self._queue.popleft()
        if not self._unchunked:
            return None
        size = min(self._batch_size, len(self._unchunked))
        return _Chunk([self._unchunked.popleft() for _ in range(size)])

    def _free_actor(self) -> _Actor | None:
        free = [a for a in self._actors if a.healthy and a.in_flight < self.options.in_flight]
        return min(free, key=lambda a: a.in_flight) if free else None

    async def _dispatch(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                actor = self._free_actor()
                if actor is None:
                    break
                chunk = self._next_chunk()
                if chunk is None:
                    break
                actor.in_flight += 1  # reserve the slot before waiting on the rate
                if self._rate is not None:
                    for _ in chunk.jobs:
                        await self._rate.acquire()
                self._spawn(self._send(actor, chunk))
            if not any(a.healthy or a.recovering for a in self._actors):
                self._fail_all_waiting("every Ray actor died and none could be restarted")

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, actor: _Actor, chunk: _Chunk[PayloadT]) -> None:
        import ray

        if not actor.healthy:  # it died while this chunk waited for the rate limiter
            actor.in_flight -= 1
            self._queue.appendleft(chunk)
            self._wake.set()
            return
        try:
            completions, pid, sent_so_far = await actor.handle.complete.remote(
                [job.request for job in chunk.jobs]
            )
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as error:
            actor.in_flight -= 1
            self._actor_failed(actor)
            self._resend(chunk, f"{type(error).__name__}: {str(error).splitlines()[0]}")
            self._wake.set()
            return
        except Exception as error:  # the call itself failed (e.g. unpicklable): not retried
            failure = Failure(kind="backend", message=f"{type(error).__name__}: {error}")
            completions = [Completion(failure=failure) for _ in chunk.jobs]
        else:
            key = (id(actor), pid)
            self._sent_by_process[key] = max(self._sent_by_process.get(key, 0), sent_so_far)
        actor.in_flight -= 1
        if self._rate is not None:
            self._rate.record(sum(c.prompt_tokens + c.completion_tokens for c in completions))
        for job, completion in zip(chunk.jobs, completions, strict=True):
            self._deliver(job, completion)
        self._wake.set()

    def _deliver(self, job: Job[PayloadT], completion: Completion) -> None:
        if self._hand_back(job, completion):
            self._unchunked.append(job)

    def _resend(self, chunk: _Chunk[PayloadT], error: str) -> None:
        chunk.failed_sends += 1
        chunk.errors.append(error)
        if chunk.failed_sends > self.options.max_job_retries:
            self._give_up(chunk)
        else:
            self._retries += len(chunk.jobs)
            self._queue.appendleft(chunk)

    def _give_up(self, chunk: _Chunk[PayloadT]) -> None:
        message = (
            f"the Ray actors sending this request died {chunk.failed_sends} times; "
            f"last: {chunk.errors[-1]}"
        )
        failure = Failure(kind="worker", message=message, attempts=chunk.failed_sends)
        self._worker_failures += len(chunk.jobs)
        for job in chunk.jobs:
            self._deliver(job, Completion(failure=failure))

    def _fail_all_waiting(self, reason: str) -> None:
        while True:
            chunk = self._next_chunk()
            if chunk is None:
                return
            chunk.failed_sends = max(chunk.failed_sends, 1)
            chunk.errors.append(reason)
            self._give_up(chunk)

    # -- actor failures --

    def _actor_failed(self, actor: _Actor) -> None:
        if actor.healthy:
            self._deaths += 1
        actor.healthy = False
        if not actor.recovering:
            actor.recovering = True
            self._spawn(self._recover(actor))

    async def _recover(self, actor: _Actor) -> None:
        """Wait for Ray's restart of ``actor``; once restarts are spent, start a new one."""
        import ray

        deadline = time.monotonic() + self.options.start_timeout_s
        while time.monotonic() < deadline:
            try:
                info = await actor.handle.info.remote()
            except ray.exceptions.ActorUnavailableError:  # restarting: ask again shortly
                await asyncio.sleep(0.2)
                continue
            except ray.exceptions.RayActorError:  # dead for good
                break
            if info["pid"] != actor.pid:
                self._restarts += 1
                actor.pid = info["pid"]
            actor.healthy, actor.recovering = True, False
            self._wake.set()
            return
        actor.recovering = False
        if actor in self._actors:
            self._actors.remove(actor)
        if self._replacements < self.options.max_replacements:
            self._replacements += 1
            handle = self._actor_class.remote(self._spec_json)
            try:
                info = await handle.info.remote()
            except ray.exceptions.RayActorError:
                pass
            else:
                self._actors.append(_Actor(handle, info["pid"]))
        self._wake.set()


def options_for(spec: BackendSpec, explicit: dict[str, Any]) -> RayExecutorOptions:
    """A backend's ``ray`` settings with ``explicit`` fields over them."""
    try:
        return RayExecutorOptions.model_validate({**spec.ray, **explicit})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise ConfigError(
            f"backend {spec.name!r} (model {spec.model!r}): invalid `ray` settings: {problems}"
        ) from None


class RayRuntime:
    """Ray for one process: connects to a cluster, or starts a local runtime on loopback.

    ``address`` (or ``RAY_ADDRESS``) names a running cluster; without one, a new local
    runtime is started whose servers all bind 127.0.0.1 (see :data:`LOOPBACK_ENV`) and the
    start is refused if Ray reports any other node address. Ray is imported here, so a job
    that does not ask for it never pays its start-up.
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
    ) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.executors: list[RayExecutor[Any]] = []
        self.rates: dict[str, RequestRate] = {}
        """Request-rate limiters by endpoint, shared by every executor of this runtime."""
        self._owned = False
        """True when this object started (or connected) Ray, and so shuts it down."""

    def __enter__(self) -> RayRuntime:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.address is None:
            # Read when Ray is imported; the raylet and workers inherit it from here.
            os.environ[LOOPBACK_ENV] = "0"
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'simfarm[ray]'") from None
        if self.address is None:
            # Ray imported before us read the variable already: the same switch, set where
            # Ray reads it (checked below: the start is refused unless the node is loopback).
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False
        if ray.is_initialized():  # the caller's Ray (a notebook, a trainer): use it as is
            return
        self._owned = True
        if self.address is not None:
            ray.init(address=self.address, log_to_driver=False)
            return
        ray.init(
            address="local",  # a new runtime, never one someone else started here
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus,
            include_dashboard=False,
            log_to_driver=False,
        )
        node_ip = ray.util.get_node_ip_address()
        if node_ip not in ("127.0.0.1", "::1"):
            self.stop()
            raise SimfarmError(
                f"the local Ray runtime would listen on {node_ip}, not on loopback only "
                f"(simfarm sets {LOOPBACK_ENV}=0 for local runtimes; this Ray ignored it): "
                "refusing to run; pass a cluster --ray-address instead"
            )

    def stop(self) -> None:
        if self._owned:
            import ray

            ray.shutdown()
            self._owned = False

    def executor_factory(
        self, options: RayExecutorOptions | None = None, explicit: dict[str, Any] | None = None
    ) -> ExecutorFactory:
        """Ray executors (remembered in :attr:`executors` for summaries).

        ``options`` as given; or, without them, each backend spec's ``ray`` settings (from
        its persona file) with ``explicit`` fields (e.g. command-line ``--ray-actors``)
        over them."""

        def factory(spec: BackendSpec, on_result: Any) -> RayExecutor[Any]:
            chosen = options if options is not None else options_for(spec, explicit or {})
            executor: RayExecutor[Any] = RayExecutor(spec, on_result, chosen, self.rates)
            self.executors.append(executor)
            return executor

        return factory

    def stats(self) -> RayStats:
        """The executors' stats added up."""
        parts = [e.stats() for e in self.executors]
        return RayStats(
            actors=sum(p.actors for p in parts),
            actor_deaths=sum(p.actor_deaths for p in parts),
            actor_restarts=sum(p.actor_restarts for p in parts),
            actor_replacements=sum(p.actor_replacements for p in parts),
            retries=sum(p.retries for p in parts),
            worker_failures=sum(p.worker_failures for p in parts),
        )
