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
from typing import Any, Generic

from simfarm.backends.base import Backend
from simfarm.execution.executor import ExecutorCounters, Job, PayloadT, ResultHandler
from simfarm.types import Completion, Failure


class InProcessExecutor(Generic[PayloadT]):
    """Feeds one backend from a queue; implements :class:`~simfarm.execution.Executor`."""

    def __init__(self, backend: Backend, on_result: ResultHandler[PayloadT]) -> None:
        self.backend = backend
        self.on_result = on_result
        self._queue: asyncio.Queue[Job[PayloadT]] = asyncio.Queue()
        self._pending = 0
        self._submitted = 0
        self._finished = 0
        self._sent_before = backend.requests_sent
        self._closed = False
        self._done = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._error: BaseException | None = None
        self._max_workers = max(1, backend.max_concurrency)
        self._batch_size = max(1, backend.batch_size)

    def identity(self) -> dict[str, Any]:
        return self.backend.identity()

    def submit(self, job: Job[PayloadT]) -> None:
        self._pending += 1
        self._submitted += 1
        self._queue.put_nowait(job)
        if len(self._workers) < min(self._max_workers, self._pending):
            self._workers.append(asyncio.create_task(self._worker()))

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
                try:
                    again = self.on_result(job, completion)
                except BaseException as error:  # surface it from wait(), don't hang
                    self._error = error
                    self._done.set()
                    raise
                if again is not None:
                    job.request = again
                    job.attempt += 1
                    self._queue.put_nowait(job)
                else:
                    self._pending -= 1
                    self._finished += 1
            if self._closed and self._pending == 0:
                self._done.set()
