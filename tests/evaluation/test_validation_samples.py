"""`validate --samples N` (judge variance): each sample is its own cached request, so a
sampled judge gives N different answers and a rerun re-pays nothing (before, samples after
the first bypassed the cache and were bought again on every run)."""

from __future__ import annotations

from pathlib import Path

from simfarm.evaluation import run_annotator
from simfarm.evaluation.human_sets import HumanPairwiseItem
from simfarm.testing.openai_server import start_server
from tests.annotation.test_pairwise_run import items
from tests.server_personas import make_persona


def test_samples_are_cached_each_and_a_rerun_pays_nothing(tmp_path: Path) -> None:
    pairs = [HumanPairwiseItem(item=item, human=[1.0], subset="s") for item in items(5)]
    with start_server(policy="random") as server:
        name = make_persona(
            tmp_path, server, decoding={"temperature": 1.0, "seed": 3, "max_tokens": 8}
        )
        first = run_annotator(pairs, name, samples=3, both_orders=False, annotators_dirs=[tmp_path])
        assert server.stats()["requests"] == 15
        again = run_annotator(pairs, name, samples=3, both_orders=False, annotators_dirs=[tmp_path])
        assert server.stats()["requests"] == 15
    assert [len(sample) for sample in first] == [5, 5, 5]
    for sample in first:
        assert [a.instruction for a in sample] == [p.item.instruction for p in pairs]
    assert [[a.preference for a in s] for s in again] == [[a.preference for a in s] for s in first]
    assert all(a.cached for sample in again for a in sample)
