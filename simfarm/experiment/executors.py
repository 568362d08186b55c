"""Where an experiment's judge stages send their requests: in this process, or Ray actors.

``executor: ray`` sends the feedback and evaluation judges' requests through
:class:`~simfarm.execution.ray_executor.RayExecutor` actors, as ``simfarm annotate
--executor ray`` does: the cluster at ``RAY_ADDRESS``, or a local loopback-only runtime.
Results, records and cache keys are the same as in-process (the cache stays in this
process, the driver). Training and generation stay in this process either way.

Ray starts on the first request a judge really sends: a rule judge (``longest``), a stage
finished in an earlier run, or a run with nothing to judge never pays its start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simfarm.backends.base import BackendSpec
    from simfarm.execution import ExecutorFactory
    from simfarm.execution.ray_executor import RayRuntime, RayStats


class JudgeExecutors:
    """The executor factory of one experiment run's judge stages; :meth:`close` at the end."""

    def __init__(self, executor: str) -> None:
        if executor not in ("local", "ray"):  # the config allows only these
            raise ValueError(f"unknown executor {executor!r}")
        self.executor = executor
        self.runtime: RayRuntime | None = None

    def factory(self) -> ExecutorFactory | None:
        """None for ``local`` (the run's in-process default); for ``ray``, a factory that
        starts the Ray runtime the first time a judge needs a backend."""
        if self.executor == "local":
            return None

        def ray_executor(spec: BackendSpec, on_result: Any) -> Any:
            if self.runtime is None:
                from simfarm.execution.ray_executor import RayRuntime

                runtime = RayRuntime()
                runtime.start()
                self.runtime = runtime
            return self.runtime.executor_factory()(spec, on_result)

        return ray_executor

    def stats(self) -> RayStats | None:
        """Actors, deaths, restarts and retries so far (None when Ray never started)."""
        return None if self.runtime is None else self.runtime.stats()

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.stop()
            self.runtime = None
