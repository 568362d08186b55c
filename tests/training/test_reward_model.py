"""Reward model on the tiny model: pairwise accuracy on held-out pairs labelled by the
`longest` persona beats chance by a clear margin; the checkpoint scores like the trainer."""

from __future__ import annotations

from pathlib import Path

import pytest

from simfarm.training.data import load_preference_pairs
from simfarm.training.policy import format_prompt
from simfarm.training.reward_model import load_reward_model, score
from simfarm.training.run import run_recipe

from ._recipes import length_labelled_pairs, tiny_model, write_recipe

pytestmark = pytest.mark.slow


def test_reward_model_learns_held_out_preferences(tiny_model_dir: Path, tmp_path: Path) -> None:
    train = length_labelled_pairs(tmp_path / "train.jsonl", ("sft",), seed=0)
    held_out = length_labelled_pairs(tmp_path / "eval.jsonl", ("eval",), seed=1)
    recipe = write_recipe(
        tmp_path,
        {
            "method": "reward_model",
            "model": tiny_model(tiny_model_dir),
            "lora": {"enabled": False},
            "data": {"annotations": str(train), "eval_annotations": str(held_out)},
            "training": {"learning_rate": 1e-3, "max_steps": 12, "batch_size": 8, "save_steps": 6},
        },
    )
    result = run_recipe(recipe, tmp_path / "run")
    metrics = result.final_metrics
    assert metrics["eval_accuracy"] >= 0.7, metrics
    assert metrics["eval_accuracy"] > metrics["eval_accuracy_initial"], metrics
    # The saved model ranks the held-out pairs the same way, through simfarm's scorer.
    rm = load_reward_model(result.checkpoint)
    pairs, _ = load_preference_pairs(held_out)
    prompts = [format_prompt(rm.tokenizer, p.instruction, p.input) for p in pairs]
    chosen = score(rm, prompts, [p.chosen for p in pairs])
    rejected = score(rm, prompts, [p.rejected for p in pairs])
    accuracy = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(pairs)
    assert accuracy == pytest.approx(metrics["eval_accuracy"], abs=0.05)


def test_lora_reward_checkpoint_scores_like_the_trainer(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    pairs = length_labelled_pairs(tmp_path / "pairs.jsonl", ("eval",), seed=2)
    recipe = write_recipe(
        tmp_path,
        {
            "method": "reward_model",
            "model": tiny_model(tiny_model_dir),
            "data": {"annotations": str(pairs), "eval_annotations": str(pairs)},
            "training": {"learning_rate": 1e-2, "max_steps": 2, "batch_size": 8, "save_steps": 2},
        },
    )
    result = run_recipe(recipe, tmp_path / "run")
    assert (result.checkpoint / "adapter_config.json").is_file()
    rm = load_reward_model(result.checkpoint)
    loaded, _ = load_preference_pairs(pairs)
    prompts = [format_prompt(rm.tokenizer, p.instruction, p.input) for p in loaded]
    chosen = score(rm, prompts, [p.chosen for p in loaded])
    rejected = score(rm, prompts, [p.rejected for p in loaded])
    margin = sum(c - r for c, r in zip(chosen, rejected, strict=True)) / len(loaded)
    # The trained score head and adapters came back: same margin as the trainer measured.
    assert margin == pytest.approx(result.final_metrics["eval_margin"], abs=1e-3)
