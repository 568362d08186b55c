"""The price of batch-invariant local scoring: the embedded judge's own requests, scored one
request per forward pass (``batch_invariant: true``, the default) and ``batch_size`` per
padded forward pass (``false``, the old default), on the same machine, in alternation.

Workload: the ``embedded_gemma`` persona's requests (both orders, one verdict token, top-20
logprobs) for the first ``--pairs`` PandaLM pairs, sent in calls of ``batch_size`` as the
runner sends them. Each side's best of ``--rounds`` counts, so a burst of load on a shared
machine hits both alike. A second check sends the same requests in another grouping
(shuffled, other call sizes) and counts how many answers changed in any bit: 0 is the point
of the invariant mode; the padded mode usually shows some.

Last line: ``ratio=<invariant seconds / padded seconds>`` (above 1: invariance costs time).

Run from the repository root: ``python bench/batch_invariance.py [--pairs 48] [--rounds 2]``
(needs the ``local`` extra and the shared data beside the checkout).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from pathlib import Path

from simfarm.annotation.loader import LoadedPersona, load_annotator
from simfarm.annotation.pairwise import PairwiseJudge
from simfarm.backends.embedded import EmbeddedBackend
from simfarm.backends.transformers_local import LocalModelOptions
from simfarm.evaluation.human_sets import find_human_set, load_human_set
from simfarm.types import Completion, CompletionRequest, RequestDraft

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def judge_requests(n_pairs: int) -> list[CompletionRequest]:
    persona = load_annotator("embedded_gemma")
    assert isinstance(persona, LoadedPersona)
    judge = PairwiseJudge(persona)
    human_set = load_human_set(find_human_set("pandalm"), data_root=DATA, limit=n_pairs)
    drafts = [p.request for pair in human_set.pairs for p in judge.plan(pair.item)]
    # The judge plans drafts (validated only when sent); the engine takes built requests.
    return [d.build() if isinstance(d, RequestDraft) else d for d in drafts]


def answer(backend: EmbeddedBackend, calls: list[list[CompletionRequest]]) -> list[Completion]:
    async def run() -> list[Completion]:
        out: list[Completion] = []
        for call in calls:
            out.extend(await backend.complete(call))
        return out

    return asyncio.run(run())


def in_calls(requests: list[CompletionRequest], size: int) -> list[list[CompletionRequest]]:
    return [requests[i : i + size] for i in range(0, len(requests), size)]


def regrouped(requests: list[CompletionRequest]) -> tuple[list[list[CompletionRequest]], list[int]]:
    """The same requests shuffled into calls of uneven sizes, and where each one went."""
    order = list(range(len(requests)))
    random.Random(7).shuffle(order)
    calls, start, sizes = [], 0, [5, 16, 3, 11, 16, 1]
    k = 0
    while start < len(order):
        size = sizes[k % len(sizes)]
        calls.append([requests[i] for i in order[start : start + size]])
        start, k = start + size, k + 1
    return calls, order


def same(a: Completion, b: Completion) -> bool:
    return a.text == b.text and a.logprobs == b.logprobs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    requests = judge_requests(args.pairs)
    backends = {
        "invariant": EmbeddedBackend(LocalModelOptions(batch_size=16, batch_invariant=True)),
        "padded": EmbeddedBackend(LocalModelOptions(batch_size=16, batch_invariant=False)),
    }
    for backend in backends.values():
        backend.load()
    print(f"{len(requests)} requests ({args.pairs} pairs, both orders), dtype "
          f"{backends['invariant'].resolved_dtype()}")  # fmt: skip
    best = {name: float("inf") for name in backends}
    first: dict[str, list[Completion]] = {}
    for _ in range(args.rounds):
        for name, backend in backends.items():
            started = time.perf_counter()
            first[name] = answer(backend, in_calls(requests, 16))
            best[name] = min(best[name], time.perf_counter() - started)
    calls, order = regrouped(requests)
    for name, backend in backends.items():
        again = answer(backend, calls)
        changed = sum(
            not same(first[name][i], completion) for i, completion in zip(order, again, strict=True)
        )
        print(f"{name}: best {best[name]:.2f} s ({1000 * best[name] / len(requests):.0f} ms per "
              f"request); regrouped: {changed}/{len(requests)} answers changed")  # fmt: skip
    print(f"ratio={best['invariant'] / best['padded']:.3f}")


if __name__ == "__main__":
    main()
