"""The in-process executor: run many requests against one backend on this event loop.

A fixed set of workers (``backend.max_concurrency``) pulls up to ``backend.batch_size``
requests at a time from one queue: an HTTP backend gets 64 workers taking one request each,
a local model one worker taking padded batches. Jobs may be submitted while earlier ones
are already in flight, so a large run starts sending at once instead of after building
every prompt. Each result is handed to ``on_result`` the moment it arrives (that is where
the driver commits it to the cache), so a crash loses at most what was in flight.
``on_result`` may ask for the job to be sent again (a judge whose answer was unreadable).

The backend is borrowed (a :class:`~simfarm.execution.session.BackendSession` owns it):
closing the executor stops its workers and leaves the backend open for the next run.
"""

from __future__ import annotations

import asyncio
from typing import Any

from simfarm.backends.base import Backend
from simfarm.execution.executor import (
    ExecutorCounters,
    Job,
    JobLedger,
    PayloadT,
    ResultHandler,
)
from simfarm.types import Completion, Failure


class InProcessExecutor(JobLedger[PayloadT]):
    """Feeds one backend from a queue; implements :class:`~simfarm.execution.Executor`."""

    def __init__(self, backend: Backend, on_result: ResultHandler[PayloadT]) -> None:
        super().__init__(on_result)
        self.backend = backend
        self._queue: asyncio.Queue[Job[PayloadT]] = asyncio.Queue()
        self._sent_before = backend.requests_sent
        self._workers: list[asyncio.Task[None]] = []
        self._max_workers = max(1, backend.max_concurrency)
        self._batch_size = max(1, backend.batch_size)

    def identity(self) -> dict[str, Any]:
        return self.backend.identity()

    def submit(self, job: Job[PayloadT]) -> None:
        self._count_submitted()
        self._queue.put_nowait(job)
        if len(self._workers) < min(self._max_workers, self._pending):
            self._workers.append(asyncio.create_task(self._worker()))

    def counters(self) -> ExecutorCounters:
        return ExecutorCounters(
            submitted=self._submitted,
            finished=self._finished,
            requests_sent=self.backend.requests_sent - self._sent_before,
        )

    async def aclose(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

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
                if self._hand_back(job, completion):
                    self._queue.put_nowait(job)
