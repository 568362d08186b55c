"""Expert iteration on a tiny model: round 2's policy (SFT on round 1's best-of-n winners)
must score above round 1's (the base model) under the same persona.

The persona is a rule persona, ``shortest``, loaded from a YAML file like any user persona,
judging each response against a fixed 10-character reference. SFT on the shortest of 4
samples (each followed by the end-of-sequence token) teaches a tiny random model to stop
early within a few steps, so "better" is learnable. (``longest`` winners are mostly cut at
max_new_tokens; they are trained on without EOS, see test_truncation.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simfarm.training.expert_iteration import ExpertIterationConfig

pytestmark = pytest.mark.slow


def test_second_round_scores_above_the_first(tiny_model_dir: Path, tmp_path: Path) -> None:
    from simfarm.training.run import run_recipe

    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "shortest_rule.yaml").write_text(
        "description: Prefers the shorter output; no model.\nrule: shortest\n", encoding="utf-8"
    )
    data = tmp_path / "prompts.jsonl"
    rows = [{"instruction": f"List some things, part {i}.", "output": "x" * 10} for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = ExpertIterationConfig.model_validate(
        {
            "method": "expert_iteration",
            "seed": 0,
            "model": {"name_or_path": str(tiny_model_dir), "dtype": "float32", "device": "cpu"},
            # Full fine-tuning: LoRA on a random tiny model's trunk barely moves its output
            # distribution (near-zero embeddings); the LoRA path runs on Gemma in the YAML.
            "lora": {"enabled": False},
            "data": {"prompts": {"path": str(data)}},
            "rounds": 2,
            "n": 4,
            "scorer": {
                "kind": "annotator",
                "annotator": "shortest_rule",
                "annotators_dirs": [str(personas)],
                "reference": "data",
            },
            "generation": {"max_new_tokens": 6, "temperature": 1.0, "batch_size": 16},
            "sft": {"learning_rate": 1e-2, "max_steps": 24, "batch_size": 4, "save_steps": 8},
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
    assert (result.checkpoint / "model.safetensors").is_file()
