"""Replaying alpaca_eval's own annotations reproduces its published leaderboard numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from simfarm.evaluation.io import load_annotation_file
from simfarm.evaluation.leaderboard import build_leaderboard

from ._shared import annotation_files, published_rows, replayable_models

MODELS = replayable_models()
FLOAT_COLUMNS = ("win_rate", "standard_error", "discrete_win_rate")
INT_COLUMNS = ("n_wins", "n_wins_base", "n_draws", "n_total")


def test_shared_data_has_models_to_replay(shared_data: Path) -> None:
    # Guards the parametrised test below against silently running zero cases.
    assert len(MODELS) >= 6, f"expected >= 6 replayable models in {shared_data}, got {MODELS}"


@pytest.mark.parametrize("model", MODELS)
def test_replay_reproduces_published_row(model: str) -> None:
    loaded = load_annotation_file(annotation_files()[model])
    assert not loaded.issues
    leaderboard, _ = build_leaderboard({model: loaded.annotations}, length_controlled=False)
    (row,) = leaderboard.rows
    published = published_rows()[model]
    for column in FLOAT_COLUMNS:
        assert getattr(row, column) == pytest.approx(float(published[column]), abs=1e-6), column
    for column in INT_COLUMNS:
        assert getattr(row, column) == int(published[column]), column
    assert row.avg_length == int(published["avg_length"])
    assert row.generator_2 == model
    assert row.reference == "gpt4_1106_preview"
