"""Ranking fidelity: does a simulated leaderboard order systems the way humans do?

Spearman and Kendall correlations between a simulated score per system (a leaderboard
column, e.g. ``length_controlled_winrate``) and a human-derived one (e.g. Chatbot Arena Elo),
over the systems both name, with percentile bootstrap confidence intervals: systems are
resampled with replacement (a resample with fewer than three distinct systems, or a constant
column, is redrawn), so the interval says how much the correlation depends on which systems
happen to be on the board.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydantic import Field

from simfarm.errors import ConfigError
from simfarm.types import Record

DEFAULT_BOOTSTRAP = 1000
MIN_SYSTEMS_FOR_CI = 5
"""Below this many systems a bootstrap over systems only reshuffles the same few: the
interval is reported, with a note that it means nothing."""


class CorrelationResult(Record):
    simulated_label: str
    human_label: str
    systems: list[str]
    simulated: list[float]
    human: list[float]
    spearman: float
    kendall: float
    pearson: float
    spearman_ci: tuple[float, float]
    kendall_ci: tuple[float, float]
    confidence: float
    n_bootstrap: int
    seed: int
    unmatched_simulated: list[str]
    """Systems of the simulated board with no human score (left out)."""
    notes: list[str] = Field(default_factory=list)
    """What makes these numbers weak (too few systems for a meaningful interval)."""


def _spearman_kendall(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    return float(stats.spearmanr(x, y).statistic), float(stats.kendalltau(x, y).statistic)


def rank_correlation(
    simulated: Mapping[str, float],
    human: Mapping[str, float],
    *,
    simulated_label: str = "simulated",
    human_label: str = "human",
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    confidence: float = 0.95,
    seed: int = 0,
) -> CorrelationResult:
    """Correlations over the systems in both mappings (NaN scores are left out)."""
    systems = sorted(
        s
        for s in simulated
        if s in human and not math.isnan(simulated[s]) and not math.isnan(human[s])
    )
    if len(systems) < 3:
        raise ConfigError(
            f"only {len(systems)} system(s) have both a simulated and a human score "
            f"({systems}); a rank correlation needs at least 3"
        )
    x = np.array([simulated[s] for s in systems], dtype=float)
    y = np.array([human[s] for s in systems], dtype=float)
    spearman, kendall = _spearman_kendall(x, y)
    pearson = float(np.corrcoef(x, y)[0, 1])
    rng = np.random.default_rng(seed)
    boot_s: list[float] = []
    boot_k: list[float] = []
    attempts = 0
    while len(boot_s) < n_bootstrap and attempts < 20 * n_bootstrap:
        attempts += 1
        idx = rng.integers(0, len(systems), len(systems))
        if len(set(idx.tolist())) < 3 or np.ptp(x[idx]) == 0 or np.ptp(y[idx]) == 0:
            continue
        s, k = _spearman_kendall(x[idx], y[idx])
        if not (math.isnan(s) or math.isnan(k)):
            boot_s.append(s)
            boot_k.append(k)
    alpha = (1 - confidence) / 2 * 100

    def interval(values: list[float]) -> tuple[float, float]:
        if not values:
            return (math.nan, math.nan)
        low, high = np.percentile(values, [alpha, 100 - alpha])
        return (float(low), float(high))

    return CorrelationResult(
        simulated_label=simulated_label,
        human_label=human_label,
        systems=systems,
        simulated=x.tolist(),
        human=y.tolist(),
        spearman=spearman,
        kendall=kendall,
        pearson=pearson,
        spearman_ci=interval(boot_s),
        kendall_ci=interval(boot_k),
        confidence=confidence,
        n_bootstrap=len(boot_s),
        seed=seed,
        unmatched_simulated=sorted(set(simulated) - set(human)),
        notes=_notes(len(systems)),
    )


def _notes(n_systems: int) -> list[str]:
    if n_systems >= MIN_SYSTEMS_FOR_CI:
        return []
    return [
        f"only {n_systems} systems: the bootstrap resamples the same few, so the confidence "
        f"intervals are meaningless (use at least {MIN_SYSTEMS_FOR_CI}, better 10 or more)"
    ]


def _normalise(name: str) -> str:
    return re.sub(r"\s+", " ", name).strip().lower()


def pick_column(columns: list[str], wanted: str | None, default_contains: str, path: Path) -> str:
    """A column by name (whitespace and case insensitive: ``Arena Elo [Feb 2, 2024]`` finds
    the CSV's two-line header), or the first one containing ``default_contains``."""
    if wanted is not None:
        for column in columns:
            if _normalise(column) == _normalise(wanted):
                return column
        raise ConfigError(f"{path}: no column {wanted!r}; columns: {columns}")
    for column in columns:
        if _normalise(default_contains) in _normalise(column):
            return column
    raise ConfigError(f"{path}: no column containing {default_contains!r}; columns: {columns}")


def load_scores(
    path: Path, column: str | None = None, default_contains: str = "win_rate"
) -> tuple[str, dict[str, float]]:
    """(column, {system: score}) from a CSV whose first column names the systems. A system
    whose cell is empty is left out; text where a number belongs is refused, naming the row
    (a silently dropped system would change the correlation without a word)."""
    chosen, scores, _ = read_score_column(Path(path), column, default_contains)
    return chosen, scores


def read_score_column(
    path: Path, column: str | None, default_contains: str
) -> tuple[str, dict[str, float], list[str]]:
    """(column, {system: score}, systems whose cell is empty) from a CSV whose first column
    names the systems. Only an empty cell is missing: "n/a" or "-" is text where a number
    belongs, refused with the file, row (counted from 0, after the header), system and
    column. A row without a system (a footer) ranks nothing and is skipped."""
    import pandas as pd

    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, index_col=0, dtype=object, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: {error}") from error
    if frame.shape[1] < 1:
        raise ConfigError(f"{path}: expected a name column and at least one score column")
    chosen = pick_column([str(c) for c in frame.columns], column, default_contains, path)
    scores: dict[str, float] = {}
    empty: list[str] = []
    for row, (name, value) in enumerate(frame[chosen].items()):
        if pd.isna(name) or not str(name).strip():
            continue
        if pd.isna(value) or not str(value).strip():
            empty.append(str(name))
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise ConfigError(
                f"{path}: row {row} ({name}): field {chosen!r} is not a number: {str(value)[:40]!r}"
            )
        scores[str(name)] = number
    return chosen, scores, empty
