"""The whole loop on a tiny model, through the real command in subprocesses: two runs with
the same seed give the same leaderboard, and a run killed with SIGKILL during training
resumes without redoing finished stages and ends with the same leaderboard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from simfarm.experiment import read_stage_log
from tests.experiment.conftest import experiment_dict, write_yaml

VOLATILE = ["time_per_1000"]
"""Leaderboard columns that measure this machine, not the methods."""


def _command(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "simfarm", "run", str(config), "--out", str(out), "--quiet"]


def _board(out: Path) -> pd.DataFrame:
    frame = pd.read_csv(out / "evaluation" / "leaderboard.csv", index_col=0)
    return frame.drop(columns=VOLATILE).sort_index()


def _events(out: Path) -> list[tuple[str, str]]:
    return [(e["stage"], e["event"]) for e in read_stage_log(out)]


def _kill_once_training_started(config: Path, out: Path, timeout: float = 300) -> None:
    """Start the run, SIGKILL it (and its process group) once DPO's training has saved its
    first complete intermediate checkpoint (so the rerun resumes mid-training)."""
    process = subprocess.Popen(
        _command(config, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            started = any(s == "train.dpo" and e == "start" for s, e in _events(out))
            checkpoints = out / "methods" / "dpo" / "checkpoints"
            if started and list(checkpoints.glob("checkpoint-*/trainer_state.json")):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                return
            if process.poll() is not None:
                stderr = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"run ended (rc={process.returncode}) before training: {stderr}")
            time.sleep(0.02)
        pytest.fail("training never started")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
def test_kill_during_training_then_rerun_matches_an_uninterrupted_run(
    tmp_path: Path, tiny_model: Path, tiny_setup: Any
) -> None:
    data, recipes = tiny_setup
    config = write_yaml(tmp_path / "exp.yaml", experiment_dict(tiny_model, data, recipes))

    whole = tmp_path / "whole"
    done = subprocess.run(_command(config, whole), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    board = _board(whole)
    assert set(board.index) == {"sft", "dpo"}
    assert (board["avg_length"] > 0).all()
    sft_outputs = json.loads((whole / "methods" / "sft" / "eval_outputs.json").read_text())
    dpo_outputs = json.loads((whole / "methods" / "dpo" / "eval_outputs.json").read_text())
    assert [o["output"] for o in sft_outputs] != [o["output"] for o in dpo_outputs], (
        "DPO changed the policy (else resuming it could not be told from not training it)"
    )
    assert board.loc["sft", "win_rate"] == 50.0, "the SFT baseline against itself"
    assert board["length_controlled_winrate"].notna().all()
    manifest = json.loads((whole / "manifest.json").read_text())
    assert {"packages", "seeds", "data", "annotators", "recipes", "stages"} <= set(manifest)
    assert manifest["seeds"]["experiment"] == 7 and manifest["seeds"]["dpo"] == 7
    assert manifest["annotators"]["feedback"]["label_noise"] == 0.1
    assert manifest["packages"]["torch"]
    report = (whole / "report.html").read_text()
    assert "Training loss" in report and "data:image/png;base64," in report

    killed = tmp_path / "killed"
    _kill_once_training_started(config, killed)
    before = _events(killed)
    finished_before = {s for s, e in before if e == "done"}
    assert {"sft", "feedback.sample", "feedback.annotate"} <= finished_before
    assert not (killed / "evaluation" / "leaderboard.csv").exists()
    assert not (killed / "methods" / "dpo" / "result.json").exists(), "killed mid-training"

    rerun = subprocess.run(_command(config, killed), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = _events(killed)[len(before) :]
    for stage in finished_before:
        assert (stage, "skip") in after and (stage, "start") not in after, stage
    assert ("train.dpo", "start") in after
    assert json.loads((killed / "methods" / "dpo" / "result.json").read_text())["resumed"]
    pd.testing.assert_frame_equal(_board(killed), board)
    # stronger than the board: the resumed DPO answers exactly as the uninterrupted one
    outputs = "methods/dpo/eval_outputs.json"
    assert (killed / outputs).read_text() == (whole / outputs).read_text()


class _Recorder:
    """An ExperimentProgress that keeps what it was told."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.updates: list[tuple[str, str, int, int]] = []
        self.finished: list[str] = []

    def stage_started(self, name: str) -> None:
        self.started.append(name)

    def stage_progress(self, name: str, description: str, done: int, total: int) -> None:
        self.updates.append((name, description, done, total))

    def stage_finished(self, record: Any) -> None:
        self.finished.append(record.name)


@pytest.mark.slow
def test_best_of_n_and_ppo_join_the_board_with_their_curves(
    tmp_path: Path, tiny_model: Path, tiny_setup: Any
) -> None:
    from simfarm.experiment import load_experiment_config, run_experiment

    data, recipes = tiny_setup
    methods = [
        {"method": "sft"},
        {"method": "best_of_n", "recipe": str(recipes["best_of_n"])},
        {"method": "ppo", "recipe": str(recipes["ppo"])},
    ]
    path = write_yaml(tmp_path / "exp.yaml", experiment_dict(tiny_model, data, recipes, methods))
    progress = _Recorder()
    result = run_experiment(load_experiment_config(path), tmp_path / "run", progress=progress)
    board = _board(tmp_path / "run")
    assert set(board.index) == {"sft", "best_of_n", "ppo"}
    assert progress.started == progress.finished
    assert {"sft", "train.best_of_n", "train.ppo", "evaluate"} <= set(progress.started)
    assert any(name == "train.ppo" and total > 0 for name, _, _, total in progress.updates)
    # best-of-n's answers are its tournament picks, judged by the feedback persona (noisy copy)
    picks = [
        json.loads(line)
        for line in (tmp_path / "run" / "methods" / "best_of_n" / "best_of_n.jsonl")
        .read_text()
        .splitlines()
    ]
    answers = json.loads(
        (tmp_path / "run" / "methods" / "best_of_n" / "eval_outputs.json").read_text()
    )
    assert [a["output"] for a in answers] == [p["output"] for p in picks]
    recipe = json.loads((tmp_path / "run" / "manifest.json").read_text())["recipes"]
    scorer = recipe["ppo"]["effective_config"]["scorer"]
    assert scorer["annotator"].endswith("annotators/longest.yaml")
    assert recipe["best_of_n"]["effective_config"]["selection"] == "tournament"
    # The judge calls made inside best-of-n's tournament and PPO's rewards are the stages' own.
    stages = {record.name: record for record in result.stages}
    for name in ("train.best_of_n", "train.ppo"):
        usage = stages[name].details["judge_usage"]
        assert usage["annotations"] > 0, name
        assert stages[name].cost.requests == usage["requests"], name
        assert stages[name].cost.cache_hits == usage["cache_hits"], name
    html = result.report_path.read_text()
    for title in ("PPO reward", "PPO KL to the reference", "Training loss"):
        assert f"<figcaption>{title}</figcaption>" in html, title
