"""The main job, as the README runs it: `simfarm quickstart`, offline, on the embedded model.

The full run is slow (minutes: it trains SFT, DPO and PPO on a 270M model); the fast tests
check what it is made of: the bundled experiment validates, and the judge is the offline
persona of best measured human agreement.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from simfarm.cli.app import app
from simfarm.cli.quickstart import quickstart_experiment
from simfarm.experiment import best_offline_judge, load_experiment_config, read_stage_log


def test_bundled_quickstart_experiment_is_valid() -> None:
    config = load_experiment_config(quickstart_experiment())
    methods = {m.method for m in config.methods}
    assert {"sft", "best_of_n", "dpo", "ppo"} <= methods
    assert config.policy.name_or_path == "embedded"
    assert config.feedback.label_noise == 0.25
    # Run with `simfarm run`, the file judges as `simfarm quickstart` does.
    best = best_offline_judge().persona
    assert config.feedback.annotator == config.evaluation.annotator == best


def test_judge_is_the_best_measured_offline_judge_not_a_length_baseline() -> None:
    """#18: a distilled judge that beats embedded_gemma is the offline default; `longest`
    measures higher on PandaLM but is the length baseline judges are measured against, so it
    is listed with its figure and never chosen."""
    choice = best_offline_judge()
    agreements = dict(choice.alternatives)
    assert choice.persona == "embedded_distilled" and choice.agreement == 0.668
    assert agreements["embedded_gemma"] == 0.564 and agreements["longest"] == 0.674
    assert agreements["embedded_gemma"] < choice.agreement < agreements["longest"]
    assert choice.baselines == {"longest"}
    note = choice.note()
    assert "66.8%" in note and "`longest` 67.4% (length baseline, not a judge)" in note


def test_a_length_baseline_is_never_chosen_however_well_it_measures(tmp_path: Path) -> None:
    (tmp_path / "longest.yaml").write_text(
        "rule: longest\nmeasured_agreement: {human_set: x, n: 10, agreement: 0.99}\n"
    )
    (tmp_path / "contrarian.yaml").write_text(
        "rule: shortest\nmeasured_agreement: {human_set: x, n: 10, agreement: 0.95}\n"
    )
    choice = best_offline_judge([tmp_path])
    assert choice.persona == "embedded_distilled"
    assert choice.alternatives[:2] == [("longest", 0.99), ("contrarian", 0.95)]
    assert choice.baselines == {"longest", "contrarian"}


def test_missing_reference_outputs_fail_before_anything_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["quickstart", "--out", str(tmp_path / "run"), "--outputs", "nope.json"]
    )
    assert result.exit_code == 2
    assert "--outputs: file not found: nope.json" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.timeout(3600)  # it trains three methods on a 270M model: minutes, more on a busy CPU
def test_quickstart_trains_and_compares_offline(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["quickstart", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    board = pd.read_csv(out / "evaluation" / "leaderboard.csv", index_col=0)
    assert {"sft", "best_of_n", "dpo", "ppo"} <= set(board.index)
    assert board[["win_rate", "standard_error", "length_controlled_winrate"]].notna().all().all()
    assert "judge quality" in result.output and "0.668" in result.output
    assert "stage timings" in result.output and "report.html" in result.output
    assert (out / "report.html").stat().st_size > 10_000
    # A second run reuses every stage.
    again = CliRunner().invoke(app, ["quickstart", "--out", str(out), "--quiet"])
    assert again.exit_code == 0, again.output
    events = read_stage_log(out)
    last_run = events[-len({e["stage"] for e in events}) :]
    assert all(e["event"] == "skip" for e in last_run), last_run
