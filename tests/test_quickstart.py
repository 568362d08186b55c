"""The main job, as the README runs it: offline, on the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from simfarm.cli import app


@pytest.mark.slow
def test_quickstart_runs_offline_and_states_judge_quality(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "judge quality" in result.output and "0.554" in result.output
    for judge in ("embedded_gemma", "longest"):
        board = pd.read_csv(tmp_path / judge / "leaderboard.csv", index_col=0)
        assert set(board.index) == {"concise", "detailed"}
        assert (tmp_path / judge / "leaderboard.png").stat().st_size > 1000
        lines = (tmp_path / judge / "annotations.jsonl").read_text().splitlines()
        annotations = [json.loads(line) for line in lines]
        assert len(annotations) == 24
        assert all(a["preference"] is not None for a in annotations)
    gemma = [json.loads(x) for x in (tmp_path / "embedded_gemma" / "annotations.jsonl").open()]
    # Both orders were judged, and the verdict came from token probabilities.
    assert all(a["position_consistent"] is not None for a in gemma)
    assert all(0.0 <= a["preference_probability"] <= 1.0 for a in gemma)
    markdown = (tmp_path / "embedded_gemma" / "leaderboard.md").read_text()
    assert "Judge quality" in markdown
    # A second run is served from the cache.
    again = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path), "--quiet"])
    assert "0 model requests" in again.output
