"""PPO: the arithmetic against hand-computed values, and the recipe end to end on a tiny model.

The end-to-end reward is a real simfarm scorer: the bundled ``longest`` persona judging each
response against a fixed 10-character reference (+1 longer, -1 shorter). A tiny random model
can learn it within a few steps (avoid the end-of-sequence token, prefer multi-character
tokens), which makes "PPO raises mean reward" a test that runs in about a minute.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from simfarm.training import ppo_math  # noqa: E402
from simfarm.training.ppo import PPOConfig, latest_checkpoint, prompt_batches, response_mask  # noqa: E402

REFERENCE = "x" * 10
# LoRA on the output head too: a random tiny model's embeddings are near zero (std 0.02), so
# adapters on the trunk alone barely move its (tied) output distribution in a few steps.
TINY_LORA = {
    "r": 8,
    "alpha": 16,
    "target_modules": [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head",
    ],
}  # fmt: skip


# -- arithmetic ---------------------------------------------------------------------------


def test_gae_matches_the_recursion_by_hand() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # row 2 ends after 2 tokens
    gamma, lam = 0.9, 0.8
    advantages, returns = ppo_math.generalized_advantages(rewards, values, mask, gamma, lam)
    # Row 1: deltas backwards, V past the end is 0.
    d2 = 1.0 + 0 - 0.3
    d1 = 0.0 + gamma * 0.3 - 0.2
    d0 = 0.0 + gamma * 0.2 - 0.1
    a2, a1 = d2, d1 + gamma * lam * d2
    a0 = d0 + gamma * lam * a1
    assert advantages[0].tolist() == pytest.approx([a0, a1, a2], abs=1e-6)
    # Row 2: the padded position's value (9.0) must not leak into the last real token.
    e1 = 2.0 - 0.5
    e0 = 0.5 + gamma * 0.5 - 0.4
    assert advantages[1].tolist() == pytest.approx([e0 + gamma * lam * e1, e1, 0.0], abs=1e-6)
    assert returns[0].tolist() == pytest.approx([a0 + 0.1, a1 + 0.2, a2 + 0.3], abs=1e-6)


def test_kl_penalty_is_per_token_and_score_lands_on_the_last_real_token() -> None:
    logprobs = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -1.0, -7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = ppo_math.kl_penalised_rewards(torch.tensor([3.0, 5.0]), logprobs, ref, mask, 0.1)
    assert kl.flatten().tolist() == pytest.approx([0.5, 0.0, -0.5, 0.0, -1.0, 0.0])
    assert rewards.flatten().tolist() == pytest.approx([-0.05, 0.0, 3.05, 0.0, 5.1, 0.0])


def test_reported_kl_is_k3_nonnegative_where_k1_goes_negative() -> None:
    # Row 1: the sampled tokens are likelier under the reference, so k1 sums below zero.
    logprobs = torch.tensor([[-2.0, -1.0, -3.0], [-0.5, -0.5, -9.0]])
    ref = torch.tensor([[-1.0, -1.0, -2.5], [-1.5, -0.2, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    _, k1 = ppo_math.kl_penalised_rewards(torch.zeros(2), logprobs, ref, mask, 0.1)
    assert float(k1[0].sum()) < 0
    k3 = ppo_math.k3_kl(logprobs, ref, mask)
    by_hand = [
        [math.exp(1.0) - 1 - 1.0, 0.0, math.exp(0.5) - 1 - 0.5],
        [math.exp(-1.0) - 1 + 1.0, math.exp(0.3) - 1 - 0.3, 0.0],
    ]
    assert k3.tolist() == [pytest.approx(row, abs=1e-6) for row in by_hand]
    assert bool((k3 >= 0).all())
    # Unbiased for the same KL: on many samples from pi, mean k3 and mean k1 agree.
    generator = torch.Generator().manual_seed(0)
    pi = torch.softmax(torch.randn(50, generator=generator), dim=0)
    pi_ref = torch.softmax(torch.randn(50, generator=generator), dim=0)
    tokens = torch.multinomial(pi, 200_000, replacement=True, generator=generator)
    lp, lr = pi.log()[tokens][None], pi_ref.log()[tokens][None]
    ones = torch.ones_like(lp)
    exact = float((pi * (pi.log() - pi_ref.log())).sum())
    assert float(ppo_math.k3_kl(lp, lr, ones).mean()) == pytest.approx(exact, rel=0.03)
    assert float((lp - lr).mean()) == pytest.approx(exact, rel=0.03)


def test_policy_clip_stops_the_incentive_past_one_plus_epsilon() -> None:
    mask = torch.ones(1, 2)
    old = torch.zeros(1, 2)
    advantages = torch.tensor([[1.0, -1.0]])
    # Ratio e^0.5 = 1.65 on a positive advantage: clipped at 1.2, no gradient.
    new = torch.tensor([[0.5, 0.0]], requires_grad=True)
    stats = ppo_math.clipped_policy_loss(new, old, advantages, mask, clip_range=0.2)
    stats.loss.backward()
    assert new.grad is not None
    assert new.grad[0, 0] == 0.0
    assert new.grad[0, 1] != 0.0
    assert stats.clip_fraction == pytest.approx(0.5)
    assert stats.loss.item() == pytest.approx((-1.2 + 1.0) / 2)


def test_value_clip_and_whitening() -> None:
    mask = torch.ones(1, 1)
    stats = ppo_math.clipped_value_loss(
        torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]), mask, 0.2
    )
    # The unclipped prediction is perfect but the clipped one (0.2) is 0.8 off: max wins.
    assert stats.loss.item() == pytest.approx(0.5 * 0.8**2)
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    whitened = ppo_math.masked_whiten(values, torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    assert whitened[0, :3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-4)
    assert whitened[0, 3] == 0.0


def test_adaptive_kl_controller_moves_towards_target() -> None:
    controller = ppo_math.AdaptiveKLController(0.1, target=6.0, horizon=100)
    controller.update(observed_kl=12.0, n_samples=10)  # error clipped to +0.2
    assert controller.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    controller.update(observed_kl=3.0, n_samples=10)
    assert controller.value < 0.1 * (1 + 0.2 * 10 / 100)


def test_response_mask_keeps_the_first_eos_and_drops_what_follows() -> None:
    ids = torch.tensor([[5, 6, 2, 0, 0], [5, 2, 2, 7, 0], [5, 6, 7, 8, 9]])
    assert response_mask(ids, [2]).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1] * 5]


def test_prompt_batches_cycle_every_prompt_once_per_epoch() -> None:
    seen = prompt_batches(10, 5, seed=3, step=0) + prompt_batches(10, 5, seed=3, step=1)
    assert sorted(seen) == list(range(10))
    assert prompt_batches(10, 5, seed=3, step=2) != seen[:5]  # a new order each epoch


# -- the recipe end to end ------------------------------------------------------------------


def _config(model_dir: Path, data: Path, **ppo: Any) -> PPOConfig:
    return PPOConfig.model_validate(
        {
            "method": "ppo",
            "seed": 0,
            "model": {"name_or_path": str(model_dir), "dtype": "float32", "device": "cpu"},
            "lora": TINY_LORA,
            "data": {"prompts": {"path": str(data)}},
            "scorer": {"kind": "annotator", "annotator": "longest"},
            "generation": {"max_new_tokens": 6, "temperature": 1.0},
            "ppo": {"learning_rate": 5e-3, "kl_coef": 0.05, "kl_bound": 20.0, **ppo},
            "save_steps": 2,
        }
    )


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    rows = [{"instruction": f"Write item number {i}.", "output": REFERENCE} for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _metrics(out_dir: Path) -> list[dict[str, Any]]:
    lines = (out_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_ppo_raises_mean_reward_while_kl_stays_under_its_bound(
    tiny_model_dir: Path, prompts_file: Path, tmp_path: Path
) -> None:
    from simfarm.training.run import run_recipe

    config = _config(tiny_model_dir, prompts_file, steps=12, batch_size=32, mini_batch_size=8)
    result = run_recipe(config, tmp_path / "run")
    steps = _metrics(tmp_path / "run")
    assert [r["step"] for r in steps] == list(range(1, 13))
    first = sum(r["mean_score"] for r in steps[:3]) / 3
    last = sum(r["mean_score"] for r in steps[-3:]) / 3
    assert last > first + 0.4, (first, last)
    assert all(r["kl"] <= config.ppo.kl_bound for r in steps)
    assert result.final_metrics["kl_within_bound_all_steps"] == 1.0
    assert max(r["kl"] for r in steps) > 0.5  # the policy did move away from the reference
    for key in ("policy_loss", "value_loss", "clip_fraction", "entropy", "tokens_per_s"):
        assert key in steps[-1]
    final = result.checkpoint
    assert (final / "adapter_config.json").is_file() and (final / "value_head.pt").is_file()


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint_and_repeats_the_same_steps(
    tiny_model_dir: Path, prompts_file: Path, tmp_path: Path
) -> None:
    """An uninterrupted run vs one that lost everything after its step-2 checkpoint: the
    resumed steps must repeat exactly (value head, optimiser state, KL controller, data order
    and sampling seeds all restored), which a restart from scratch or a lost optimiser
    state would not."""
    from simfarm.training.run import run_recipe

    config = _config(
        tiny_model_dir, prompts_file, steps=4, batch_size=4, mini_batch_size=2, adaptive_kl=True
    )
    whole = tmp_path / "whole"
    run_recipe(config, whole)
    killed = tmp_path / "killed"
    shutil.copytree(whole, killed)
    # What a kill -9 right after step 3's metrics line leaves behind.
    for leftover in ("result.json", "checkpoint", "checkpoints/checkpoint-4"):
        path = killed / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    lines = (killed / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    (killed / "metrics.jsonl").write_text("\n".join(lines[:3]) + "\n", encoding="utf-8")
    assert latest_checkpoint(killed / "checkpoints") == killed / "checkpoints" / "checkpoint-2"

    result = run_recipe(config, killed)
    assert result.resumed
    resumed, original = _metrics(killed), _metrics(whole)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for key in ("mean_score", "kl", "kl_coef", "policy_loss", "value_loss"):
        assert [r[key] for r in resumed[2:]] == pytest.approx(
            [r[key] for r in original[2:]], rel=1e-4, abs=1e-6
        ), key


@pytest.mark.slow
def test_two_fresh_runs_of_one_config_repeat_each_other_whatever_the_global_rng(
    tiny_model_dir: Path, prompts_file: Path, tmp_path: Path
) -> None:
    """The recipe's seed alone decides a run: a fresh LoRA adapter is initialised from torch's
    global generator, so the recipe must seed it before the policy loads. Unseeded, the first
    rollout agrees (B is zero) and every update after it differs."""
    import torch

    from simfarm.training.run import run_recipe

    config = _config(tiny_model_dir, prompts_file, steps=2, batch_size=4, mini_batch_size=2)
    runs = []
    for draw, name in ((1, "first"), (2, "second")):
        torch.manual_seed(draw)  # whatever ran before the recipe in this process
        torch.rand(draw)
        run_recipe(config, tmp_path / name)
        runs.append(_metrics(tmp_path / name))
    for key in ("mean_score", "kl", "policy_loss", "value_loss"):
        assert [r[key] for r in runs[0]] == [r[key] for r in runs[1]], key
