"""Run many requests against one backend in this process, as fast as it allows.

A fixed set of workers (``backend.max_concurrency``) pulls up to ``backend.batch_size``
requests at a time from one queue: an HTTP backend gets 64 workers taking one request each,
a local model one worker taking padded batches. Jobs may be submitted while earlier ones
are already in flight, so a large run starts sending at once instead of after building
every prompt. Each result is handed to ``on_result`` the moment it arrives (that is where
the caller commits it to the cache), so a crash loses at most what was in flight.
``on_result`` may ask for the job to be sent again (a judge whose answer was unreadable).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from simfarm.backends.base import Backend
from simfarm.types import Completion, CompletionRequest, Failure

JobT = TypeVar("JobT")


@dataclass
class Job(Generic[JobT]):
    request: CompletionRequest
    payload: JobT
    """Whatever the caller needs to route the result back."""
    attempt: int = 1


ResultHandler = Callable[[Job[JobT], Completion], bool]
"""Called with each result; returns True to send the job again."""


class JobRunner(Generic[JobT]):
    """Feeds one backend from a queue; use :meth:`submit`, then :meth:`close` and :meth:`wait`."""

    def __init__(self, backend: Backend, on_result: ResultHandler[JobT]) -> None:
        self.backend = backend
        self.on_result = on_result
        self._queue: asyncio.Queue[Job[JobT]] = asyncio.Queue()
        self._pending = 0
        self._closed = False
        self._done = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._error: BaseException | None = None
        self._max_workers = max(1, backend.max_concurrency)
        self._batch_size = max(1, backend.batch_size)

    def submit(self, job: Job[JobT]) -> None:
        self._pending += 1
        self._queue.put_nowait(job)
        if len(self._workers) < min(self._max_workers, self._pending):
            self._workers.append(asyncio.create_task(self._worker()))

    def close(self) -> None:
        """No more jobs will be submitted."""
        self._closed = True
        if self._pending == 0:
            self._done.set()

    async def wait(self) -> None:
        try:
            await self._done.wait()
        finally:
            for task in self._workers:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
        if self._error is not None:
            raise self._error

    async def _worker(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                completions = await self.backend.complete([job.request for job in batch])
            except Exception as error:  # a backend bug must not hang the run
                failure = Failure(kind="backend", message=f"{type(error).__name__}: {error}")
                completions = [Completion(failure=failure) for _ in batch]
            for job, completion in zip(batch, completions, strict=True):
                try:
                    again = self.on_result(job, completion)
                except BaseException as error:  # surface it from wait(), don't hang
                    self._error = error
                    self._done.set()
                    raise
                if again:
                    job.attempt += 1
                    self._queue.put_nowait(job)
                else:
                    self._pending -= 1
            if self._closed and self._pending == 0:
                self._done.set()
