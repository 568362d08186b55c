"""Ray executor scaling: 4 actors against 1, each capped at 8 requests in flight.

A loopback server with 200 ms latency runs in its own process, so the work is
latency-bound on purpose: one actor can reach at most 8 / 0.2 s = 40 requests/s, four
actors 160/s, and the 2 CPU cores of this machine are not what is measured. Each run is a
full annotation job (persona -> judge -> driver -> Ray actors -> backend -> driver ->
cache). Throughput is counted from the first answer to the last, so the seconds an actor
takes to start (a fixed cost per job, not a rate) stay out of it.

Ray runs as a local loopback-only runtime (see ``simfarm.execution.ray_executor``).

Last line: ``ratio=<throughput with 4 actors / throughput with 1 actor>`` (target >= 3.5).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from simfarm.annotation import BackendOverrides, annotate_async, load_annotator
from simfarm.cache import CompletionCache
from simfarm.execution.ray_executor import RayExecutorOptions, RayRuntime
from simfarm.testing.openai_server import start_server
from simfarm.types import PairwiseItem

LATENCY_S = 0.2
IN_FLIGHT = 8
SECONDS_PER_RUN = 6.0


def items(n: int, tag: str) -> list[PairwiseItem]:
    return [
        PairwiseItem(
            instruction=f"[{tag}] Instruction number {i}: explain topic {i % 97}.",
            output_1=f"A short answer {i}.",
            output_2=f"A somewhat longer answer for item {i}, with a little more detail.",
            generator_1="reference",
            generator_2="model",
        )
        for i in range(n)
    ]


async def run(runtime: RayRuntime, base_url: str, actors: int, cache_path: Path) -> float:
    """Answers per second from the first answer to the last."""
    n = int(actors * IN_FLIGHT / LATENCY_S * SECONDS_PER_RUN)
    stamps: list[float] = []

    def progress(done: int, total: int, cost: float) -> None:
        if done:
            stamps.append(time.perf_counter())

    cache = CompletionCache(cache_path)
    try:
        result = await annotate_async(
            items(n, f"{actors} actors"),
            load_annotator("alpaca_farm_greedy"),
            cache=cache,
            progress=progress,
            backend_overrides=BackendOverrides(model="bench", options={"base_url": base_url}),
            executor_factory=runtime.executor_factory(
                RayExecutorOptions(actors=actors, in_flight=IN_FLIGHT)
            ),
        )
    finally:
        cache.close()
    assert result.summary.n_annotated == n, result.summary
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    limit = actors * IN_FLIGHT / LATENCY_S
    print(
        f"{actors} actor(s) x {IN_FLIGHT} in flight: {n} annotations, {rate:6.1f} req/s "
        f"(limit {limit:.0f}/s, {rate / limit:.3f} of it)",
        flush=True,
    )
    return rate


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_server(latency_s=LATENCY_S) as server,
        RayRuntime() as runtime,
    ):
        one = asyncio.run(run(runtime, server.base_url, 1, Path(tmp) / "one.sqlite"))
        four = asyncio.run(run(runtime, server.base_url, 4, Path(tmp) / "four.sqlite"))
    sys.stdout.flush()
    print(f"ratio={four / one:.4f}")


if __name__ == "__main__":
    main()
