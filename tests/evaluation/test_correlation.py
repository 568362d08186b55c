"""Rank correlations and their bootstrap intervals."""

from __future__ import annotations

from pathlib import Path

import pytest

from simfarm.errors import ConfigError
from simfarm.evaluation.correlation import load_scores, rank_correlation


def test_perfect_and_reversed_rankings() -> None:
    simulated = {f"m{i}": float(i) for i in range(8)}
    same = rank_correlation(simulated, {k: v * 10 + 3 for k, v in simulated.items()})
    assert same.spearman == pytest.approx(1.0) and same.kendall == pytest.approx(1.0)
    assert same.spearman_ci == pytest.approx((1.0, 1.0))
    reverse = rank_correlation(simulated, {k: -v for k, v in simulated.items()})
    assert reverse.spearman == pytest.approx(-1.0)


def test_interval_is_seeded_and_brackets_the_estimate() -> None:
    simulated = {f"m{i}": float(i) for i in range(12)}
    human = {f"m{i}": float((i * 7) % 12) for i in range(12)}
    a = rank_correlation(simulated, human, n_bootstrap=300, seed=1)
    b = rank_correlation(simulated, human, n_bootstrap=300, seed=1)
    assert a.spearman_ci == b.spearman_ci and a.n_bootstrap == 300
    assert a.spearman_ci[0] <= a.spearman <= a.spearman_ci[1]


def test_only_common_systems_count() -> None:
    result = rank_correlation({"a": 1, "b": 2, "c": 3, "d": 4}, {"a": 1, "b": 2, "c": 3})
    assert result.systems == ["a", "b", "c"] and result.unmatched_simulated == ["d"]
    with pytest.raises(ConfigError, match="at least 3"):
        rank_correlation({"a": 1, "b": 2}, {"a": 1, "b": 2})


def test_arena_column_found_despite_two_line_header(shared_data: Path) -> None:
    path = shared_data / "alpaca_eval" / "arena_benchmarks.csv"
    column, scores = load_scores(path, "Arena Elo [Feb 2, 2024]")
    assert column.startswith("Arena Elo") and "Feb" in column
    assert scores["claude-2"] == 1126.0
    default_column, _ = load_scores(path, None, "Arena Elo")
    assert default_column == column


def test_too_few_systems_say_the_interval_means_nothing() -> None:
    four = {f"m{i}": float(i) for i in range(4)}
    few = rank_correlation(four, four, n_bootstrap=200)
    assert any("only 4 systems" in note for note in few.notes)
    eight = {f"m{i}": float(i) for i in range(8)}
    assert rank_correlation(eight, eight, n_bootstrap=200).notes == []


def test_text_in_a_score_column_is_refused_and_an_empty_cell_left_out(tmp_path: Path) -> None:
    """`simfarm correlate` reads a board as the distilled recipe does: a system whose score is
    text would otherwise vanish from the correlation without a word."""
    board = tmp_path / "board.csv"
    board.write_text("name,win_rate\nsys_a,10.5\nsys_b,\nsys_c,-\n")
    with pytest.raises(ConfigError) as text:
        load_scores(board, "win_rate")
    assert f"{board}: row 2 (sys_c): field 'win_rate' is not a number: '-'" in str(text.value)
    board.write_text("name,win_rate\nsys_a,10.5\nsys_b,\n,\n")
    assert load_scores(board, "win_rate") == ("win_rate", {"sys_a": 10.5})
