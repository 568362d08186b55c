"""What the annotation benchmarks share: the pairs they judge, and one timed simfarm run of
the ``alpaca_farm_greedy`` persona against a loopback OpenAI-compatible server.

Imported as ``_common`` by scripts run as ``python bench/<name>.py`` (Python puts the
script's folder first on the path), so each script stays standalone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from simfarm.annotation import AnnotationSummary, BackendOverrides, annotate_async, load_annotator
from simfarm.cache import CompletionCache
from simfarm.types import PairwiseItem

PERSONA = "alpaca_farm_greedy"


def pairwise_items(n: int) -> list[PairwiseItem]:
    """``n`` distinct pairs (distinct prompts, so distinct requests and cache keys)."""
    return [
        PairwiseItem(
            instruction=f"Instruction number {i}: explain topic {i % 97}.",
            output_1=f"A short answer {i}.",
            output_2=f"A somewhat longer answer for item {i}, with a little more detail.",
            generator_1="reference",
            generator_2="model",
        )
        for i in range(n)
    ]


@dataclass(frozen=True)
class TimedRun:
    elapsed_s: float
    """Wall time of ``annotate_async`` alone (items and persona are built before)."""
    summary: AnnotationSummary
    cache_backlog: int
    """The cache writer's worst backlog during the run."""


async def timed_annotation(
    base_url: str, cache_path: Path, n_items: int, concurrency: int = 64
) -> TimedRun:
    """Annotate :func:`pairwise_items` ``(n_items)`` through ``base_url`` with a fresh
    cache handle on ``cache_path`` (as a new ``simfarm annotate`` process would)."""
    persona = load_annotator(PERSONA)
    cache = CompletionCache(cache_path)
    items = pairwise_items(n_items)
    started = time.perf_counter()
    result = await annotate_async(
        items,
        persona,
        cache=cache,
        backend_overrides=BackendOverrides(
            model="bench", options={"base_url": base_url, "max_concurrency": concurrency}
        ),
    )
    elapsed = time.perf_counter() - started
    backlog = cache.max_pending
    cache.close()
    return TimedRun(elapsed, result.summary, backlog)
