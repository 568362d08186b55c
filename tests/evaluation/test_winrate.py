"""alpaca_eval's encoding rules, case by case (the shared-data replay covers the common path)."""

from __future__ import annotations

import math

import pytest

from simfarm.evaluation.winrate import compute_winrate, discretize


def test_draws_failures_and_out_of_range() -> None:
    # 0 is a legacy draw; None and NaN are failed; 3.0 is not a preference: dropped.
    m = compute_winrate([2.0, 1.0, 1.5, 0.0, None, math.nan, 3.0, 1.75])
    assert m.n_total == 5
    assert m.n_draws == 2
    assert (m.n_wins, m.n_wins_base) == (2, 1)
    assert m.win_rate == pytest.approx(100 * (1 + 0 + 0.5 + 0.5 + 0.75) / 5)
    # discrete: 1.75 rounds to a win
    assert m.discrete_win_rate == pytest.approx(100 * (1 + 0 + 0.5 + 0.5 + 1) / 5)


def test_standard_error_is_sample_sem() -> None:
    m = compute_winrate([1.0, 2.0, 2.0, 1.5])
    values = [0.0, 1.0, 1.0, 0.5]
    mean = sum(values) / 4
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
    assert m.standard_error == pytest.approx(100 * sd / 2)


def test_single_and_empty() -> None:
    assert math.isnan(compute_winrate([2.0]).standard_error)
    empty = compute_winrate([None])
    assert empty.n_total == 0 and math.isnan(empty.win_rate)


def test_discretize() -> None:
    assert [discretize(p) for p in (1.0, 1.49, 1.5, 1.51, 2.0, 0.0)] == [1, 1, 1.5, 2, 2, 1.5]
