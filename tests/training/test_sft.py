"""SFT on the tiny model: held-out loss goes down; the run folder holds what it must; a
finished run returns at once; a killed run resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simfarm.training.config import load_recipe_config
from simfarm.training.policy import load_policy
from simfarm.training.run import run_recipe

from ._recipes import BUNDLED, REPO_ROOT, tiny_model, write_recipe

pytestmark = pytest.mark.slow


def _sft_recipe(folder: Path, model_dir: Path, max_steps: int, save_steps: int) -> Path:
    return write_recipe(
        folder,
        {
            "method": "sft",
            "model": tiny_model(model_dir),
            "lora": {"r": 8, "alpha": 16},
            "data": {
                "train": {"path": str(BUNDLED / "sft.jsonl")},
                "eval": {"path": str(BUNDLED / "eval.jsonl"), "limit": 16},
            },
            "training": {
                "learning_rate": 1e-2,
                "max_steps": max_steps,
                "batch_size": 8,
                "max_length": 96,
                "save_steps": save_steps,
            },
        },
    )


def test_sft_lowers_held_out_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    recipe = _sft_recipe(tmp_path, tiny_model_dir, max_steps=8, save_steps=4)
    seen: list[tuple[str, int, int]] = []
    result = run_recipe(recipe, tmp_path / "run", progress=lambda *a: seen.append(a))
    metrics = result.final_metrics
    assert metrics["eval_loss"] < metrics["eval_loss_initial"] - 0.05, metrics
    out = tmp_path / "run"
    steps = [
        r["step"]
        for r in map(json.loads, (out / "metrics.jsonl").open())
        if r["stage"] == "train" and "loss" in r
    ]
    assert steps == list(range(1, 9))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["method"] == "sft" and manifest["seed"] == 0
    assert manifest["packages"]["trl"] and manifest["packages"]["torch"]
    assert len(manifest["data"]["train"]["sha256"]) == 64
    assert (out / "checkpoint" / "adapter_config.json").is_file()
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-4",
        "checkpoint-8",
    ]
    assert ("train", 8, 8) in seen
    assert result.tokens_per_s and result.tokens_per_s > 0
    # The checkpoint loads as a policy; a finished run returns its result at once.
    assert load_policy(load_recipe_config(recipe).model, checkpoint=result.checkpoint).is_peft
    again = run_recipe(recipe, out)
    assert again == result


def test_killed_run_resumes_from_its_last_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    recipe = _sft_recipe(tmp_path, tiny_model_dir, max_steps=30, save_steps=2)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "simfarm", "train", str(recipe), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    first = subprocess.Popen(
        command, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file():
        assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (out / "result.json").exists(), "the run finished before it was killed"
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resumed" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    attempts = manifest["attempts"]
    assert attempts[0]["resumed_from_step"] == 0
    assert attempts[-1]["resumed_from_step"] >= 2, attempts
    train_steps = [
        r["step"]
        for r in map(json.loads, (out / "metrics.jsonl").open())
        if r["stage"] == "train" and "loss" in r
    ]
    assert train_steps == list(range(1, 31)), "every step logged exactly once"
    result = json.loads((out / "result.json").read_text())
    assert result["resumed"] is True
