"""The ``distilled_judge`` recipe's hygiene, through the real ``simfarm train``: a recipe that
sets ``lora`` (which this recipe does not have) is refused before anything loads; a run killed
after its first held-out fold resumes from its saved folds to the figures of an uninterrupted
run; other data under the same folder is refused; and its manifest holds no absolute path of
the machine that trained it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from simfarm.cli import app
from simfarm.training.config import load_recipe_config
from simfarm.training.manifest import write_manifest
from tests.conftest import REPO_ROOT, SHARED_DATA

GPT4 = SHARED_DATA / "alpaca_eval" / "annotations_alpaca_eval_gpt4"
needs_gpt4 = pytest.mark.skipif(not GPT4.is_dir(), reason=f"no GPT-4 annotations in {GPT4}")
SYSTEMS = ("alpaca-7b", "claude-2", "cohere", "gpt4")


def _recipe(tmp_path: Path, **fields: Any) -> Path:
    """``tmp_path/recipes/judge.yaml`` reading ``tmp_path/data`` (as ``../data``)."""
    recipe = tmp_path / "recipes" / "judge.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    body = {"method": "distilled_judge", "data": {"annotations": "../data"}, **fields}
    recipe.write_text(yaml.safe_dump(body))
    return recipe


def _tiny_data(tmp_path: Path, pairs: int = 40) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for system in SYSTEMS:
        records = json.loads((GPT4 / f"{system}.json").read_text(encoding="utf-8"))[:pairs]
        (folder / f"{system}.json").write_text(json.dumps(records))
    return folder


def test_a_recipe_that_sets_lora_is_refused_naming_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "s.json").write_text("[]")
    recipe = _recipe(tmp_path, lora={"r": 4})
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(recipe), "--out", str(run)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert f"{recipe}: lora: the distilled judge is a linear head" in said
    assert not run.exists(), "refused before anything was written"
    # The same through an override, and for a lora block that only disables it.
    recipe = _recipe(tmp_path)
    for override in ("lora.r=8", "lora.enabled=false"):
        args = ["train", str(recipe), "--out", str(run), "--set", override]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert f"{recipe}: lora: the distilled judge" in " ".join(result.output.split())
        assert not run.exists()
    # Without it the config loads, and its manifest claims no LoRA settings.
    written = write_manifest(tmp_path, load_recipe_config(recipe), {})
    config = json.loads(written.read_text())["config"]
    assert "lora" not in config
    assert config["data"]["annotations"] == ["../data"], "as the recipe gives it"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def _heldout_lines(run: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["stage"] == "heldout"]


@needs_gpt4
@pytest.mark.slow
def test_a_killed_run_resumes_from_its_finished_folds(tmp_path: Path) -> None:
    """4 systems x 40 real GPT-4 verdicts, 4 folds; C large enough that each fold's fit takes
    a second or so, so the kill lands between folds. Run whole once; run again in another
    folder, kill -9 once the first fold's line is in metrics.jsonl, run the same command
    again: the saved folds are not refitted (same bytes, same mtime), no fold is logged twice,
    and result.json's figures are the uninterrupted run's."""
    _tiny_data(tmp_path)
    alpaca = SHARED_DATA / "alpaca_eval"
    board = {  # each fold also saves its predictions on these systems' board pairs
        "boards": [
            {"name": "ae2", "path": str(alpaca / "leaderboard_weighted_alpaca_eval_gpt4_turbo.csv")}
        ],
        "reference": str(alpaca / "model_outputs" / "gpt4_1106_preview.json"),
        "pair_outputs": "../data",
    }
    recipe = _recipe(
        tmp_path,
        data={"annotations": "../data", "test_leaderboard": board},
        C=1000.0,
        max_iter=5000,
        heldout={"folds": 4},
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "simfarm", "train", str(recipe), "--out", str(out)]

    def finish(out: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command(out), env=env, cwd=tmp_path, capture_output=True, text=True)

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = finish(whole)
    assert done.returncode == 0, done.stderr

    first = subprocess.Popen(
        command(killed), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    metrics = killed / "metrics.jsonl"
    while not (metrics.is_file() and metrics.read_text().strip()):
        assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
        assert time.monotonic() < deadline, "no fold finished"
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (killed / "result.json").exists(), "the run finished before it was killed"
    saved = {
        path.name: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted((killed / "folds").glob("fold-*.npz"))
    }
    assert "fold-0.npz" in saved and len(saved) < 4, sorted(saved)

    resumed = finish(killed)
    assert resumed.returncode == 0, resumed.stderr
    for name, (content, mtime) in saved.items():
        path = killed / "folds" / name
        assert (path.read_bytes(), path.stat().st_mtime_ns) == (content, mtime), name
    lines = _heldout_lines(killed)
    assert [line["step"] for line in lines] == [0, 1, 2, 3], "each fold logged once"
    assert lines == _heldout_lines(whole)
    result = json.loads((killed / "result.json").read_text())
    expected = json.loads((whole / "result.json").read_text())
    assert result["resumed"] is True and expected["resumed"] is False
    timing = ("train_seconds",)
    figures = {k: v for k, v in result["final_metrics"].items() if k not in timing}
    assert figures == {k: v for k, v in expected["final_metrics"].items() if k not in timing}
    assert figures["test_leaderboard_ae2_n_systems"] == len(SYSTEMS)
    assert (killed / "head.npz").read_bytes() == (whole / "head.npz").read_bytes()
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["attempts"] == [{"heldout_folds_reused": len(saved), "of": 4}]
    assert manifest["run_digest"] == json.loads((whole / "manifest.json").read_text())["run_digest"]

    # No absolute path of this machine: inputs relative to the recipe file, beside their
    # digests; the command relative to where it ran.
    assert manifest["config"]["data"]["annotations"] == ["../data"]
    files = manifest["data"]["annotations"]["files"]
    assert [f["path"] for f in files] == [f"../data/{s}.json" for s in SYSTEMS]
    assert all(len(f["sha256"]) == 64 for f in files)
    assert manifest["command"] == "__main__.py train recipes/judge.yaml --out killed"
    for text in _strings(manifest):
        assert str(tmp_path) not in text and not os.path.isabs(text), text

    # A finished run returns at once, unchanged.
    again = finish(killed)
    assert again.returncode == 0 and "holds a finished run" in " ".join(again.stderr.split())
    assert json.loads((killed / "result.json").read_text()) == result

    # Other data under the same config: the saved folds are refused, not mixed in.
    for name in ("result.json", "head.npz"):
        (killed / name).unlink()
    changed = tmp_path / "data" / "gpt4.json"
    changed.write_text(json.dumps(json.loads(changed.read_text())[:-1]))
    refused = finish(killed)
    assert refused.returncode == 2, refused.stderr
    said = " ".join(refused.stderr.split())
    assert "fold-0.npz: held-out predictions of other data or features" in said
    assert not (killed / "head.npz").exists()


@needs_gpt4
@pytest.mark.parametrize(
    ("head", "recipe"),
    [
        ("embedded_distilled", "distilled_judge"),
        ("embedded_distilled_alpaca_eval2", "distilled_judge_alpaca_eval2"),
    ],
)
def test_shipped_manifests_record_portable_paths(head: str, recipe: str) -> None:
    """The shipped manifests hold what the recipe writes today: the config with its input
    paths as the recipe gives them (relative to it) and no lora, the same config digest on
    any machine, and each data file relative to the recipe beside its digest."""
    from importlib import resources

    from simfarm.training.distilled_folds import run_digest
    from simfarm.training.manifest import config_digest

    shipped = resources.files("simfarm.annotation.distilled_heads") / f"{head}.json"
    manifest = json.loads(Path(str(shipped)).read_text())
    config = load_recipe_config(REPO_ROOT / "recipes" / f"{recipe}.yaml")
    assert manifest["config"] == config.manifest_config()
    assert manifest["config_digest"] == config_digest(config)
    data = manifest["data"]["annotations"]
    board = manifest["data"]["test_leaderboard"]["sha256"]
    assert manifest["run_digest"] == run_digest(config_digest(config), f"{data['sha256']}+{board}")
    for entry in data["files"]:
        assert entry["path"].startswith("../../shared/data/alpaca_eval/")
        assert len(entry["sha256"]) == 64
    for text in _strings(manifest):
        assert not os.path.isabs(text) and "/work/" not in text, text
