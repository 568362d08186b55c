"""Expert iteration on a tiny model: round 2's policy (SFT on round 1's best-of-n winners)
must score above round 1's (the base model) under the same persona (``longest`` vs a fixed
reference, so "better" means "longer", which a few SFT steps on the longest of 4 samples
teach a tiny random model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simfarm.training.expert_iteration import ExpertIterationConfig

pytestmark = pytest.mark.slow

TINY_LORA = {
    "r": 8,
    "alpha": 16,
    "target_modules": [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head",
    ],
}  # fmt: skip


def test_second_round_scores_above_the_first(tiny_model_dir: Path, tmp_path: Path) -> None:
    from simfarm.training.run import run_recipe

    data = tmp_path / "prompts.jsonl"
    rows = [{"instruction": f"List some things, part {i}.", "output": "x" * 20} for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = ExpertIterationConfig.model_validate(
        {
            "method": "expert_iteration",
            "seed": 0,
            "model": {"name_or_path": str(tiny_model_dir), "dtype": "float32", "device": "cpu"},
            "lora": TINY_LORA,
            "data": {"prompts": {"path": str(data)}},
            "rounds": 2,
            "n": 4,
            "scorer": {"kind": "annotator", "annotator": "longest", "reference": "data"},
            "generation": {"max_new_tokens": 12, "temperature": 1.0, "batch_size": 16},
            "sft": {"learning_rate": 5e-3, "max_steps": 16, "batch_size": 4, "save_steps": 8},
        }
    )
    result = run_recipe(config, tmp_path / "run")
    metrics = result.final_metrics
    assert metrics["round2_mean_sample_score"] > metrics["round1_mean_sample_score"] + 0.2, metrics
    assert metrics["final_policy_mean_sample_score"] > metrics["round1_mean_sample_score"]
    rounds = [
        json.loads(line)
        for line in (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert [r["round"] for r in rounds if r["stage"] == "expert_iteration"] == [1, 2]
    winners_2 = (tmp_path / "run" / "rounds" / "round-2" / "sft_data.jsonl").read_text("utf-8")
    assert len(winners_2.splitlines()) == 16  # accumulated: both rounds' winners
    assert (result.checkpoint / "adapter_config.json").is_file()
