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
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from simfarm.types import Completion, CompletionRequest

if TYPE_CHECKING:  # execution builds on backends; import it at run time only where used
    from simfarm.execution.limits import EndpointLimiter


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
    ray: dict[str, Any] = Field(default_factory=dict)
    """How ``--executor ray`` runs this backend (``actors``, ``in_flight``, ``num_cpus``,
    ``num_gpus``, ...: the fields of ``simfarm.execution.ray_executor.RayExecutorOptions``);
    command-line ``--ray-*`` options given explicitly win. Ignored by in-process runs; never
    part of a cache key (it changes where answers are fetched, not what they are)."""


class Backend(abc.ABC):
    """A source of completions. Subclasses set ``name`` and implement :meth:`complete`.

    Identity (what the cache key knows of a backend) is, by default, derived rather than
    listed: the backend name, the model, and *every* field of the validated options except
    those named in :attr:`OPERATIONAL_FIELDS`. A new option therefore changes the key
    unless someone decides, explicitly, that it cannot change an answer; forgetting a field
    (``extra_body``, a revision, an engine seed) can no longer serve stale answers.
    """

    name: ClassVar[str]

    options_model: ClassVar[type[BaseModel] | None] = None
    """The pydantic model ``backend.options`` are validated with (for :meth:`identity`)."""
    OPERATIONAL_FIELDS: ClassVar[frozenset[str]] = frozenset()
    """Option fields that change how answers are fetched, never what they are (timeouts,
    concurrency, retries, budgets, API keys, prices): left out of :meth:`identity`."""

    batch_size: int = 1
    """How many requests the runner should hand over per :meth:`complete` call."""
    max_concurrency: int = 1
    """How many :meth:`complete` calls the runner may have in flight at once."""

    _limiter: EndpointLimiter | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.options_model is not None:
            unknown = cls.OPERATIONAL_FIELDS - set(cls.options_model.model_fields)
            if unknown:
                raise TypeError(
                    f"{cls.__name__}.OPERATIONAL_FIELDS names fields that "
                    f"{cls.options_model.__name__} does not have: {sorted(unknown)}"
                )

    @classmethod
    @abc.abstractmethod
    def from_spec(cls, spec: BackendSpec) -> Backend:
        """Build from a persona's backend declaration (validating ``spec.options``)."""

    @abc.abstractmethod
    async def complete(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        """Answer each request, in order. Failures are returned, not raised."""

    def identity(self) -> dict[str, Any]:
        """What makes this backend's answers differ from another's (for cache keys), never
        secrets: name, model and the options minus :attr:`OPERATIONAL_FIELDS`.

        Backends whose answers depend on something the options only point to (a local
        folder's weights) override this to add a content digest. The default reads the
        instance's ``model`` (str) and ``options`` (the validated options model)."""
        model, options = getattr(self, "model", None), getattr(self, "options", None)
        if not isinstance(model, str) or not isinstance(options, BaseModel):
            raise TypeError(
                f"{type(self).__name__} needs `model` (str) and `options` (its validated "
                "options model) for the default identity(), or its own identity()"
            )
        return {
            "backend": self.name,
            "model": model,
            "options": options_identity(options, self.OPERATIONAL_FIELDS),
        }

    def endpoint(self) -> str | None:
        """Where requests go, when several backend instances may share it (e.g. base URL +
        model); instances with the same endpoint share one :class:`EndpointLimiter` in a
        session. None: this instance is its own endpoint (a model loaded in-process)."""
        return None

    def request_budget(self) -> int | None:
        """The most requests this backend may send (None: unlimited)."""
        return None

    @property
    def limiter(self) -> EndpointLimiter:
        """Concurrency and budget for this backend's endpoint (its own unless a session
        bound a shared one with :meth:`bind_limiter`)."""
        if self._limiter is None:
            from simfarm.execution.limits import EndpointLimiter

            self._limiter = EndpointLimiter(self.max_concurrency, self.request_budget())
        return self._limiter

    def bind_limiter(self, limiter: EndpointLimiter) -> None:
        """Share ``limiter`` with the other backends on this endpoint."""
        limiter.tighten(self.max_concurrency, self.request_budget())
        self._limiter = limiter

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


def options_identity(options: BaseModel, operational: frozenset[str]) -> dict[str, Any]:
    """The validated options as plain JSON, minus the operational fields: defaults
    included, so changing a default that changes answers changes the key too."""
    return options.model_dump(mode="json", exclude=set(operational))
