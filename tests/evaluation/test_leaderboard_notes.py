"""A leaderboard never crashes on, nor hides, what makes its numbers meaningless: LC that
cannot be computed, a judge that follows length alone (issue 13)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

from simfarm.datafiles import write_records
from simfarm.evaluation.leaderboard import build_leaderboard
from simfarm.types import PairwiseAnnotation


def _annotation(
    model: str, i: int, preference: float, len_1: int, len_2: int
) -> PairwiseAnnotation:
    return PairwiseAnnotation(
        instruction=f"instruction {i}",
        output_1="r" * len_1,
        output_2="m" * len_2,
        generator_1="reference",
        generator_2=model,
        annotator="longest",
        preference=preference,
    )


def _longest_judge(model: str, lengths: list[int], n: int = 12) -> list[PairwiseAnnotation]:
    """What the `longest` judge gives: the longer output wins."""
    return [
        _annotation(model, i, 2.0 if lengths[i] > 50 + i else 1.0, 50 + i, lengths[i])
        for i in range(n)
    ]


def test_lc_of_a_model_with_one_verdict_class_is_none_with_a_reason() -> None:
    always_longer = _longest_judge("verbose", [500 + i for i in range(12)])
    mixed = _longest_judge("mixed", [10 if i % 2 else 400 for i in range(12)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no raw Python warning may escape
        board, _ = build_leaderboard({"verbose": always_longer, "mixed": mixed})
    rows = {r.generator_2: r for r in board.rows}
    assert rows["verbose"].length_controlled_winrate is None
    assert rows["verbose"].win_rate == 100.0
    assert rows["mixed"].length_controlled_winrate is not None
    assert any("'verbose' not computable" in note for note in board.notes)
    assert any("judges length alone" in note for note in board.notes)


def test_evaluate_with_lc_on_a_single_all_wins_model_exits_0_with_notes(tmp_path: Path) -> None:
    source = tmp_path / "verbose.jsonl"
    write_records(source, _longest_judge("verbose", [500 + i for i in range(12)]))
    out = tmp_path / "board"
    command = [sys.executable, "-m", "simfarm.cli", "evaluate", "--annotations", str(source)]
    done = subprocess.run(
        [*command, "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr + done.stdout
    assert "WARNING" not in done.stdout  # liblinear's own C-level complaints
    assert "not computable" in done.stdout
    data = json.loads((out / "leaderboard.json").read_text())
    assert data["rows"][0]["length_controlled_winrate"] is None
    assert any("not computable" in note for note in data["notes"])
    assert "not computable" in (out / "leaderboard.md").read_text()
