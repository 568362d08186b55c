"""The ``--executor`` options commands share: in-process (default) or Ray actors.

Ray is imported only when ``--executor ray`` is given: starting it costs seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from simfarm.errors import ConfigError

if TYPE_CHECKING:
    from simfarm.execution import ExecutorFactory
    from simfarm.execution.ray_executor import RayRuntime

ExecutorOption = Annotated[
    str,
    typer.Option(
        help="Where requests are sent from: 'local' (this process) or 'ray' (Ray actors: a "
        "local loopback-only runtime, or the cluster at --ray-address / RAY_ADDRESS)."
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(help="Ray cluster to run on (default: RAY_ADDRESS, else a local runtime)."),
]
RayActorsOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Ray actors per backend, each with its own client or model (default: the "
        "persona's backend.ray.actors, else 2).",
    ),
]
RayInFlightOption = Annotated[
    int | None,
    typer.Option(min=1, help="Requests (chunks) in flight per Ray actor (default 8)."),
]
RayNumCpusOption = Annotated[
    float | None,
    typer.Option(help="CPUs each Ray actor reserves (default: 0.1 for HTTP, 1 for local models)."),
]
RayNumGpusOption = Annotated[
    float | None, typer.Option(help="GPUs each Ray actor reserves (default 0).")
]
RequestsPerMinuteOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Requests per minute for all Ray actors together (one budget in the driver).",
    ),
]

TokensPerMinuteOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Prompt + completion tokens per minute for all Ray actors together (answers in "
        "flight when it fills may overshoot it by their own size).",
    ),
]


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """Where a command's requests are sent from, as its ``--executor``/``--ray-*`` options
    said: built once per command (checked at once, before any input is read) and handed to
    :func:`executor_factory_for`."""

    executor: str = "local"
    address: str | None = None
    actors: int | None = None
    in_flight: int | None = None
    num_cpus: float | None = None
    num_gpus: float | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    def __post_init__(self) -> None:
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"--executor must be 'local' or 'ray', not {self.executor!r}")
        limited = self.requests_per_minute is not None or self.tokens_per_minute is not None
        if self.executor == "local" and limited:
            raise ConfigError("--requests-per-minute and --tokens-per-minute need --executor ray")

    def explicit(self) -> dict[str, object]:
        """The per-actor settings given on the command line (the rest: the persona's)."""
        given = {
            "actors": self.actors,
            "in_flight": self.in_flight,
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "request_rate": (
                {"max_requests": self.requests_per_minute, "max_tokens": self.tokens_per_minute}
                if self.requests_per_minute or self.tokens_per_minute
                else None
            ),
        }
        return {name: value for name, value in given.items() if value is not None}


@contextlib.contextmanager
def executor_factory_for(
    options: RayOptions,
) -> Iterator[tuple[ExecutorFactory | None, RayRuntime | None]]:
    """``(factory, runtime)``: ``(None, None)`` for in-process runs (the run's default)."""
    if options.executor == "local":
        yield None, None
        return
    from simfarm.execution.ray_executor import RayRuntime

    with RayRuntime(address=options.address) as runtime:
        yield runtime.executor_factory(explicit=options.explicit()), runtime
