"""Degenerate judges are named beside the leaderboard (issue 13)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from simfarm.datafiles import write_records
from simfarm.evaluation.judge_checks import check_judge
from simfarm.evaluation.leaderboard import build_leaderboard, leaderboard_markdown
from simfarm.types import PairwiseAnnotation


def _annotation(i: int, preference: float, **extra: object) -> PairwiseAnnotation:
    return PairwiseAnnotation(
        instruction=f"instruction {i}",
        output_1=f"reference answer {i}",
        output_2=f"model answer {i} " * (i % 4 + 1),
        generator_1="reference",
        generator_2="model",
        annotator="coin",
        preference=preference,
        **extra,  # type: ignore[arg-type]
    )


def test_a_judge_picking_the_first_slot_in_both_orders_is_flagged() -> None:
    # "A ... A" in both orders: the two verdicts cancel (1.5 each) and never agree.
    anns = [_annotation(i, 1.5, position_consistent=False) for i in range(12)]
    board, _ = build_leaderboard({"model": anns}, length_controlled=False)
    (check,) = board.judge_checks
    assert check.position_consistency == 0.0 and check.n_both_orders == 12
    text = leaderboard_markdown(board)
    assert "position consistency 0/12" in text and "WARNING" in text and "degenerate" in text


def test_narrow_soft_band_is_flagged_and_a_spread_judge_is_not() -> None:
    narrow = [_annotation(i, 1.43 + 0.01 * i) for i in range(12)]
    assert any("barely discriminates" in w for w in check_judge("coin", narrow).warnings)
    spread = [_annotation(i, 1.1 + 0.07 * i) for i in range(12)]
    assert check_judge("coin", spread).warnings == []


def test_slot_share_uses_random_order_and_ignores_fixed_order() -> None:
    # Shown in random order, always the first shown output wins: flagged.
    first = [_annotation(i, 2.0 if i % 2 else 1.0, swapped=bool(i % 2)) for i in range(12)]
    check = check_judge("coin", first)
    assert check.first_slot_share == 1.0
    assert any("shown first" in w for w in check.warnings)
    # Fixed order: a model that wins 11/12 is just a strong model, nothing to flag.
    fixed = [_annotation(i, 2.0 if i else 1.0) for i in range(12)]
    assert check_judge("coin", fixed).first_slot_share is None
    assert check_judge("coin", fixed).warnings == []


def test_evaluate_prints_the_warning_and_writes_it(tmp_path: Path) -> None:
    source = tmp_path / "model.jsonl"
    write_records(source, [_annotation(i, 1.5, position_consistent=False) for i in range(12)])
    out = tmp_path / "board"
    command = [sys.executable, "-m", "simfarm.cli", "evaluate", "--annotations", str(source)]
    done = subprocess.run(
        [*command, "--no-lc", "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "position consistency 0/12" in done.stdout and "degenerate" in done.stdout
    data = json.loads((out / "leaderboard.json").read_text())
    assert data["judge_checks"][0]["warnings"]
