"""Head-to-head win-rate metrics, computed exactly as alpaca_eval computes them.

Preferences use alpaca_eval's encoding: 1 = output_1 (the reference) wins, 2 = output_2 (the
model) wins, 1.5 = draw, anything in between is a probability-weighted verdict; ``0`` is the
legacy encoding of a draw. Replaying alpaca_eval's own ``annotations.json`` through
:func:`compute_winrate` reproduces its leaderboard columns to float precision, because each
rule below mirrors ``alpaca_eval.metrics.helpers.describe_head2head``:

* ``n_draws`` counts preferences equal to 1.5 or 0;
* preferences that are missing (a failed annotation), NaN or outside [1, 2] are dropped
  before anything else is counted (``n_total`` counts what remains);
* ``win_rate`` is the mean of ``preference - 1`` in percent, ``standard_error`` the sample
  standard error of that mean (ddof = 1) in percent;
* ``n_wins`` / ``n_wins_base`` count ``preference - 1`` above / below 0.5;
* ``discrete_win_rate`` first rounds each preference to 1 or 2 (1.5 stays a draw, worth
  one half), then averages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from simfarm.types import Record


class WinRateMetrics(Record):
    """alpaca_eval's head-to-head columns for one model against the reference."""

    win_rate: float
    """Mean of ``preference - 1``, in percent; draws count one half."""
    standard_error: float
    """Sample standard error of ``win_rate`` (ddof = 1), in percent; NaN below 2 samples."""
    n_wins: int
    n_wins_base: int
    n_draws: int
    n_total: int
    """Valid (non-failed) preferences."""
    discrete_win_rate: float
    """Win rate after rounding each preference to a win, a loss or a draw."""


def _as_array(preferences: Sequence[float | None]) -> np.ndarray:
    return np.array([math.nan if p is None else float(p) for p in preferences], dtype=float)


def compute_winrate(preferences: Sequence[float | None]) -> WinRateMetrics:
    """Win-rate metrics of ``preferences`` (None = failed annotation, dropped)."""
    raw = _as_array(preferences)
    n_draws = int(np.sum((raw == 1.5) | (raw == 0.0)))
    values = np.where(raw == 0.0, 1.5, raw)
    valid = values[(values >= 1.0) & (values <= 2.0)] - 1.0  # NaN compares False: dropped
    n_total = int(valid.size)
    win_rate = float(valid.mean() * 100) if n_total else math.nan
    standard_error = (
        float(valid.std(ddof=1) / math.sqrt(n_total) * 100) if n_total > 1 else math.nan
    )
    return WinRateMetrics(
        win_rate=win_rate,
        standard_error=standard_error,
        n_wins=int(np.sum(valid > 0.5)),
        n_wins_base=int(np.sum(valid < 0.5)),
        n_draws=n_draws,
        n_total=n_total,
        discrete_win_rate=_discrete_win_rate(raw),
    )


def discretize(preference: float) -> float:
    """1.0, 1.5 or 2.0: the verdict a continuous preference rounds to (1.5 stays a draw)."""
    if preference == 1.5 or preference == 0.0:
        return 1.5
    return 2.0 if preference > 1.5 else 1.0


def _discrete_win_rate(raw: np.ndarray) -> float:
    # alpaca_eval's ZeroOneScoringRule, step by step: 1.5 becomes 0, every value is rounded
    # (half to even, as pandas does), a 0 is then a draw (1.5), and whatever falls outside
    # [1, 2] is dropped.
    rounded = np.round(np.where(raw == 1.5, 0.0, raw))
    rounded = np.where(rounded == 0.0, 1.5, rounded)
    valid = rounded[(rounded >= 1.0) & (rounded <= 2.0)] - 1.0
    return float(valid.mean() * 100) if valid.size else math.nan
