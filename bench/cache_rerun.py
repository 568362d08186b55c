"""Re-running a finished job: every annotation comes from the cache, nothing is sent.

10,000 distinct pairs are annotated once against a loopback server (0 ms latency), which
fills the cache. The same job is then run again with a fresh cache handle (as a new
``simfarm annotate`` process would) and timed: requests made must be 0 (the server's own
counter says so, not only simfarm's), and annotations/s is what a resumed or repeated job
costs per record when everything is known.

Last line: ``ratio=<annotations/s of the rerun / 20,000>`` (target >= 1).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from simfarm.annotation import BackendOverrides, annotate_async, load_annotator
from simfarm.cache import CompletionCache
from simfarm.testing.openai_server import start_server
from simfarm.types import PairwiseItem

N_ITEMS = 10_000
TARGET_PER_S = 20_000


def items() -> list[PairwiseItem]:
    return [
        PairwiseItem(
            instruction=f"Instruction number {i}: explain topic {i % 97}.",
            output_1=f"A short answer {i}.",
            output_2=f"A somewhat longer answer for item {i}, with a little more detail.",
            generator_1="reference",
            generator_2="model",
        )
        for i in range(N_ITEMS)
    ]


async def run(base_url: str, cache_path: Path) -> tuple[float, int, int]:
    """(seconds, annotated, requests simfarm says it sent)."""
    persona = load_annotator("alpaca_farm_greedy")
    cache = CompletionCache(cache_path)
    pairs = items()
    started = time.perf_counter()
    result = await annotate_async(
        pairs,
        persona,
        cache=cache,
        backend_overrides=BackendOverrides(
            model="bench", options={"base_url": base_url, "max_concurrency": 64}
        ),
    )
    elapsed = time.perf_counter() - started
    cache.close()
    return elapsed, result.summary.n_annotated, result.summary.requests_sent


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, start_server(latency_s=0.0) as server:
        cache_path = Path(tmp) / "cache.sqlite"
        fill_s, filled, _ = asyncio.run(run(server.base_url, cache_path))
        assert filled == N_ITEMS, f"the first run annotated {filled} of {N_ITEMS}"
        before = server.stats()["requests"]
        rerun_s, annotated, sent = asyncio.run(run(server.base_url, cache_path))
        server_saw = server.stats()["requests"] - before
    rate = annotated / rerun_s
    print(f"first run        {N_ITEMS} annotations in {fill_s:.2f} s (fills the cache)")
    print(
        f"rerun            {annotated} annotations in {rerun_s:.3f} s = {rate:,.0f} annotations/s"
    )
    print(f"requests made    simfarm: {sent}, server received: {server_saw} (must be 0)")
    sys.stdout.flush()
    if sent or server_saw or annotated != N_ITEMS:
        print("FAILED: the rerun sent requests or lost annotations", file=sys.stderr)
        print("ratio=0")
        sys.exit(1)
    print(f"ratio={rate / TARGET_PER_S:.4f}")


if __name__ == "__main__":
    main()
