"""PNG figures: a leaderboard (win rate ± SE beside LC ± SE) and a ranking scatter plot.

Drawn with matplotlib's non-interactive Agg backend, so they work on a headless machine and
never open a window from inside a CLI command.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simfarm.evaluation.leaderboard import Leaderboard


def _pyplot():  # -> matplotlib.pyplot, imported lazily (slow import)
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _nan_to_zero(value: float | None) -> float:
    return 0.0 if value is None or math.isnan(value) else value


def plot_leaderboard(leaderboard: Leaderboard, path: Path) -> Path:
    """Horizontal bars per model: win rate and LC win rate, each with its standard error."""
    plt = _pyplot()
    return _save(plt, leaderboard_figure(leaderboard), path)


def leaderboard_figure(leaderboard: Leaderboard) -> Any:  # -> matplotlib Figure
    """The leaderboard figure: the title names the judge, every bar carries its value as
    text (so a 0% bar is still seen, and an LC that could not be computed says ``n/a``),
    and the legend sits below the axes, where it can never cover a bar."""
    plt = _pyplot()
    rows = list(reversed(leaderboard.rows))  # best at the top
    names = [r.generator_2 for r in rows]
    has_lc = any(r.length_controlled_winrate is not None for r in rows)
    height = 0.38 if has_lc else 0.7
    fig, ax = plt.subplots(figsize=(8, 1.9 + 0.45 * len(rows)))
    positions = list(range(len(rows)))
    series: list[tuple[list[float], list[float | None], list[float | None], str, str]] = [
        (
            [p + (height / 2 if has_lc else 0) for p in positions],
            [r.win_rate for r in rows],
            [r.standard_error for r in rows],
            "#7aa6c2",
            "win rate ± SE",
        )
    ]
    if has_lc:
        series.append(
            (
                [p - height / 2 for p in positions],
                [r.length_controlled_winrate for r in rows],
                [r.lc_standard_error for r in rows],
                "#e39b54",
                "length-controlled win rate ± SE",
            )
        )
    for ys, values, errors, color, label in series:
        ax.barh(
            ys,
            [_nan_to_zero(v) for v in values],
            height=height,
            xerr=[_nan_to_zero(e) for e in errors],
            color=color,
            edgecolor=color,
            linewidth=1.0,  # a 0% bar still shows as a line at 0
            capsize=3,
            label=label,
        )
        for y, value, error in zip(ys, values, errors, strict=True):
            missing = value is None or math.isnan(value)
            ax.text(
                _nan_to_zero(value) + _nan_to_zero(error) + 1,
                y,
                "n/a" if missing else f"{value:.1f}",
                va="center",
                fontsize=7,
            )
    ax.set_yticks(positions, names)
    ax.set_xlim(0, 112)
    ax.set_xlabel(f"% preferred over {leaderboard.reference}")
    ax.axvline(50, color="grey", linewidth=0.8, linestyle=":")
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.5 / (1 + 0.45 * len(rows)) - 0.12),
        ncol=2,
        fontsize="small",
        frameon=False,
    )
    judges = ", ".join(sorted({r.annotator for r in rows})) or "?"
    ax.set_title(f"Win rate against {leaderboard.reference} (judge: {judges})", fontsize=10)
    return fig


def plot_scatter(
    names: Sequence[str],
    simulated: Sequence[float],
    human: Sequence[float],
    path: Path,
    *,
    x_label: str,
    y_label: str,
    title: str,
) -> Path:
    """One labelled point per system: simulated score against the human-derived one."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5.5))
    ax.scatter(simulated, human, color="#4c72b0")
    for name, x, y in zip(names, simulated, human, strict=True):
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def _save(plt: Any, fig: Any, path: Path) -> Path:
    """Lay out, write as PNG (creating the folder) and free the figure."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # keeps a legend below the axes
    plt.close(fig)
    return path
