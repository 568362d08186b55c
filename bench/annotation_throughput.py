"""Annotation throughput against a loopback OpenAI-compatible server.

The server runs in its own process with 100 ms latency; the client keeps 64 requests in
flight, so the limit is 64 / 0.1 s = 640 requests/s. Two clients are measured in one run:

- bare aiohttp: one shared session, 64 workers posting a fixed body (the ceiling a Python
  client reaches on this machine);
- simfarm: the full annotation path (persona -> judge -> prompt -> executor -> backend ->
  parser -> cache writer thread) over 3,000 distinct pairs.

Both are measured again against a server with 0 ms latency, where nothing hides the
client's own CPU cost per request: simfarm's figure there beside bare aiohttp's says what
the seams (judge protocol, executor, session, dedup, cache queue) cost.

Last line: ``ratio=<simfarm requests/s / 640>`` (target >= 0.9).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _common import timed_annotation

from simfarm.testing.openai_server import start_server

LATENCY_S = 0.1
CONCURRENCY = 64
N_REQUESTS = 3000
LIMIT = CONCURRENCY / LATENCY_S


async def bare_aiohttp(base_url: str) -> float:
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    )
    remaining = N_REQUESTS
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with session.post(
                    base_url + "/chat/completions",
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as response:
                    await response.json()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return N_REQUESTS / (time.perf_counter() - started)


async def simfarm_run(base_url: str, cache_path: Path) -> tuple[float, int, int]:
    """(requests/s, requests sent, the cache writer's worst backlog)."""
    run = await timed_annotation(base_url, cache_path, N_REQUESTS, CONCURRENCY)
    summary = run.summary
    assert summary.n_annotated == N_REQUESTS, summary
    return summary.requests_sent / run.elapsed_s, summary.requests_sent, run.cache_backlog


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with start_server(latency_s=0.0) as server:
            asyncio.run(bare_aiohttp(server.base_url))  # warm-up: connections, server paths
            bare_0 = asyncio.run(bare_aiohttp(server.base_url))
            rate_0, _, backlog_0 = asyncio.run(
                simfarm_run(server.base_url, Path(tmp) / "zero.sqlite")
            )
        with start_server(latency_s=LATENCY_S) as server:
            asyncio.run(bare_aiohttp(server.base_url))
            bare = asyncio.run(bare_aiohttp(server.base_url))
            rate, sent, backlog = asyncio.run(
                simfarm_run(server.base_url, Path(tmp) / "bench.sqlite")
            )
    print(f"limit            {LIMIT:8.1f} req/s  (64 in flight / {LATENCY_S * 1000:.0f} ms)")
    print(f"bare aiohttp     {bare:8.1f} req/s  ratio {bare / LIMIT:.3f}")
    print(
        f"simfarm annotate {rate:8.1f} req/s  ratio {rate / LIMIT:.3f}  ({sent} requests; "
        f"cache writer backlog at most {backlog})"
    )
    print("0 ms latency (the client's own CPU cost per request shows):")
    print(f"  bare aiohttp     {bare_0:8.1f} req/s")
    print(
        f"  simfarm annotate {rate_0:8.1f} req/s  = {rate_0 / bare_0:.3f} of bare aiohttp "
        f"(cache writer backlog at most {backlog_0})"
    )
    sys.stdout.flush()
    print(f"ratio={rate / LIMIT:.4f}")


if __name__ == "__main__":
    main()
