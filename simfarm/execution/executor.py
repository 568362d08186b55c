"""The seam between a run (which plans requests and owns the cache) and whatever sends them.

An :class:`Executor` takes jobs for one backend and hands each result back to the driver
through ``on_result`` the moment it arrives; the driver commits it to the cache. The
in-process implementation (:class:`~simfarm.execution.local.InProcessExecutor`) runs the
backend on the driver's event loop; a Ray implementation runs it in actors and streams
results back. Either way, no worker ever opens the cache: only the driver does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from simfarm.backends.base import BackendSpec
from simfarm.types import Completion, CompletionRequest

PayloadT = TypeVar("PayloadT")


@dataclass
class Job(Generic[PayloadT]):
    request: CompletionRequest
    payload: PayloadT
    """Whatever the driver needs to route the result back (opaque to the executor)."""
    attempt: int = 1


ResultHandler = Callable[[Job[PayloadT], Completion], CompletionRequest | None]
"""Called with each result, in the driver; returns the request to send next for this job
(a retry after an unreadable answer) or None when the job is done."""


@dataclass(frozen=True)
class ExecutorCounters:
    """What an executor did so far (for run summaries)."""

    submitted: int
    """Jobs submitted (retries not counted again)."""
    finished: int
    """Jobs whose result the driver accepted as final."""
    requests_sent: int
    """Requests the backend really sent for these jobs, retries included."""


class Executor(Protocol[PayloadT]):
    """Runs jobs against one backend. Use: :meth:`submit` any number of times (also from
    ``on_result``), :meth:`close` when no more will come, then ``await`` :meth:`wait`;
    :meth:`aclose` stops it early (cancellation, errors)."""

    def identity(self) -> dict[str, Any]:
        """The backend's identity, for cache keys (see ``Backend.identity``)."""
        ...

    def submit(self, job: Job[PayloadT]) -> None: ...

    def close(self) -> None:
        """No more jobs will be submitted from outside ``on_result``."""
        ...

    async def wait(self) -> None:
        """Return when every job is final (after :meth:`close`), or raise what failed."""
        ...

    def counters(self) -> ExecutorCounters: ...

    async def aclose(self) -> None:
        """Stop workers; jobs not yet final are dropped (their answers were never paid
        for, or are already in the driver's hands)."""
        ...


class ExecutorFactory(Protocol):
    """Builds the executor for one backend spec: ``factory(spec, on_result)``.

    The in-process factory borrows the backend from a
    :class:`~simfarm.execution.session.BackendSession`; a Ray factory would start actors
    that build the backend from ``spec`` themselves.
    """

    def __call__(
        self, spec: BackendSpec, on_result: ResultHandler[PayloadT]
    ) -> Executor[PayloadT]: ...


class JobLedger(Generic[PayloadT]):
    """What every executor does the same way, whatever sends the requests: count jobs, hand
    each result to ``on_result`` (which may ask for the job to be sent again), know when the
    last one is finished, and surface an error of ``on_result`` from :meth:`wait` instead of
    hanging the run. Subclasses send the jobs and implement :meth:`aclose`."""

    def __init__(self, on_result: ResultHandler[PayloadT]) -> None:
        self.on_result = on_result
        self._pending = 0
        self._submitted = 0
        self._finished = 0
        self._closed = False
        self._done = asyncio.Event()
        self._error: BaseException | None = None

    def _count_submitted(self) -> None:
        self._pending += 1
        self._submitted += 1

    def _hand_back(self, job: Job[PayloadT], completion: Completion) -> bool:
        """Give one result to the driver; True when the job must be sent again (its request
        already replaced by the one ``on_result`` asked for)."""
        try:
            again = self.on_result(job, completion)
        except BaseException as error:  # surface it from wait(), don't hang
            self._error = error
            self._done.set()
            raise
        if again is not None:
            job.request = again
            job.attempt += 1
            return True
        self._pending -= 1
        self._finished += 1
        if self._closed and self._pending == 0:
            self._done.set()
        return False

    def close(self) -> None:
        self._closed = True
        if self._pending == 0:
            self._done.set()

    async def wait(self) -> None:
        try:
            await self._done.wait()
        finally:
            await self.aclose()
        if self._error is not None:
            raise self._error

    async def aclose(self) -> None:
        raise NotImplementedError
