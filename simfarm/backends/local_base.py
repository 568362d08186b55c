"""What every backend that runs a model in this process shares (``transformers``,
``embedded``, ``vllm``).

Such a model is one object in memory that is not safe to call from two threads, and it is
fastest fed whole batches. So a local backend

- answers a :meth:`~LocalBatchedBackend.complete` call in a worker thread
  (``asyncio.to_thread``), under one lock, leaving the event loop free for the cache and the
  rest of the run; ``max_concurrency`` is 1: parallelism comes from batching;
- prepares each request on its own (a request that cannot be prepared, e.g. an over-long
  prompt, fails alone with its own failure) and runs the rest in forward passes of
  ``rows_per_pass`` requests (``batch_size`` unless the subclass says otherwise: 1 makes every
  answer independent of what else shares the call, see
  :attr:`~simfarm.backends.transformers_local.LocalModelOptions.batch_invariant`);
- when a whole chunk fails (one bad request, an out-of-memory batch), runs its requests one
  by one, so only the request at fault loses its answer;
- charges each request its share of the batch's wall time (``latency_s``), so latencies add
  up to the time the run spent, and counts ``requests_sent`` (what actually ran).

A subclass says how to prepare a request (:meth:`~LocalBatchedBackend._prepare`), how to run
a batch of prepared ones (:meth:`~LocalBatchedBackend._run_batch`), and what a failed single
request becomes (:meth:`~LocalBatchedBackend._batch_failure`).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Generic, Literal, TypeVar

from simfarm.backends.base import Backend
from simfarm.types import Completion, CompletionRequest, Failure

logger = logging.getLogger(__name__)

Prepared = TypeVar("Prepared")
"""A request in the backend's own terms (token ids and sampling state, a vLLM input...)."""


def failed(kind: Literal["client_error", "backend"], message: str) -> Completion:
    """A completion that carries only a failure."""
    return Completion(failure=Failure(kind=kind, message=message))


class LocalBatchedBackend(Backend, Generic[Prepared]):
    """A model in this process: batched, one batch at a time, off the event loop."""

    def __init__(self, batch_size: int, rows_per_pass: int | None = None) -> None:
        self.batch_size = batch_size
        """Requests per :meth:`complete` call (the executor's batches)."""
        self.rows_per_pass = rows_per_pass or batch_size
        """Requests per :meth:`_run_batch` (one forward pass)."""
        self.max_concurrency = 1
        self._lock = threading.Lock()
        self._requests_sent = 0

    @property
    def requests_sent(self) -> int:
        return self._requests_sent

    async def complete(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        if not requests:
            return []
        return await asyncio.to_thread(self._complete_sync, list(requests))

    def _complete_sync(self, requests: list[CompletionRequest]) -> list[Completion]:
        with self._lock:
            self._ready()
            results: list[Completion | None] = [None] * len(requests)
            pending: list[tuple[int, Prepared]] = []
            for index, request in enumerate(requests):
                prepared = self._prepare(request)
                if isinstance(prepared, Completion):
                    results[index] = prepared
                else:
                    pending.append((index, prepared))
            pending = self._order(pending)
            for start in range(0, len(pending), self.rows_per_pass):
                chunk = pending[start : start + self.rows_per_pass]
                for index, completion in self._run_or_split(chunk):
                    results[index] = completion
            return [c if c is not None else failed("backend", "no result") for c in results]

    def _run_or_split(self, chunk: list[tuple[int, Prepared]]) -> list[tuple[int, Completion]]:
        """Run ``chunk`` as one batch; if it raises, run each request alone."""
        self._requests_sent += len(chunk)
        started = time.perf_counter()
        try:
            completions = self._run_batch([item for _index, item in chunk])
        except Exception as error:
            if len(chunk) == 1:
                return [(chunk[0][0], self._batch_failure(error))]
            logger.warning(
                "%s: batch of %d failed (%s); retrying one by one", self.name, len(chunk), error
            )
            self._requests_sent -= len(chunk)
            results: list[tuple[int, Completion]] = []
            for item in chunk:
                results.extend(self._run_or_split([item]))
            return results
        # Each request is charged its share of the batch: summed over a run, latency_s is
        # then the time the run spent (what s/1000 in validation reports should measure).
        latency = (time.perf_counter() - started) / len(chunk)
        return [
            (index, completion.model_copy(update={"latency_s": latency}))
            for (index, _item), completion in zip(chunk, completions, strict=True)
        ]

    # -- what a subclass provides --

    def _ready(self) -> None:
        """Called under the lock before each call's requests are prepared: load the model
        here (raise :class:`~simfarm.errors.BackendError` if it cannot be: every request
        would fail)."""

    @abc.abstractmethod
    def _prepare(self, request: CompletionRequest) -> Prepared | Completion:
        """The request in the backend's terms, or the failure (a :class:`Completion`) that
        takes its place when it cannot run at all (kind ``client_error``: retrying cannot
        help)."""

    def _order(self, pending: list[tuple[int, Prepared]]) -> list[tuple[int, Prepared]]:
        """The order requests are batched in (default: as given)."""
        return pending

    @abc.abstractmethod
    def _run_batch(self, batch: list[Prepared]) -> list[Completion]:
        """Answer ``batch`` (one completion per item, in order); may raise, and is then
        retried one request at a time. ``latency_s`` is filled in by the caller."""

    def _batch_failure(self, error: Exception) -> Completion:
        """What a single request whose run raised ``error`` becomes."""
        return failed("backend", f"generation failed: {type(error).__name__}: {error}")
