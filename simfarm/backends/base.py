"""The one interface every LLM backend implements.

A backend turns a batch of :class:`~simfarm.types.CompletionRequest` into the same number of
:class:`~simfarm.types.Completion`, in order. It never raises for a single bad request: the
failure is returned in ``Completion.failure`` with its kind, so one rate-limited item cannot
sink a run of thousands. Backends decide how to use the batch: an HTTP backend sends each
request on its own (bounded concurrency inside), a local model pads them into one forward
pass.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from simfarm.types import Completion, CompletionRequest


class PriceTable(BaseModel):
    """USD per million tokens, for cost accounting."""

    model_config = ConfigDict(extra="forbid")

    prompt_per_million: float = 0.0
    completion_per_million: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.prompt_per_million
            + completion_tokens * self.completion_per_million
        ) / 1e6


class BackendSpec(BaseModel):
    """How to build a backend, as declared in a persona file.

    ``options`` are validated by the named backend's own options model, so a typo there is
    reported with the backend's field names.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    """Registered backend name: ``openai``, ``transformers``, ``embedded``, ``vllm``."""
    model: str = ""
    """Model id as the backend knows it (API model name, HF id or local path)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Backend-specific settings (base_url, concurrency, device, ...)."""


class Backend(abc.ABC):
    """A source of completions. Subclasses set ``name`` and implement :meth:`complete`."""

    name: ClassVar[str]

    batch_size: int = 1
    """How many requests the runner should hand over per :meth:`complete` call."""
    max_concurrency: int = 1
    """How many :meth:`complete` calls the runner may have in flight at once."""

    @classmethod
    @abc.abstractmethod
    def from_spec(cls, spec: BackendSpec) -> Backend:
        """Build from a persona's backend declaration (validating ``spec.options``)."""

    @abc.abstractmethod
    async def complete(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        """Answer each request, in order. Failures are returned, not raised."""

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """What makes this backend's answers differ from another's (for cache keys):
        backend name, model, and where it is served (base_url), never secrets."""

    @property
    def requests_sent(self) -> int:
        """Requests actually sent to the model in this process (cache hits excluded)."""
        return 0

    async def aclose(self) -> None:
        """Release connections, sessions and models."""
        return None

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
