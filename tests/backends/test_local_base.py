"""What every local batched backend inherits: batching, order, one-by-one fallback when a
batch fails, per-request failures, accounting, and work off the event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import ClassVar

from simfarm.backends.base import BackendSpec
from simfarm.backends.local_base import LocalBatchedBackend, failed
from simfarm.types import Completion, CompletionRequest


class UpperCaseBackend(LocalBatchedBackend[str]):
    """Answers a prompt with its upper case; a batch holding "poison" raises as a whole,
    an empty prompt cannot be prepared."""

    name: ClassVar[str] = "upper"

    def __init__(self, batch_size: int) -> None:
        super().__init__(batch_size)
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> UpperCaseBackend:
        return cls(2)

    def identity(self) -> dict[str, str]:
        return {"backend": self.name}

    def _prepare(self, request: CompletionRequest) -> str | Completion:
        if not request.prompt:
            return failed("client_error", "empty prompt")
        return request.prompt

    def _run_batch(self, batch: list[str]) -> list[Completion]:
        self.threads.add(threading.get_ident())
        self.batches.append(list(batch))
        if "poison" in batch:
            raise RuntimeError("poisoned batch")
        return [Completion(text=item.upper()) for item in batch]


def test_a_failing_batch_is_rerun_one_by_one_and_only_the_culprit_fails() -> None:
    backend = UpperCaseBackend(batch_size=3)
    prompts = ["a", "", "poison", "b", "c", "d"]
    results = asyncio.run(backend.complete([CompletionRequest(prompt=p) for p in prompts]))
    assert [r.text for r in results] == ["A", "", "", "B", "C", "D"]
    assert results[1].failure is not None and results[1].failure.kind == "client_error"
    assert results[2].failure is not None and results[2].failure.kind == "backend"
    assert "poisoned batch" in results[2].failure.message
    # Batches of 3 over the 5 preparable prompts; the poisoned one rerun alone per request.
    assert backend.batches == [["a", "poison", "b"], ["a"], ["poison"], ["b"], ["c", "d"]]
    assert backend.requests_sent == 5
    assert all(r.latency_s > 0 for r in results if r.ok)
    assert threading.get_ident() not in backend.threads  # the model ran off the event loop
    assert backend.max_concurrency == 1
