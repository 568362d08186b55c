"""`simfarm train RECIPE --out DIR [--set key=value]` as users run it (real subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ._recipes import BUNDLED, REPO_ROOT, tiny_model, write_recipe


def _train(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "simfarm", "train", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (["--set", "training.lerning_rate=0.1"], ["training.lerning_rate", "Extra inputs"]),
        (["--set", "method=ppo2"], ["method", "ppo2", "known"]),
        (["--set", "data.train.path=no/such.jsonl"], ["data.train.path", "no/such.jsonl"]),
    ],
)
def test_bad_config_fails_fast_naming_file_and_key(
    tmp_path: Path, edit: list[str], expected: list[str]
) -> None:
    recipe = REPO_ROOT / "recipes" / "sft.yaml"
    done = _train(str(recipe), "--out", str(tmp_path / "run"), *edit)
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.split())
    assert "recipes/sft.yaml" in message
    for part in expected:
        assert part in message
    assert not (tmp_path / "run").exists(), "nothing is written for a bad config"


def test_unknown_field_in_file(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, {"method": "sft", "colour": "red", "data": {}})
    done = _train(str(recipe), "--out", str(tmp_path / "run"))
    assert done.returncode == 2
    assert str(recipe) in done.stderr and "colour" in done.stderr


@pytest.mark.slow
def test_train_runs_summarises_and_refuses_a_changed_config(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    recipe = write_recipe(
        tmp_path,
        {
            "method": "sft",
            "model": tiny_model(tiny_model_dir),
            "data": {
                "train": {"path": str(BUNDLED / "sft.jsonl"), "limit": 16},
                "eval": {"path": str(BUNDLED / "eval.jsonl"), "limit": 8},
            },
            "training": {"max_steps": 2, "batch_size": 4, "save_steps": 1},
        },
    )
    out = tmp_path / "run"
    done = _train(str(recipe), "--out", str(out), "--set", "training.learning_rate=0.01")
    assert done.returncode == 0, done.stderr
    for part in ("wall time", "tokens/s", "eval_loss", "eval_loss_initial", "checkpoint"):
        assert part in done.stdout
    assert str(out / "checkpoint") in done.stdout.replace("\n", "")
    again = _train(str(recipe), "--out", str(out), "--set", "training.learning_rate=0.01")
    assert again.returncode == 0 and "nothing to do" in again.stderr
    changed = _train(str(recipe), "--out", str(out))
    assert changed.returncode == 2 and "different config" in changed.stderr
