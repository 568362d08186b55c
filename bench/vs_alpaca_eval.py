"""simfarm against alpaca_eval's own OpenAI decoder: the same 2,000 pairwise judgements.

One loopback server (100 ms latency, its own process) answers both. simfarm runs its full
annotation path (persona -> judge -> executor -> backend -> parser -> cache) with 64
requests in flight. alpaca_eval runs ``alpaca_eval.decoders.openai.openai_completions``
(the `bench` extra), the path its OpenAI annotators take, on the same pairs laid out in the
same AlpacaFarm prompt; its documented concurrency setting (``num_procs``, default
``OPENAI_MAX_CONCURRENCY`` = 5) is first tried at several values on 300 prompts and the
fastest is used for the full run. Neither side has a cache to hit.

Last line: ``ratio=<simfarm wall time / alpaca_eval wall time>`` (target <= 0.1).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

from simfarm.annotation import BackendOverrides, annotate_async, load_annotator
from simfarm.cache import CompletionCache
from simfarm.testing.alpaca_eval_shim import provide_pkg_resources
from simfarm.testing.openai_server import start_server
from simfarm.types import PairwiseItem

LATENCY_S = 0.1
N_PAIRS = 2000
SWEEP_PROMPTS = 300
NUM_PROCS_TRIED = (5, 16, 64, 128, 256)
MODEL = "gpt-4-bench"  # a chat model name: alpaca_eval sends it as chat (ChatML) messages


def pairs(tag: str) -> list[PairwiseItem]:
    return [
        PairwiseItem(
            instruction=f"[{tag}] Instruction number {i}: explain topic {i % 97}.",
            output_1=f"A short answer {i}.",
            output_2=f"A somewhat longer answer for item {i}, with a little more detail.",
            generator_1="reference",
            generator_2="model",
        )
        for i in range(N_PAIRS)
    ]


def chatml_prompt(item: PairwiseItem) -> str:
    """The AlpacaFarm judging prompt, as alpaca_eval's annotators hand it to the decoder."""
    return (
        "<|im_start|>system\nYou are a helpful instruction-following assistant.\n<|im_end|>\n"
        "<|im_start|>user\nSelect the output (a) or (b) that best matches the given "
        "instruction.\n\n"
        f"## Instruction:\n{item.instruction}\n\n"
        f"## Output (a):\n{item.output_1}\n\n## Output (b):\n{item.output_2}\n\n"
        "## Which is best, Output (a) or Output (b)?\n<|im_end|>"
    )


def alpaca_eval_run(base_url: str, prompts: list[str], num_procs: int) -> float:
    from alpaca_eval.decoders.openai import openai_completions

    started = time.perf_counter()
    result = openai_completions(
        prompts,
        model_name=MODEL,
        max_tokens=50,
        num_procs=num_procs,
        temperature=0.0,
        price_per_token=0.0,
        openai_api_base=base_url,
        openai_api_keys=["sk-bench-not-a-key"],
        client_config_path="/nonexistent/alpaca_eval-client-configs.yaml",  # env-style config
    )
    elapsed = time.perf_counter() - started
    assert len(result["completions"]) == len(prompts)
    return elapsed


async def simfarm_run(base_url: str, cache_path: Path) -> tuple[float, int]:
    cache = CompletionCache(cache_path)
    try:
        started = time.perf_counter()
        result = await annotate_async(
            pairs("simfarm"),
            load_annotator("alpaca_farm_greedy"),
            cache=cache,
            backend_overrides=BackendOverrides(
                model=MODEL, options={"base_url": base_url, "max_concurrency": 64}
            ),
        )
        elapsed = time.perf_counter() - started
    finally:
        cache.close()
    assert result.summary.n_annotated == N_PAIRS, result.summary
    return elapsed, result.summary.requests_sent


def main() -> None:
    logging.disable(logging.WARNING)  # alpaca_eval logs a warning per request
    provide_pkg_resources()
    try:
        import alpaca_eval
    except ImportError:
        sys.exit("needs the `bench` extra: pip install -e '.[bench]'")
    with tempfile.TemporaryDirectory() as tmp, start_server(latency_s=LATENCY_S) as server:
        simfarm_s, sent = asyncio.run(simfarm_run(server.base_url, Path(tmp) / "c.sqlite"))
        print(
            f"simfarm       {N_PAIRS} pairs in {simfarm_s:7.2f} s ({sent} requests, 64 in flight)"
        )
        sweep_items = [chatml_prompt(p) for p in pairs("sweep")[:SWEEP_PROMPTS]]
        timings = {}
        for num_procs in NUM_PROCS_TRIED:
            timings[num_procs] = alpaca_eval_run(server.base_url, sweep_items, num_procs)
            print(
                f"alpaca_eval   num_procs={num_procs:<4} {SWEEP_PROMPTS} prompts in "
                f"{timings[num_procs]:6.2f} s",
                flush=True,
            )
        best = min(timings, key=lambda k: timings[k])
        full = [chatml_prompt(p) for p in pairs("alpaca_eval")]
        alpaca_s = alpaca_eval_run(server.base_url, full, best)
    print(
        f"alpaca_eval   {N_PAIRS} pairs in {alpaca_s:7.2f} s  (alpaca_eval "
        f"{alpaca_eval.__version__}, decoders.openai.openai_completions, num_procs={best} "
        f"(best of {NUM_PROCS_TRIED}), batch_size=1 (chat), one OpenAI client per request, "
        f"server latency {LATENCY_S * 1000:.0f} ms)"
    )
    sys.stdout.flush()
    print(f"ratio={simfarm_s / alpaca_s:.4f}")


if __name__ == "__main__":
    main()
