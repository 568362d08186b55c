"""Run many requests against one backend in this process, as fast as it allows.

A fixed set of workers (``backend.max_concurrency``) pulls up to ``backend.batch_size``
requests at a time from one queue: an HTTP backend gets 64 workers taking one request each,
a local model one worker taking padded batches. Each result is handed to ``on_result`` the
moment it arrives (that is where the caller commits it to the cache), so a crash loses at
most what was in flight. ``on_result`` may ask for the job to be sent again (a judge whose
answer could not be parsed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
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


async def run_jobs(
    backend: Backend, jobs: Sequence[Job[JobT]], on_result: ResultHandler[JobT]
) -> None:
    """Send every job (and every retry asked for) through ``backend``."""
    if not jobs:
        return
    queue: asyncio.Queue[Job[JobT]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    pending = len(jobs)
    done = asyncio.Event()
    batch_size = max(1, backend.batch_size)

    async def worker() -> None:
        nonlocal pending
        while True:
            batch = [await queue.get()]
            while len(batch) < batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                completions = await backend.complete([job.request for job in batch])
            except Exception as error:  # a backend bug must not hang the run
                failure = Failure(kind="backend", message=f"{type(error).__name__}: {error}")
                completions = [Completion(failure=failure) for _ in batch]
            for job, completion in zip(batch, completions, strict=True):
                if on_result(job, completion):
                    job.attempt += 1
                    queue.put_nowait(job)
                else:
                    pending -= 1
            if pending == 0:
                done.set()

    n_workers = min(max(1, backend.max_concurrency), len(jobs))
    workers = [asyncio.create_task(worker()) for _ in range(n_workers)]
    try:
        await done.wait()
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
