"""Best-of-n on a tiny model, scored by a real simfarm persona (``longest``, cached)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simfarm.training.best_of_n import OUTPUT_FILE, BestOfNConfig

pytestmark = pytest.mark.slow

REFERENCE = "x" * 20


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    rows = [{"instruction": f"Describe thing number {i}.", "output": REFERENCE} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _config(model_dir: Path, data: Path, **fields: Any) -> BestOfNConfig:
    return BestOfNConfig.model_validate(
        {
            "method": "best_of_n",
            "seed": 1,
            "model": {"name_or_path": str(model_dir), "dtype": "float32", "device": "cpu"},
            "data": {"prompts": {"path": str(data)}},
            "scorer": {"kind": "annotator", "annotator": "longest"},
            "generation": {"max_new_tokens": 12, "temperature": 1.0, "batch_size": 8},
            **fields,
        }
    )


def _records(out_dir: Path) -> list[dict[str, Any]]:
    lines = (out_dir / OUTPUT_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_best_of_4_scores_above_best_of_1_under_the_same_scorer(
    tiny_model_dir: Path, prompts_file: Path, tmp_path: Path
) -> None:
    from simfarm.training.run import run_recipe

    one = run_recipe(_config(tiny_model_dir, prompts_file, n=1), tmp_path / "n1")
    four = run_recipe(_config(tiny_model_dir, prompts_file, n=4), tmp_path / "n4")
    assert four.final_metrics["mean_best_score"] > one.final_metrics["mean_best_score"] + 0.2
    records_1, records_4 = _records(tmp_path / "n1"), _records(tmp_path / "n4")
    assert len(records_4) == 12
    for r1, r4 in zip(records_1, records_4, strict=True):
        # Sample 0 does not depend on n, so best-of-1 is exactly best-of-4's sample 0.
        assert r4["samples"][0] == r1["output"]
        assert r4["scores"][r4["chosen_index"]] == max(r4["scores"])
        assert r4["output"] == r4["samples"][r4["chosen_index"]]
    assert four.final_metrics["mean_sample0_score"] == one.final_metrics["mean_best_score"]


def test_knockout_tournament_crowns_the_longest_candidate(
    tiny_model_dir: Path, prompts_file: Path, tmp_path: Path
) -> None:
    from simfarm.training.run import run_recipe

    config = _config(tiny_model_dir, prompts_file, n=5, selection="tournament")
    result = run_recipe(config, tmp_path / "tournament")
    for record in _records(tmp_path / "tournament"):
        lengths = [len(sample) for sample in record["samples"]]
        assert len(record["output"]) == max(lengths)
        # Score = rounds survived: the winner of 5 survived all 3 rounds, nobody else did.
        assert record["scores"][record["chosen_index"]] == 3
        assert sorted(record["scores"])[-2] < 3
    assert result.final_metrics["mean_best_score"] == 3
