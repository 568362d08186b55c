"""The reward-model scorer inside best-of-n and PPO: a tiny reward model trained here on pairs
labelled by the ``longest`` persona (so it learns to prefer longer responses) scores the
candidates; best-of-4 picks higher reward than best-of-1, and PPO's rewards are that model's
scores of the rollout texts."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from simfarm.training.policy import format_prompt
from simfarm.training.reward_model import load_reward_model, score
from simfarm.training.run import run_recipe

from ._recipes import length_labelled_pairs, tiny_model, write_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reward_checkpoint(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reward-model")
    train = length_labelled_pairs(folder / "train.jsonl", ("sft",), seed=0)
    recipe = write_recipe(
        folder,
        {
            "method": "reward_model",
            "model": tiny_model(tiny_model_dir),
            "lora": {"enabled": False},
            "data": {"annotations": str(train), "eval_fraction": 0.0},
            "training": {"learning_rate": 1e-3, "max_steps": 12, "batch_size": 8, "save_steps": 12},
        },
    )
    return run_recipe(recipe, folder / "run").checkpoint


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    rows = [{"instruction": f"Describe thing number {i}."} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _scorer(checkpoint: Path) -> dict[str, Any]:
    return {"kind": "reward_model", "reward_model": str(checkpoint)}


def test_best_of_4_picks_higher_reward_than_best_of_1(
    tiny_model_dir: Path, reward_checkpoint: Path, prompts_file: Path, tmp_path: Path
) -> None:
    from simfarm.training.best_of_n import OUTPUT_FILE, BestOfNConfig

    def config(n: int) -> BestOfNConfig:
        return BestOfNConfig.model_validate(
            {
                "method": "best_of_n",
                "seed": 1,
                "model": tiny_model(tiny_model_dir),
                "data": {"prompts": {"path": str(prompts_file)}},
                "n": n,
                "scorer": _scorer(reward_checkpoint),
                "generation": {"max_new_tokens": 12, "temperature": 1.0, "batch_size": 8},
            }
        )

    one = run_recipe(config(1), tmp_path / "n1")
    four = run_recipe(config(4), tmp_path / "n4")
    records = [
        json.loads(line)
        for line in (tmp_path / "n4" / OUTPUT_FILE).read_text(encoding="utf-8").splitlines()
    ]
    best_1, best_4 = one.final_metrics["mean_best_score"], four.final_metrics["mean_best_score"]
    assert four.final_metrics["mean_sample0_score"] == pytest.approx(best_1, abs=1e-5)
    # Best of 4 iid samples beats one by about 1.03 within-prompt standard deviations of the
    # reward; ask for a quarter of one (over 3 standard errors below what to expect).
    spread = statistics.mean(statistics.pstdev(r["scores"]) for r in records)
    assert spread > 1e-3, "the reward model tells the samples apart"
    assert best_4 - best_1 > 0.25 * spread, (best_1, best_4, spread)
    assert all(r["scores"][r["chosen_index"]] == max(r["scores"]) for r in records)
    assert four.judge_usage is None  # a reward model asks no judge
    # The scores are the reward model's own: rescoring the samples gives the same numbers.
    rm = load_reward_model(reward_checkpoint)
    prompts = [format_prompt(rm.tokenizer, r["instruction"], r["input"]) for r in records]
    flat_prompts = [p for p in prompts for _ in range(4)]
    flat_samples = [s for r in records for s in r["samples"]]
    rescored = score(rm, flat_prompts, flat_samples)
    assert [s for r in records for s in r["scores"]] == pytest.approx(rescored, abs=1e-4)


def test_ppo_rewards_are_the_reward_models_scores(
    tiny_model_dir: Path, reward_checkpoint: Path, prompts_file: Path, tmp_path: Path
) -> None:
    import torch

    from simfarm.training.data import load_instructions
    from simfarm.training.policy import load_policy
    from simfarm.training.ppo import PPOConfig, PPOTrainer
    from simfarm.training.scoring import build_response_scorer
    from simfarm.training.value_head import ValueHead

    config = PPOConfig.model_validate(
        {
            "method": "ppo",
            "model": tiny_model(tiny_model_dir),
            "data": {"prompts": {"path": str(prompts_file)}},
            "scorer": _scorer(reward_checkpoint),
            "generation": {"max_new_tokens": 8, "temperature": 1.0},
            "ppo": {"steps": 2, "batch_size": 4, "mini_batch_size": 2, "kl_coef": 0.0},
        }
    )
    policy = load_policy(config.model, config.lora)
    score_fn, scorer_id, usage = build_response_scorer(config.scorer, config.model)
    assert scorer_id == f"reward_model:{reward_checkpoint}"
    trainer = PPOTrainer(
        config,
        policy.model,
        policy.tokenizer,
        ValueHead(policy.model.config.hidden_size),
        score_fn,
        torch.device("cpu"),
    )
    examples = load_instructions(config.data.prompts)[:4]
    prompts = [format_prompt(policy.tokenizer, e.instruction) for e in examples]
    rollout = trainer.rollout(
        prompts, [e.instruction for e in examples], ["" for _ in examples], [""] * 4, seed=3
    )
    rm = load_reward_model(reward_checkpoint)
    expected = score(
        rm, [format_prompt(rm.tokenizer, e.instruction) for e in examples], rollout.texts
    )
    assert rollout.scores.tolist() == pytest.approx(expected, abs=1e-4)
    assert len(set(rollout.texts)) > 1 and max(expected) - min(expected) > 1e-3
    # With no KL penalty, the reward PPO optimises sums to exactly those scores.
    metrics = trainer.optimise(rollout, seed=0)
    assert metrics["mean_reward"] == pytest.approx(sum(expected) / 4, abs=1e-4)
    assert metrics["mean_score"] == pytest.approx(sum(expected) / 4, abs=1e-4)
    assert usage.requests == 0 and usage.annotations == 0
    # And the recipe end to end, from the YAML-level config, logs the same kind of reward.
    result = run_recipe(config, tmp_path / "ppo")
    steps = [
        json.loads(line)
        for line in (tmp_path / "ppo" / "metrics.jsonl").read_text("utf-8").splitlines()
    ]
    assert [s["step"] for s in steps] == [1, 2]
    assert result.judge_usage is None
    manifest = json.loads((tmp_path / "ppo" / "manifest.json").read_text(encoding="utf-8"))
    assert "reward_model" in json.dumps(manifest)
