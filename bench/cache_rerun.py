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
from pathlib import Path

from _common import timed_annotation

from simfarm.testing.openai_server import start_server

N_ITEMS = 10_000
TARGET_PER_S = 20_000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, start_server(latency_s=0.0) as server:
        cache_path = Path(tmp) / "cache.sqlite"
        fill = asyncio.run(timed_annotation(server.base_url, cache_path, N_ITEMS))
        filled = fill.summary.n_annotated
        assert filled == N_ITEMS, f"the first run annotated {filled} of {N_ITEMS}"
        before = server.stats()["requests"]
        rerun = asyncio.run(timed_annotation(server.base_url, cache_path, N_ITEMS))
        server_saw = server.stats()["requests"] - before
    fill_s, rerun_s = fill.elapsed_s, rerun.elapsed_s
    annotated, sent = rerun.summary.n_annotated, rerun.summary.requests_sent
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
