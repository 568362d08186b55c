"""Scoring speed of the distilled judge (``embedded_distilled``) on CPU.

Judges the 805 AlpacaEval pairs of one system (``../shared/data/alpaca_eval/annotations/
claude-2.json``: claude-2 vs gpt4_1106_preview) through the real annotation pipeline, one
thread, after a warm-up that loads the tokenizer and the head. Prints pairs/s.

Goal: one system's whole AlpacaEval set judged in minutes on 2 CPU cores. Last line:
``ratio=<300 s / seconds taken>`` (above 1: the 805 pairs take under five minutes).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from simfarm.annotation import annotate, load_annotator
from simfarm.types import PairwiseItem

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alpaca_eval"


def main() -> None:
    import torch

    torch.set_num_threads(1)
    records = json.loads((DATA / "annotations" / "claude-2.json").read_text(encoding="utf-8"))
    items = [
        PairwiseItem(
            instruction=r["instruction"],
            output_1=r["output_1"],
            output_2=r["output_2"],
            generator_1=r["generator_1"],
            generator_2=r["generator_2"],
        )
        for r in records
    ]
    judge = load_annotator("embedded_distilled")
    start = time.perf_counter()
    annotate(items[:2], judge)  # loads the tokenizer and the head
    warm_up = time.perf_counter() - start
    start = time.perf_counter()
    result = annotate(items, judge)
    elapsed = time.perf_counter() - start
    assert all(a.preference is not None for a in result.annotations)
    print(f"warm-up (tokenizer + head) {warm_up:.1f} s")
    print(f"{len(items)} pairs in {elapsed:.2f} s: {len(items) / elapsed:.0f} pairs/s on CPU")
    print(f"ratio={300.0 / elapsed:.2f}")


if __name__ == "__main__":
    main()
