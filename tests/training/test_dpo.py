"""DPO on the tiny model: the implicit reward margin (chosen minus rejected) on held-out
pairs goes up; preferences can come from simulated feedback collected in the run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from simfarm.training.run import run_recipe

from ._recipes import BUNDLED, length_labelled_pairs, tiny_model, write_recipe

pytestmark = pytest.mark.slow


def test_dpo_raises_held_out_margin(tiny_model_dir: Path, tmp_path: Path) -> None:
    train = length_labelled_pairs(tmp_path / "train.jsonl", ("sft",), seed=0)
    held_out = length_labelled_pairs(tmp_path / "eval.jsonl", ("eval",), seed=1)
    recipe = write_recipe(
        tmp_path,
        {
            "method": "dpo",
            "model": tiny_model(tiny_model_dir),
            "data": {"annotations": str(train), "eval_annotations": str(held_out)},
            "beta": 0.1,
            "training": {"learning_rate": 5e-3, "max_steps": 8, "batch_size": 8, "save_steps": 8},
        },
    )
    result = run_recipe(recipe, tmp_path / "run")
    metrics = result.final_metrics
    margin, before = metrics["eval_rewards/margins"], metrics["eval_rewards/margins_initial"]
    assert margin > before + 0.05, metrics
    assert metrics["eval_rewards/accuracies"] > 0.7, metrics
    assert (result.checkpoint / "adapter_config.json").is_file()


def test_dpo_on_simulated_feedback_is_collected_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = {
        "method": "dpo",
        "model": tiny_model(tiny_model_dir),
        "data": {
            "feedback": {
                "prompts": {"path": str(BUNDLED / "preference.jsonl"), "limit": 16},
                "annotator": "longest",
                "generation": {"max_new_tokens": 12, "temperature": 1.0, "batch_size": 16},
            },
            "eval_fraction": 0.25,
        },
        "training": {"max_steps": 2, "batch_size": 4, "save_steps": 2},
    }
    out = tmp_path / "run"
    result = run_recipe(write_recipe(tmp_path, data), out)
    records = [json.loads(line) for line in (out / "feedback.jsonl").open()]
    assert len(records) == 16
    assert {r["annotator"] for r in records} == {"longest"}
    assert {(r["generator_1"], r["generator_2"]) for r in records} == {
        ("policy-sample-0", "policy-sample-1")
    }
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["persona_ids"] == ["longest"]
    stats = manifest["preference_stats"]
    assert (
        stats["records"] == 16
        and stats["pairs_train"] + stats["pairs_eval"] + stats["ties_dropped"] == 16
    )
    assert result.final_metrics["train_loss"] > 0
    # Run again in the same folder after losing the training state: the feedback is reused
    # (nothing sampled or annotated again).
    feedback_mtime = (out / "feedback.jsonl").stat().st_mtime_ns
    samples = (out / "feedback_samples.jsonl").read_text()
    for name in ("result.json", "checkpoint", "checkpoints"):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    run_recipe(write_recipe(tmp_path, data), out)
    assert (out / "feedback.jsonl").stat().st_mtime_ns == feedback_mtime
    assert (out / "feedback_samples.jsonl").read_text() == samples
